# One results document from every report step's summary (every figure generated, none typed).
# Joining text files: it runs where snakemake runs, never as a cluster job.


localrules:
    results_summary,


rule results_summary:
    input:
        summary_parts(),
    output:
        report(
            "results/summary.md",
            caption="../report/results_summary.rst",
            category="Summary",
        ),
    log:
        "logs/results_summary.log",
    benchmark:
        "benchmarks/results_summary.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        title="headsieve: results of this run",
    shell:
        "headsieve --log {log:q} collect-summaries --parts {input:q} --title {params.title:q} --output {output:q}"
