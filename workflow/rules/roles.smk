# Head roles: sieve scores and Clark-style statistics from a dump, t tests, figures and a summary.


rule score_roles:
    input:
        tokens="results/{model}/{corpus}/tokens.parquet",
        dump="results/{model}/{corpus}/attention",
    output:
        scores="results/{model}/{corpus}/roles/scores.parquet",
        head_stats="results/{model}/{corpus}/roles/head_stats.parquet",
    log:
        "logs/{model}/{corpus}/score_roles.log",
    benchmark:
        "benchmarks/{model}/{corpus}/score_roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1  # measured: about one core busy with 2 (issue 15); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        options=lambda w: json.dumps(
            dict(
                role_options(),
                **{k: config["roles"][k] for k in ("score", "max_uniform_share")},
            ),
            sort_keys=True,
        ),
    shell:
        "headsieve --log {log:q} roles-score --model {wildcards.model:q} --corpus {wildcards.corpus:q}"
        " --tokens {input.tokens:q} --dump {input.dump:q} --options {params.options:q}"
        " --scores {output.scores:q} --head-stats {output.head_stats:q} --threads {threads}"


rule test_roles:
    input:
        "results/{model}/{corpus}/roles/scores.parquet",
    output:
        "results/{model}/{corpus}/roles/tests.parquet",
    log:
        "logs/{model}/{corpus}/test_roles.log",
    benchmark:
        "benchmarks/{model}/{corpus}/test_roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        tau=json.dumps(config["roles"]["tau"]),
        tau_by_role=json.dumps(config["roles"]["tau_by_role"], sort_keys=True),
        alpha=config["roles"]["alpha"],
        correction=config["roles"]["correction"],
    shell:
        "headsieve --log {log:q} roles-test --scores {input:q} --tau {params.tau} --alpha {params.alpha}"
        " --correction {params.correction:q} --tau-by-role {params.tau_by_role:q} --output {output:q}"


rule report_roles:
    input:
        tests="results/{model}/{corpus}/roles/tests.parquet",
        scores="results/{model}/{corpus}/roles/scores.parquet",
    output:
        **{
            f"fig_{name}": report(
                f"results/{{model}}/{{corpus}}/roles/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Head roles",
                subcategory="{model} on {corpus}",
            )
            for name in ROLE_FIGURES
        },
        pdfs=multiext(
            "results/{model}/{corpus}/roles/figures/",
            *[f"{n}.pdf" for n in ROLE_FIGURES],
        ),
        colocation="results/{model}/{corpus}/roles/colocation.parquet",
        stability="results/{model}/{corpus}/roles/stability.parquet",
        layers="results/{model}/{corpus}/roles/heads_per_layer.parquet",
        summary=report(
            "results/{model}/{corpus}/roles/summary.md",
            caption="../report/role_summary.rst",
            category="Head roles",
            subcategory="{model} on {corpus}",
        ),
    log:
        "logs/{model}/{corpus}/report_roles.log",
    benchmark:
        "benchmarks/{model}/{corpus}/report_roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        figures=folder_of("fig_role_map"),
        tables=folder_of("colocation"),
        seed=config["roles"]["stability"]["seed"],
        bootstrap=config["roles"]["stability"]["bootstrap"],
    shell:
        "headsieve --log {log:q} roles-report --tests {input.tests:q} --scores {input.scores:q}"
        " --figures {params.figures:q} --tables {params.tables:q} --summary {output.summary:q}"
        " --stability-seed {params.seed} --bootstrap {params.bootstrap}"


rule compare_finetuned_roles:
    input:
        before="results/{model}/{corpus}/roles/scores.parquet",
        after=finetuned_scores,
    output:
        change="results/{model}/{corpus}/roles/finetuned-{task}/change.parquet",
        agreement="results/{model}/{corpus}/roles/finetuned-{task}/agreement.parquet",
        by_layer="results/{model}/{corpus}/roles/finetuned-{task}/change_by_layer.parquet",
        summary=report(
            "results/{model}/{corpus}/roles/finetuned-{task}/summary.md",
            caption="../report/finetuning_summary.rst",
            category="Head roles",
            subcategory="{model} on {corpus}",
        ),
        figure=report(
            "results/{model}/{corpus}/roles/finetuned-{task}/change.png",
            caption="../report/finetuning_change.rst",
            category="Head roles",
            subcategory="{model} on {corpus}",
        ),
        pdf="results/{model}/{corpus}/roles/finetuned-{task}/change.pdf",
    log:
        "logs/{model}/{corpus}/compare_finetuned_roles_{task}.log",
    benchmark:
        "benchmarks/{model}/{corpus}/compare_finetuned_roles_{task}.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        title=lambda w: f"{w.model} on {w.corpus}, fine-tuned on {w.task}",
        figure=stem_of("pdf"),
        seeds=" ".join(str(s) for s in config["roles"]["finetuned_seeds"]),
        alpha=config["roles"]["alpha"],
        correction=config["roles"]["correction"],
    shell:
        "headsieve --log {log:q} roles-compare --before {input.before:q} --after {input.after:q}"
        " --seeds {params.seeds} --task {wildcards.task:q} --alpha {params.alpha} --correction {params.correction:q}"
        " --output {output.change:q} --agreement {output.agreement:q} --by-layer {output.by_layer:q}"
        " --summary {output.summary:q} --title {params.title:q} --figure {params.figure:q}"


rule compare_parsed_roles:
    input:
        parsed="results/{model}/{corpus}/roles/tests.parquet",
        gold=gold_tests,
    output:
        table="results/{model}/{corpus}/roles/gold_agreement.parquet",
        summary=report(
            "results/{model}/{corpus}/roles/gold_agreement.md",
            caption="../report/gold_agreement.rst",
            category="Head roles",
            subcategory="{model} on {corpus}",
        ),
    log:
        "logs/{model}/{corpus}/compare_parsed_roles.log",
    benchmark:
        "benchmarks/{model}/{corpus}/compare_parsed_roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        gold=lambda w: config["corpora"][w.corpus]["source"],
        title=lambda w: f"{w.model}: role map on {w.corpus} (parsed trees) against {config['corpora'][w.corpus]['source']} (gold trees)",
    shell:
        "headsieve --log {log:q} roles-agreement --a {input.gold:q} --b {input.parsed:q} --name-a {params.gold:q}"
        " --name-b {wildcards.corpus:q} --title {params.title:q} --output {output.table:q}"
        " --summary {output.summary:q}"
