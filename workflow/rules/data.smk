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


rule parse_corpus:
    input:
        parse_source_file,
    output:
        "resources/parsed/{corpus}.conllu",
    log:
        "logs/parse/{corpus}.log",
    benchmark:
        "benchmarks/parse/{corpus}.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        source_spec=lambda w: spec_json(
            "corpora", config["corpora"][w.corpus]["source"]
        ),
        parser=lambda w: config["corpora"][w.corpus]["parser"],
    shell:
        "headsieve --log {log:q} parse --corpus {wildcards.corpus:q} --source-spec {params.source_spec:q}"
        " --input {input:q} --parser {params.parser:q} --output {output:q}"
