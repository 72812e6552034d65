# Multilingual: the offline multilingual encoder, head roles on the parallel PUD treebanks per language,
# and prunability per language (each layer / band of layers masked, evaluated on every language).


rule convert_e5:
    output:
        directory("resources/models/multilingual-e5-small"),
    log:
        "logs/convert_e5.log",
    benchmark:
        "benchmarks/convert_e5.tsv"
    priority: 10  # on the way to a long job (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "headsieve --log {log:q} convert-e5 --output {output:q}"


rule evaluate_languages:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        evals=lambda w: [
            f
            for corpus in language_evals(w.task).values()
            for f in corpus_path(corpus)
        ],
    output:
        "results/{model}/{task}/seed{seed}/languages.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/evaluate_languages.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/evaluate_languages.tsv"
    priority: 5  # long jobs first: short ones fill the cores at the end (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu_count,
        batch_size=config["pruning"]["eval_batch_size"],
    params:
        evals=lambda w: language_evals_json(w.task),
        task=lambda w: task_json(w.task),
        device=config["device"],
    shell:
        "headsieve --log {log:q} evaluate-languages --finetuned {input.finetuned:q} --evals {params.evals:q}"
        " --task-options {params.task:q} --model {wildcards.model:q} --task {wildcards.task:q}"
        " --seed {wildcards.seed} --batch-size {resources.batch_size} --output {output:q}"
        " --threads {threads} --device {params.device:q}"


rule multilingual_roles:
    input:
        lambda w: [
            f"results/{w.model}/{corpus}/roles/tests.parquet"
            for corpus in config["multilingual"]["languages"].values()
        ],
    output:
        by_language="results/{model}/multilingual/roles_by_language.parquet",
        distribution="results/{model}/multilingual/layer_distribution.parquet",
        similarity="results/{model}/multilingual/similarity.parquet",
        by_fact="results/{model}/multilingual/similarity_by_fact.parquet",
        fig_distribution=report(
            "results/{model}/multilingual/figures/role_distribution.png",
            caption="../report/role_distribution.rst",
            category="Multilingual",
            subcategory="{model}",
        ),
        fig_similarity=report(
            "results/{model}/multilingual/figures/similarity.png",
            caption="../report/similarity.rst",
            category="Multilingual",
            subcategory="{model}",
        ),
        pdfs=multiext(
            "results/{model}/multilingual/figures/",
            "role_distribution.pdf",
            "similarity.pdf",
        ),
    log:
        "logs/{model}/multilingual_roles.log",
    benchmark:
        "benchmarks/{model}/multilingual_roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        tests=lambda w: [
            f"{language}=results/{w.model}/{corpus}/roles/tests.parquet"
            for language, corpus in sorted(config["multilingual"]["languages"].items())
        ],
        title=lambda w: f"{w.model} on the parallel PUD treebanks",
        tables=folder_of("by_language"),
        figures=folder_of("fig_distribution"),
    shell:
        "headsieve --log {log:q} multilingual-roles --tests {params.tests:q} --title {params.title:q}"
        " --output {params.tables:q} --figures {params.figures:q}"


rule multilingual_pruning:
    input:
        lambda w: [
            f"results/{model}/{w.task}/seed{seed}/languages.parquet"
            for model in config["multilingual"]["prunability"]["models"]
            for seed in config["multilingual"]["prunability"]["seeds"]
        ],
    output:
        drops="results/multilingual/{task}/relative_drops.parquet",
        figure=report(
            "results/multilingual/{task}/relative_drops.png",
            caption="../report/relative_drops.rst",
            category="Multilingual",
            subcategory="prunability",
        ),
        pdf="results/multilingual/{task}/relative_drops.pdf",
    log:
        "logs/multilingual/{task}/multilingual_pruning.log",
    benchmark:
        "benchmarks/multilingual/{task}/multilingual_pruning.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        title=lambda w: f"task {w.task}",
        figure=stem_of("pdf"),
    shell:
        "headsieve --log {log:q} multilingual-pruning --evaluations {input:q} --output {output.drops:q}"
        " --figure {params.figure:q} --title {params.title:q}"


# -- the study (issue 15 item 6): relative drop by share of heads pruned at random, BERT against the
# multilingual encoder, and how much fine-tuning moves each layer (linear CKA before against after).


rule multilingual_effects:
    input:
        finetuned="results/{model}/{task}/seed{seed}/finetuned",
        eval=lambda w: task_file(w.task, "eval"),
        model=model_inputs,
    output:
        curve="results/{model}/{task}/seed{seed}/random_curve.parquet",
        cka="results/{model}/{task}/seed{seed}/layer_cka.parquet",
    log:
        "logs/{model}/{task}/seed{seed}/multilingual_effects.log",
    benchmark:
        "benchmarks/{model}/{task}/seed{seed}/multilingual_effects.tsv"
    priority: 3  # long jobs first: short ones fill the cores at the end (issue 15)
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
        batch_size=config["pruning"]["eval_batch_size"],
    params:
        model_spec=lambda w: model_spec_json(w.model),
        eval_spec=lambda w: task_corpus_json(w.task, "eval"),
        task=lambda w: study_task_json(w.task),
        fractions=json.dumps(config["multilingual"]["study"]["fractions"]),
        draws=config["multilingual"]["study"]["draws"],
        cka_examples=config["multilingual"]["study"]["cka_examples"],
        device=config["device"],
    shell:
        "headsieve --log {log:q} multilingual-effects --finetuned {input.finetuned:q} --model {wildcards.model:q}"
        " --model-spec {params.model_spec:q} --task {wildcards.task:q} --eval-spec {params.eval_spec:q}"
        " --eval {input.eval:q} --task-options {params.task:q} --fractions {params.fractions:q}"
        " --draws {params.draws} --cka-examples {params.cka_examples} --seed {wildcards.seed}"
        " --batch-size {resources.batch_size} --curve {output.curve:q} --cka {output.cka:q}"
        " --threads {threads} --device {params.device:q}"


rule multilingual_study:
    input:
        curves=lambda w: [
            f"results/{m}/{t}/seed{s}/random_curve.parquet"
            for m, t, s in study_items()
        ],
        cka=lambda w: [
            f"results/{m}/{t}/seed{s}/layer_cka.parquet" for m, t, s in study_items()
        ],
    output:
        curves="results/multilingual/fraction_curves.parquet",
        summary="results/multilingual/fraction_summary.parquet",
        tests="results/multilingual/fraction_tests.parquet",
        cka="results/multilingual/layer_cka.parquet",
        influence="results/multilingual/layer_influence.parquet",
        markdown="results/multilingual/summary.md",
        fig_curves=report(
            "results/multilingual/figures/fraction_curves.png",
            caption="../report/fraction_curves.rst",
            category="Multilingual",
            subcategory="BERT against the multilingual encoder",
        ),
        fig_influence=report(
            "results/multilingual/figures/layer_influence.png",
            caption="../report/layer_influence.rst",
            category="Multilingual",
            subcategory="BERT against the multilingual encoder",
        ),
        pdfs=multiext(
            "results/multilingual/figures/",
            "fraction_curves.pdf",
            "layer_influence.pdf",
        ),
    log:
        "logs/multilingual/multilingual_study.log",
    benchmark:
        "benchmarks/multilingual/multilingual_study.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        metric=config["multilingual"]["study"]["metric"],
        compare=config["multilingual"]["study"]["models"][:2],
        title=" against ".join(config["multilingual"]["study"]["models"]),
        tables=folder_of("curves"),
        figures=folder_of("fig_curves"),
    shell:
        "headsieve --log {log:q} multilingual-study --curves {input.curves:q} --cka {input.cka:q}"
        " --metric {params.metric:q} --compare {params.compare:q} --output {params.tables:q}"
        " --figures {params.figures:q} --title {params.title:q}"
