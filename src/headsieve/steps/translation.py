"""Steps of ``workflow/rules/translation.smk`` (one function per rule): head importance, masks, BLEU/chrF
under masks, roles and the report of an encoder-decoder translation model.

Each step loads what it needs, calls the science (gate importance, strategies, the translation evaluator,
head roles) and writes Parquet atomically.  Sentence pairs come from two parallel CoNLL-U files (PUD); a
seeded split (the pair options, the same for every pruning seed) keeps an *importance pool* apart:
importance and roles use the pool, BLEU/chrF only ever score the rest.

Option dicts (the config entries, as JSON on the command line):

* model spec: ``source`` (hub id or folder), optional ``revision``, ``trust_remote_code``,
  ``source_prefix`` (T5: ``"translate English to German: "``), ``bleu_tokenize`` (default by target
  language, :func:`headsieve.translation.bleu.bleu_tokenizer`), ``target_language``.
* pairs (:class:`headsieve.steps.settings.SentencePairs` options): ``importance_pool`` (number of pairs,
  default 200), ``split_seed`` (default 0), ``max_test`` (null = all the rest), ``max_pool`` (null = whole
  pool).
* generation: ``batch_size``, ``num_beams``, ``max_new_tokens``, ``max_source_length``, ``options``
  (more ``generate`` arguments).
"""

from __future__ import annotations

import logging

from headsieve.io.provenance import check_cells, check_same_cells, expect_provenance, record_sha256
from headsieve.steps.pruning import write_made_from
from headsieve.steps.settings import SentencePairs

log = logging.getLogger(__name__)


def pairs_record(spec: dict, pairs: SentencePairs) -> dict:
    """What a table made from the sentence pairs records of them and of the model: the model spec, the pair
    options (split and sizes) and the sha256 of both files."""
    from headsieve.tokens import file_sha256

    return {"model_spec": spec, "pairs": pairs.options, "source_sha256": file_sha256(pairs.source),
            "target_sha256": file_sha256(pairs.target)}  # fmt: skip


def importance(spec: dict, pairs: SentencePairs, options: dict, output, device: str = "cpu"):
    """Rule ``translation_importance``: gate importance of every head (all kinds) on the importance pool of
    ``pairs`` -> (kind, layer, head, importance)."""
    from headsieve.translation.data import read_pairs
    from headsieve.translation.importance import head_importance, importance_frame, pair_batches
    from headsieve.translation.load import load_model

    model, tokenizer = load_model(spec, device)
    pool, _ = read_pairs(pairs.source, pairs.target, pairs.options)
    batches = pair_batches(tokenizer, pool, int(options.get("batch_size", 8)), int(options.get("max_length", 256)),
                           spec.get("source_prefix", ""))  # fmt: skip
    log.info("importance on %d pairs in %d batches", len(pool), len(batches))
    frame = importance_frame(head_importance(model, batches, device=device))
    write_made_from(frame, output, dict(pairs_record(spec, pairs), rule="translation_importance", options=options))
    return frame


def select_masks(spec: dict, strategies: list, fractions: list, seed: int, output, importance=""):
    """Rule ``translation_select_masks``: the heads each strategy prunes at each fraction, one seed
    (:func:`headsieve.pruning.masks.mask_table`: strategy, fraction, seed, kind, layer, head), of the model's
    head space read from its config (no weights loaded)."""
    from headsieve.models.headspace import HeadSpace
    from headsieve.pruning.masks import mask_table, read_importance
    from headsieve.translation.load import model_shapes
    from headsieve.tokens import file_sha256

    if importance:
        expect_provenance(importance, {"model_spec": spec}, "translation_importance")
    space = HeadSpace.from_shapes(model_shapes(spec))
    scores = read_importance(importance, space) if importance else None
    frame = mask_table(space, strategies, fractions, seed, importance=scores)
    record = {"rule": "translation_masks", "model_spec": spec, "seed": int(seed), "strategies": list(strategies),
              "fractions": list(fractions), "importance_sha256": file_sha256(importance) if importance else None}  # fmt: skip
    write_made_from(frame, output, record)
    return frame


def evaluate_masks(spec: dict, masks, pairs: SentencePairs, options: dict, output, translations=None, device: str = "cpu"):
    """Rule ``translation_evaluate_masks``: BLEU/chrF of every mask of one seed on the test pairs, each distinct
    mask generated once (and every translation in ``translations`` when given)."""
    import pandas as pd

    from headsieve.models.masking import mask_from_heads, mask_key
    from headsieve.pruning.masks import heads_of
    from headsieve.translation.bleu import bleu_tokenizer
    from headsieve.translation.data import read_pairs
    from headsieve.translation.evaluate import TranslationEvaluator
    from headsieve.translation.load import load_model
    from headsieve.tokens import file_sha256

    made = expect_provenance(masks, {"model_spec": spec}, "translation_masks")
    model, tokenizer = load_model(spec, device)
    _, test = read_pairs(pairs.source, pairs.target, pairs.options)
    table = pd.read_parquet(masks)
    evaluator = TranslationEvaluator(
        model, tokenizer, test, batch_size=int(options.get("batch_size", 16)), num_beams=int(options.get("num_beams", 1)),
        max_new_tokens=int(options.get("max_new_tokens", 256)), max_source_length=int(options.get("max_source_length", 256)),
        source_prefix=spec.get("source_prefix", ""), tokenize=spec.get("bleu_tokenize") or bleu_tokenizer(spec.get("target_language")),
        generate_options=options.get("options"), device=device, progress=bool(options.get("progress", True)),
    )  # fmt: skip
    with evaluator:
        named = {}
        for (strategy, fraction), _ in table.groupby(["strategy", "fraction"], sort=True):
            named[(strategy, float(fraction))] = mask_from_heads(evaluator.space, heads_of(table, strategy, fraction))
        unique = {mask_key(m): m for m in named.values()}  # e.g. every strategy at fraction 0: generated once
        log.info("translating %d test pairs under %d masks (%d distinct)", len(test), len(named), len(unique))
        found = {
            row.pop("mask"): row for row in evaluator.evaluate_many(unique, keep_translations=True)
        }  # with a progress bar over the masks
    seed = int(table["seed"].iloc[0])
    rows, texts = [], []
    for (strategy, fraction), mask in named.items():
        result = dict(found[mask_key(mask)])
        hypotheses = result.pop("translations")
        rows.append({"strategy": strategy, "fraction": fraction, "seed": seed, **result})
        texts += [(strategy, fraction, seed, p.sent_id, h) for p, h in zip(test, hypotheses)]
    frame = pd.DataFrame(rows)
    record = dict(pairs_record(spec, pairs), rule="translation_evaluate", seed=made["seed"], generation=options,
                  masks_sha256=file_sha256(masks), strategies=sorted({strategy for strategy, _ in named}))  # fmt: skip
    write_made_from(frame, output, record)
    if translations:
        texts = pd.DataFrame(texts, columns=["strategy", "fraction", "seed", "sent_id", "translation"])
        write_made_from(texts, translations, record)
    return frame


def roles(spec: dict, pairs: SentencePairs, options: dict, output, device: str = "cpu"):
    """Rule ``translation_roles``: role scores of the encoder self-attention and cross-attention heads on the
    importance pool."""
    from headsieve.translation.data import read_pairs
    from headsieve.translation.load import load_model
    from headsieve.translation.roles import head_roles

    model, tokenizer = load_model(spec, device)
    pool, _ = read_pairs(pairs.source, pairs.target, pairs.options)
    frame = head_roles(
        model, tokenizer, pool, batch_size=int(options.get("batch_size", 8)), max_length=int(options.get("max_length", 128)),
        source_prefix=spec.get("source_prefix", ""), window=int(options.get("window", 2)), band=int(options.get("band", 1)),
        device=device,
    )  # fmt: skip
    write_made_from(frame, output, dict(pairs_record(spec, pairs), rule="translation_roles", options=options))
    return frame


def collect(inputs: list, output):
    """Rule ``translation_collect``: one BLEU/chrF table from the score tables of every seed, sorted by
    strategy, fraction and seed."""
    import pandas as pd

    from headsieve.errors import HeadsieveError

    if not inputs:
        raise HeadsieveError("no score tables to collect")
    records, frames, cells, by_seed = {}, [], [], {}
    for path in inputs:  # one model and pairs; every (seed, strategy, fraction) once, each seed the same masks
        first = next(iter(records.values()), {})
        same = {k: first.get(k) for k in ("model_spec", "pairs", "source_sha256", "target_sha256", "generation")}
        record = records[str(path)] = expect_provenance(path, same, "translation_evaluate")
        frame = pd.read_parquet(path)
        held = set(zip(frame["seed"].astype(int), frame["strategy"], frame["fraction"].astype(float)))
        if {seed for seed, _, _ in held} - {record["seed"]} or set(frame["strategy"]) != set(record["strategies"]):
            raise HeadsieveError(f"{path}: its rows are not those its provenance records: rerun rule translation_evaluate")
        cells.append((path, held))
        by_seed[f"{path} (seed {record['seed']})"] = {(strategy, fraction) for _, strategy, fraction in held}
        frames.append(frame)
    check_cells(cells, "score (seed, strategy, fraction)")
    check_same_cells(by_seed, "(strategy, fraction)")
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["strategy", "fraction", "seed"], kind="stable").reset_index(drop=True)
    first = next(iter(records.values()))
    record = {k: first[k] for k in ("model_spec", "pairs", "source_sha256", "target_sha256", "generation")}
    record.update(rule="translation_collect", seeds=sorted(r["seed"] for r in records.values()),
                  inputs=sorted(record_sha256(r) for r in records.values()))  # fmt: skip
    write_made_from(frame, output, record)
    return frame


def report(scores, importance, roles, model: str, comparisons, figures, title: str):
    """Rule ``translation_report``: paired strategy comparisons (BLEU and chrF) of one translation model and
    the figures: score curves, comparison maps, importance and role maps.  Returns the comparisons table."""
    from pathlib import Path

    import pandas as pd

    from headsieve.plots import translation as plots
    from headsieve.translation.report import METRICS, comparisons as paired_comparisons, long_scores

    made = expect_provenance(scores, {}, "translation_collect")
    expect_provenance(importance, {"model_spec": made["model_spec"]}, "translation_importance")
    expect_provenance(roles, {"model_spec": made["model_spec"]}, "translation_roles")
    frame = pd.read_parquet(scores)
    table = paired_comparisons(frame, model)
    write_made_from(table, comparisons, {"rule": "translation_report", "model_spec": made["model_spec"],
                                         "scores": record_sha256(made)})  # fmt: skip
    figures = Path(figures)
    scores_long = long_scores(frame, model)
    for metric in METRICS:
        plots.score_curves(scores_long, metric, figures / f"{metric}_by_fraction", title)
        plots.strategy_comparisons(table, metric, figures / f"{metric}_comparisons", title)
    plots.importance_maps(pd.read_parquet(importance), figures / "importance", title)
    plots.role_maps(pd.read_parquet(roles), figures / "roles", title)
    log.info("comparisons: %d rows; figures in %s", len(table), figures)
    return table
