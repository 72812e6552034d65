# Decoder-only language models (issue 17): the offline model (convert_smollm2), causal role scores and their
# tests per query head and key-value group, head masks per seed, the masked model's perplexity, copying loss
# and retrieval accuracy, and the report (evaluations, paired comparisons with random, figures, summary).


# ---- convert_smollm2 (models.convert_gguf) ----
rule convert_smollm2:
    output:
        directory("resources/models/smollm2-135m"),
    log:
        "logs/convert_smollm2.log",
    benchmark:
        "benchmarks/convert_smollm2.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "headsieve --log {log:q} convert-smollm2 --output {output:q}"


# ---- end convert_smollm2 ----


rule llm_role_scores:
    input:
        model=llm_model_inputs,
        text=lambda w: [f for item in llm_text_corpora() for f in item["files"]],
    output:
        "results/llm/{model}/role_scores.parquet",
    log:
        "logs/llm/{model}/role_scores.log",
    benchmark:
        "benchmarks/llm/{model}/role_scores.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu_count,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        text=lambda w: json.dumps(llm_text_corpora(), sort_keys=True),
        inputs=json.dumps(config["llm"]["inputs"], sort_keys=True),
        options=json.dumps(config["llm"]["roles"], sort_keys=True),
        chunk=json.dumps(config["llm"]["chunk"]),
        device=config["device"],
    shell:
        "headsieve --log {log:q} llm-role-scores --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --text {params.text:q} --inputs {params.inputs:q} --options {params.options:q} --chunk {params.chunk:q}"
        " --output {output:q} --threads {threads} --device {params.device:q}"


rule llm_role_tests:
    input:
        "results/llm/{model}/role_scores.parquet",
    output:
        tests="results/llm/{model}/role_tests.parquet",
        kv_tests="results/llm/{model}/kv_group_tests.parquet",
    log:
        "logs/llm/{model}/role_tests.log",
    benchmark:
        "benchmarks/llm/{model}/role_tests.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        tau=json.dumps(config["llm"]["roles"]["tau"]),
        alpha=config["llm"]["roles"]["alpha"],
        correction=config["llm"]["roles"]["correction"],
    shell:
        "headsieve --log {log:q} llm-role-tests --scores {input:q} --tau {params.tau} --alpha {params.alpha}"
        " --correction {params.correction:q} --output {output.tests:q} --kv-output {output.kv_tests:q}"


rule llm_importance:
    input:
        model=llm_model_inputs,
        text=lambda w: [f for item in llm_text_corpora() for f in item["files"]],
    output:
        "results/llm/{model}/importance.parquet",
    log:
        "logs/llm/{model}/importance.log",
    benchmark:
        "benchmarks/llm/{model}/importance.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        text=lambda w: json.dumps(llm_text_corpora(), sort_keys=True),
        inputs=json.dumps(config["llm"]["inputs"], sort_keys=True),
        device=config["device"],
    shell:
        "headsieve --log {log:q} llm-importance --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --text {params.text:q} --inputs {params.inputs:q} --output {output:q} --threads {threads}"
        " --device {params.device:q}"


rule llm_masks:
    input:
        model=llm_model_inputs,
        tests=llm_role_labels,
        importance=llm_importance_input,
    output:
        "results/llm/{model}/seed{seed}/masks.parquet",
    log:
        "logs/llm/{model}/seed{seed}/masks.log",
    benchmark:
        "benchmarks/llm/{model}/seed{seed}/masks.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        tests=lambda w, input: input.tests[0] if input.tests else "",
        importance=lambda w, input: input.importance[0] if input.importance else "",
        strategies=json.dumps(config["llm"]["pruning"]["strategies"]),
        fractions=json.dumps(sorted(config["llm"]["pruning"]["fractions"])),
    shell:
        "headsieve --log {log:q} llm-masks --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --tests={params.tests:q} --importance={params.importance:q} --strategies {params.strategies:q}"
        " --fractions {params.fractions:q}"
        " --seed {wildcards.seed} --output {output:q}"


rule llm_evaluate:
    input:
        model=llm_model_inputs,
        masks="results/llm/{model}/seed{seed}/masks.parquet",
        perplexity=lambda w: [
            f for item in llm_perplexity_corpus() for f in item["files"]
        ],
    output:
        "results/llm/{model}/seed{seed}/evaluations.parquet",
    log:
        "logs/llm/{model}/seed{seed}/evaluate.log",
    benchmark:
        "benchmarks/llm/{model}/seed{seed}/evaluate.tsv"
    priority: 5  # long jobs first: short ones fill the cores at the end (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # one each: on 2 cores, two seeds run side by side
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=gpu_count,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        evaluation=json.dumps(config["llm"]["pruning"]["evaluation"], sort_keys=True),
        perplexity=lambda w: json.dumps(llm_perplexity_corpus(), sort_keys=True),
        max_length=config["llm"]["inputs"]["max_length"],
        device=config["device"],
    shell:
        "headsieve --log {log:q} llm-evaluate --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --masks {input.masks:q} --evaluation {params.evaluation:q} --perplexity {params.perplexity:q}"
        " --max-length {params.max_length} --output {output:q} --threads {threads} --device {params.device:q}"


rule llm_report:
    input:
        tests="results/llm/{model}/role_tests.parquet",
        kv_tests="results/llm/{model}/kv_group_tests.parquet",
        evaluations=lambda w: expand(
            "results/llm/{model}/seed{seed}/evaluations.parquet",
            model=w.model,
            seed=config["llm"]["pruning"]["seeds"],
        ),
    output:
        **{
            f"fig_{name}": report(
                f"results/llm/{{model}}/figures/{name}.png",
                caption=f"../report/llm_{name}.rst",
                category="Decoder-only language models",
                subcategory="{model}",
            )
            for name in LLM_FIGURES
        },
        pdfs=multiext(
            "results/llm/{model}/figures/", *[f"{n}.pdf" for n in LLM_FIGURES]
        ),
        evaluations="results/llm/{model}/evaluations.parquet",
        comparisons="results/llm/{model}/comparisons.parquet",
        summary=report(
            "results/llm/{model}/summary.md",
            caption="../report/llm_summary.rst",
            category="Decoder-only language models",
            subcategory="{model}",
        ),
    log:
        "logs/llm/{model}/report.log",
    benchmark:
        "benchmarks/llm/{model}/report.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        figures=folder_of("fig_role_map"),
        correction=config["llm"]["pruning"]["correction"],
        alpha=config["llm"]["pruning"]["alpha"],
    shell:
        "headsieve --log {log:q} llm-report --model {wildcards.model:q} --tests {input.tests:q}"
        " --kv-tests {input.kv_tests:q} --evaluations {input.evaluations:q} --figures {params.figures:q}"
        " --evaluations-out {output.evaluations:q} --comparisons {output.comparisons:q}"
        " --summary {output.summary:q} --correction {params.correction:q} --alpha {params.alpha}"
