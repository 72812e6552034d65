# Pruning: fine-tune on a task, head importance, head masks per strategy and fraction, then both protocols
# (pruning.protocols): finetune_then_prune (heads masked in the fine-tuned model, every mask of a seed and
# fraction in one job) and prune_then_finetune (heads removed from the pre-trained model, which is then
# fine-tuned; every mask of a seed and fraction in one job); compensation, collected tables, report.


rule finetune:
    input:
        train=lambda w: task_file(w.task, "train"),
        eval=lambda w: task_file(w.task, "eval"),
        model=model_inputs,
    output:
        directory("results/{model}/{task}/seed{seed}/finetuned"),
    log:
        "logs/{model}/{task}/seed{seed}/finetune.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/finetune.tsv"
    priority: 10  # long jobs first: short ones fill the cores at the end (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # one each: on 2 cores, two fine-tunings run side by side
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpu_count,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        train_spec=lambda w: task_corpus_json(w.task, "train"),
        eval_spec=lambda w: task_corpus_json(w.task, "eval"),
        task=lambda w: task_json(w.task),
        options=lambda w: finetune_options(w.task),
        device=config["device"],
    shell:
        "headsieve --log {log:q} finetune --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --train-spec {params.train_spec:q} --train {input.train:q} --eval-spec {params.eval_spec:q}"
        " --eval {input.eval:q} --task-options {params.task:q} --options {params.options:q}"
        " --seed {wildcards.seed} --output {output:q} --work {output:q}.work"
        " --threads {threads} --device {params.device:q}"


rule importance:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        train=lambda w: task_file(w.task, "train"),
    output:
        "results/{model}/{task}/seed{seed}/importance.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/importance.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/importance.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
    params:
        train_spec=lambda w: task_corpus_json(w.task, "train"),
        task=lambda w: task_json(w.task),
        examples=config["pruning"]["importance_examples"],
        device=config["device"],
    shell:
        "headsieve --log {log:q} importance --finetuned {input.finetuned:q} --train-spec {params.train_spec:q}"
        " --train {input.train:q} --task-options {params.task:q} --examples {params.examples}"
        " --seed {wildcards.seed} --output {output:q} --threads {threads} --device {params.device:q}"


rule select_masks:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        importance="results/{model}/{task}/seed{seed}/importance.parquet",
        labels=role_labels_input,
    output:
        "results/{model}/{task}/seed{seed}/masks/{fraction}.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/select_masks_{fraction}.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/select_masks_{fraction}.tsv"
    priority: 5  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        strategies=lambda w: json.dumps(strategies_for(w.fraction)),
        labels=lambda w, input: input.labels[0] if input.labels else "",
    shell:
        "headsieve --log {log:q} select-masks --finetuned {input.finetuned:q} --strategies {params.strategies:q}"
        " --fraction {wildcards.fraction:q} --seed {wildcards.seed} --labels={params.labels:q}"
        " --importance {input.importance:q} --output {output:q}"


rule evaluate_masks:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        masks="results/{model}/{task}/seed{seed}/masks/{fraction}.parquet",
        eval=lambda w: task_file(w.task, "eval"),
    output:
        "results/{model}/{task}/seed{seed}/masked/{fraction}.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/evaluate_masks_{fraction}.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/evaluate_masks_{fraction}.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu_count,
        batch_size=config["pruning"]["eval_batch_size"],
    params:
        eval_spec=lambda w: task_corpus_json(w.task, "eval"),
        task=lambda w: task_json(w.task),
        device=config["device"],
    shell:
        "headsieve --log {log:q} evaluate-masks --finetuned {input.finetuned:q} --masks {input.masks:q}"
        " --eval-spec {params.eval_spec:q} --eval {input.eval:q} --task-options {params.task:q}"
        " --batch-size {resources.batch_size} --output {output:q} --threads {threads} --device {params.device:q}"


rule prune_finetune:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        masks="results/{model}/{task}/seed{seed}/masks/{fraction}.parquet",
        train=lambda w: task_file(w.task, "train"),
        eval=lambda w: task_file(w.task, "eval"),
        model=model_inputs,
    output:
        directory("results/{model}/{task}/seed{seed}/pruned_finetuned/{fraction}"),
    log:
        "logs/{model}/{task}/seed{seed}/prune_finetune_{fraction}.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/prune_finetune_{fraction}.tsv"
    priority: 5  # long jobs first: short ones fill the cores at the end (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=gpu_count,
    params:
        model_spec=lambda w: model_spec_json(w.model),
        train_spec=lambda w: task_corpus_json(w.task, "train"),
        eval_spec=lambda w: task_corpus_json(w.task, "eval"),
        task=lambda w: task_json(w.task),
        options=lambda w: finetune_options(w.task),
        keep=json.dumps(config["pruning"]["compensation_strategies"]),
        skip=json.dumps(config["pruning"]["mask_only_strategies"]),
        device=config["device"],
    shell:
        "headsieve --log {log:q} prune-finetune --model {wildcards.model:q} --model-spec {params.model_spec:q}"
        " --finetuned {input.finetuned:q} --masks {input.masks:q} --train-spec {params.train_spec:q}"
        " --train {input.train:q} --eval-spec {params.eval_spec:q} --eval {input.eval:q}"
        " --task-options {params.task:q} --options {params.options:q} --seed {wildcards.seed}"
        " --keep-models {params.keep:q} --skip {params.skip:q} --output {output:q} --work {output:q}.work"
        " --threads {threads}"
        " --device {params.device:q}"


rule compensation:
    input:
        reference="results/{model}/{task}/seed{seed}/finetuned",
        pruned=lambda w: sorted(
            {
                pruned_finetuned_dir(w.model, w.task, w.seed, tag)
                for _, tag, _ in compensation_items(w)
            }
        ),
        train=lambda w: task_file(w.task, "train"),
        model=model_inputs,
    output:
        heads="results/{model}/{task}/seed{seed}/compensation.parquet",
        summary="results/{model}/{task}/seed{seed}/compensation_summary.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/compensation.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/compensation.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
    params:
        pruned=lambda w: [f"{s}={f}={d}" for s, f, d in compensation_items(w)],
        model_spec=lambda w: model_spec_json(w.model),
        train_spec=lambda w: task_corpus_json(w.task, "train"),
        task=lambda w: task_json(w.task),
        examples=config["pruning"]["compensation_examples"],
        device=config["device"],
    shell:
        "headsieve --log {log:q} compensation --reference {input.reference:q} --model {wildcards.model:q}"
        " --model-spec {params.model_spec:q} --pruned {params.pruned:q}"
        " --train-spec {params.train_spec:q} --train {input.train:q} --task-options {params.task:q}"
        " --examples {params.examples} --seed {wildcards.seed} --output {output.heads:q}"
        " --summary {output.summary:q} --threads {threads} --device {params.device:q}"


rule collect_pruning:
    input:
        masked=lambda w: (
            [
                f"results/{w.model}/{w.task}/seed{seed}/masked/{group}.parquet"
                for seed in config["pruning"]["seeds"]
                for group in mask_groups()
            ]
            if protocol_on("finetune_then_prune")
            else []
        ),
        pruned_finetuned=lambda w: (
            [
                pruned_finetuned_dir(w.model, w.task, seed, group)
                for seed in config["pruning"]["seeds"]
                for group in mask_groups()
            ]
            if protocol_on("prune_then_finetune")
            else []
        ),
    output:
        "results/{model}/{task}/pruning/evaluations.parquet",
    log:
        "logs/{model}/{task}/collect_pruning.log",
    benchmark:
        "benchmarks/{model}/{task}/collect_pruning.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "headsieve --log {log:q} collect-pruning --inputs {input.masked:q} {input.pruned_finetuned:q}"
        " --output {output:q}"


rule report_pruning:
    input:
        evaluations="results/{model}/{task}/pruning/evaluations.parquet",
        compensation=lambda w: (
            [
                f"results/{w.model}/{w.task}/seed{seed}/compensation.parquet"
                for seed in config["pruning"]["seeds"]
            ]
            if compensation_wanted()
            else []
        ),
        summary=lambda w: (
            [
                f"results/{w.model}/{w.task}/seed{seed}/compensation_summary.parquet"
                for seed in config["pruning"]["seeds"]
            ]
            if compensation_wanted()
            else []
        ),
    output:
        **{
            f"fig_{name}": report(
                f"results/{{model}}/{{task}}/pruning/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Pruning",
                subcategory="{model} on {task}",
            )
            for name in PRUNING_FIGURES
        },
        comparisons="results/{model}/{task}/pruning/comparisons.parquet",
        summary=report(
            "results/{model}/{task}/pruning/summary.md",
            caption="../report/pruning_summary.rst",
            category="Pruning",
            subcategory="{model} on {task}",
        ),
        pdfs=multiext(
            "results/{model}/{task}/pruning/figures/",
            *[f"{n}.pdf" for n in PRUNING_FIGURES],
        ),
    log:
        "logs/{model}/{task}/report_pruning.log",
    benchmark:
        "benchmarks/{model}/{task}/report_pruning.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        title=lambda w: f"{w.model} on {w.task}",
        figures=folder_of("fig_metric_by_fraction"),
        correction=config["pruning"]["correction"],
    shell:
        "headsieve --log {log:q} pruning-report --evaluations {input.evaluations:q}"
        " --compensation {input.compensation:q} --compensation-summary {input.summary:q}"
        " --comparisons {output.comparisons:q} --title {params.title:q}"
        " --figures {params.figures:q} --correction {params.correction:q} --summary {output.summary:q}"
