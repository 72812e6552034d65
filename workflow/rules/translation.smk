# Translation (issue #8): gate importance, head masks per strategy, masked BLEU/chrF evaluation (many masks
# in one job per seed) and head roles of encoder-decoder models on the parallel UD PUD treebanks.
# Settings: the config's `translation` section (validated with the whole config in common.smk; the overlay
# config/translation.yaml sets it); sentence files: the corpora its `languages` name (translation_files).
# The target is `translation_all` (tables, figures and the report entries); nothing here is added to `all`.
from headsieve.translation.workflow import as_json, translation_title

TR = config["translation"]


wildcard_constraints:
    mt=r"[A-Za-z0-9][A-Za-z0-9_-]*",


rule translation_importance:
    input:
        unpack(translation_files),
    output:
        "results/translation/{mt}/importance.parquet",
    log:
        "logs/translation/{mt}/importance.log",
    benchmark:
        "benchmarks/translation/{mt}/importance.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
    params:
        model=lambda w: as_json(TR["models"][w.mt]),
        pairs=as_json(TR["pairs"]),
        options=as_json(TR["importance"]),
        device=config["device"],
    shell:
        "headsieve --log {log:q} translation-importance --model-spec {params.model:q} --source {input.source:q}"
        " --target {input.target:q} --pairs {params.pairs:q} --options {params.options:q} --output {output:q}"
        " --threads {threads} --device {params.device:q}"


rule translation_masks:
    input:
        importance="results/translation/{mt}/importance.parquet",
    output:
        "results/translation/{mt}/seed{seed}/masks.parquet",
    log:
        "logs/translation/{mt}/seed{seed}/masks.log",
    benchmark:
        "benchmarks/translation/{mt}/seed{seed}/masks.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=lambda w: as_json(TR["models"][w.mt]),
        strategies=as_json(TR["strategies"]),
        fractions=as_json(TR["fractions"]),
    shell:
        "headsieve --log {log:q} translation-select-masks --model-spec {params.model:q}"
        " --strategies {params.strategies:q} --fractions {params.fractions:q} --seed {wildcards.seed}"
        " --importance {input.importance:q} --output {output:q}"


rule translation_evaluate:
    input:
        unpack(translation_files),
        masks="results/translation/{mt}/seed{seed}/masks.parquet",
    output:
        scores="results/translation/{mt}/seed{seed}/scores.parquet",
        translations="results/translation/{mt}/seed{seed}/translations.parquet",
    log:
        "logs/translation/{mt}/seed{seed}/evaluate.log",
    benchmark:
        "benchmarks/translation/{mt}/seed{seed}/evaluate.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=gpu_count,
    params:
        model=lambda w: as_json(TR["models"][w.mt]),
        pairs=as_json(TR["pairs"]),
        options=as_json(TR["generation"]),
        device=config["device"],
    shell:
        "headsieve --log {log:q} translation-evaluate-masks --model-spec {params.model:q} --source {input.source:q}"
        " --target {input.target:q} --pairs {params.pairs:q} --masks {input.masks:q} --options {params.options:q}"
        " --output {output.scores:q} --translations {output.translations:q} --threads {threads}"
        " --device {params.device:q}"


rule translation_roles:
    input:
        unpack(translation_files),
    output:
        "results/translation/{mt}/roles.parquet",
    log:
        "logs/translation/{mt}/roles.log",
    benchmark:
        "benchmarks/translation/{mt}/roles.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu_count,
    params:
        model=lambda w: as_json(TR["models"][w.mt]),
        pairs=as_json(TR["pairs"]),
        options=as_json(TR["roles"]),
        device=config["device"],
    shell:
        "headsieve --log {log:q} translation-roles --model-spec {params.model:q} --source {input.source:q}"
        " --target {input.target:q} --pairs {params.pairs:q} --options {params.options:q} --output {output:q}"
        " --threads {threads} --device {params.device:q}"


rule translation_collect:
    input:
        lambda w: expand(
            "results/translation/{mt}/seed{seed}/scores.parquet",
            mt=w.mt,
            seed=TR["seeds"],
        ),
    output:
        "results/translation/{mt}/scores.parquet",
    log:
        "logs/translation/{mt}/collect.log",
    benchmark:
        "benchmarks/translation/{mt}/collect.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "headsieve --log {log:q} translation-collect --inputs {input:q} --output {output:q}"


TRANSLATION_FIGURES = (
    "bleu_by_fraction",
    "chrf_by_fraction",
    "bleu_comparisons",
    "chrf_comparisons",
    "importance",
    "roles",
)


rule translation_report:
    input:
        scores="results/translation/{mt}/scores.parquet",
        importance="results/translation/{mt}/importance.parquet",
        roles="results/translation/{mt}/roles.parquet",
    output:
        **{
            f"fig_{name}": report(
                f"results/translation/{{mt}}/figures/{name}.png",
                caption=f"../report/translation_{name}.rst",
                category="Translation",
                subcategory="{mt}",
            )
            for name in TRANSLATION_FIGURES
        },
        comparisons="results/translation/{mt}/comparisons.parquet",
        pdfs=multiext(
            "results/translation/{mt}/figures/",
            *[f"{n}.pdf" for n in TRANSLATION_FIGURES],
        ),
    log:
        "logs/translation/{mt}/report.log",
    benchmark:
        "benchmarks/translation/{mt}/report.tsv"
    conda:
        "../../envs/headsieve.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        title=lambda w: translation_title(TR, w.mt),
        figures=folder_of("fig_importance"),
    shell:
        "headsieve --log {log:q} translation-report --scores {input.scores:q} --importance {input.importance:q}"
        " --roles {input.roles:q} --model {wildcards.mt:q} --comparisons {output.comparisons:q}"
        " --figures {params.figures:q} --title {params.title:q}"


rule translation_all:
    input:
        expand("results/translation/{mt}/scores.parquet", mt=list(TR["models"])),
        expand("results/translation/{mt}/roles.parquet", mt=list(TR["models"])),
        expand("results/translation/{mt}/comparisons.parquet", mt=list(TR["models"])),
