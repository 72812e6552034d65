# Tokenize a corpus for a model (word pieces aligned to words), then dump every head's attention.


rule tokenize:
    input:
        corpus=corpus_file,
        model=model_inputs,
    output:
        "results/{model}/{corpus}/tokens.parquet",
    log:
        "logs/{model}/{corpus}/tokenize.log",
    benchmark:
        "benchmarks/{model}/{corpus}/tokenize.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        corpus_spec=lambda w: corpus_spec_json(w.corpus),
        max_length=config["attention"]["max_length"],
    shell:
        "headsieve --log {log:q} tokenize --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --corpus {wildcards.corpus:q} --corpus-spec {params.corpus_spec:q} --input {input.corpus:q}"
        " --max-length {params.max_length} --output {output:q}"


rule dump_attention:
    input:
        tokens="results/{model}/{corpus}/tokens.parquet",
        model=model_inputs,
    output:
        directory("results/{model}/{corpus}/attention"),
    log:
        "logs/{model}/{corpus}/dump_attention.log",
    benchmark:
        "benchmarks/{model}/{corpus}/dump_attention.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu_count,
        # speed only: a resource, not a param, so changing it does not rerun the dump
        batch_tokens=config["attention"]["batch_tokens"],
    params:
        model_spec=lambda w: model_spec_json(w.model),
        shard_mb=config["attention"]["shard_mb"],
        device=config["device"],
        # the dump checks that the tokens were cut at this length (provenance)
        max_length=config["attention"]["max_length"],
    shell:
        "headsieve --log {log:q} dump --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --corpus {wildcards.corpus:q} --tokens {input.tokens:q} --output {output:q}"
        " --batch-tokens {resources.batch_tokens} --shard-mb {params.shard_mb} --threads {threads}"
        " --device {params.device:q} --max-length {params.max_length}"
