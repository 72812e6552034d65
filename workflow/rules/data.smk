# Data: corpora come from the local mirror (data_dir) or are downloaded here, sha256-checked.


rule fetch_corpus:
    output:
        "resources/corpora/{corpus}/{filename}",
    log:
        "logs/fetch/{corpus}/{filename}.log",
    benchmark:
        "benchmarks/fetch/{corpus}/{filename}.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        url=lambda w: config["corpora"][w.corpus]["url"],
        sha256=lambda w: config["corpora"][w.corpus]["sha256"],
        member=lambda w: config["corpora"][w.corpus].get("member", ""),
    shell:
        "headsieve --log {log:q} fetch --url {params.url:q} --sha256 {params.sha256:q}"
        " --member={params.member:q} --output {output:q}"
