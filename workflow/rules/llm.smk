# Decoder-only language models (issue 17): the offline model, role scores and tests, pruning and evaluation.


# ---- convert_smollm2 (models.convert_gguf) ----
rule convert_smollm2:
    output:
        directory("resources/models/smollm2-135m"),
    log:
        "logs/convert_smollm2.log",
    benchmark:
        "benchmarks/convert_smollm2.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "python -m headsieve.models.convert_gguf {output:q} > {log:q} 2>&1"


# ---- end convert_smollm2 ----
