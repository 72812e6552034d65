"""The translation experiment's steps (one function per command / workflow rule).

Each function loads what it needs, calls the science (gate importance, strategies, the translation
evaluator, head roles) and writes Parquet atomically.  Sentence pairs come from two parallel CoNLL-U files
(PUD); a seeded split (``pairs`` options, the same for every pruning seed) keeps an *importance pool*
apart: importance and roles use the pool, BLEU/chrF only ever score the rest.

Option dicts (the config entries, as JSON on the command line):

* model spec: ``source`` (hub id or folder), optional ``revision``, ``trust_remote_code``,
  ``source_prefix`` (T5: ``"translate English to German: "``), ``bleu_tokenize`` (default by target
  language, :func:`headsieve.translation.bleu.bleu_tokenizer`), ``target_language``.
* pairs: ``importance_pool`` (number of pairs, default 200), ``split_seed`` (default 0), ``max_test``
  (null = all the rest), ``max_pool`` (null = whole pool).
* generation: ``batch_size``, ``num_beams``, ``max_new_tokens``, ``max_source_length``, ``options``
  (more ``generate`` arguments).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import write_frame
from headsieve.models import heads as H
from headsieve.models.load import hub_kwargs, load_error
from headsieve.pruning.masks import heads_of
from headsieve.translation.data import read_parallel, split_pairs

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ loading


def _source(spec: dict) -> str:
    source = str(spec.get("source", "")).strip()
    if not source:
        raise HeadsieveError(
            "translation model spec has no 'source' (a hub id such as Helsinki-NLP/opus-mt-en-de, or a folder)"
        )
    return os.path.expanduser(source)


def _load_error(source: str, err: Exception) -> HeadsieveError:
    return load_error("translation model", source, err, "translation.models.<key>.source")


def load_config(spec: dict):
    """The model's transformers config, checked to be a supported encoder-decoder."""
    from transformers import AutoConfig

    source = _source(spec)
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs(spec))
    except Exception as err:
        raise _load_error(source, err) from None
    if H.config_space(config).single is not None:
        raise HeadsieveError(
            f"model type '{config.model_type}' cannot be head-masked or pruned as an encoder-decoder "
            f"(it has the single attention kind {H.config_space(config).single.kind})"
        )
    return config


def model_shapes(spec: dict) -> dict[str, tuple[int, int]]:
    """``{kind: (layers, heads)}`` of the model, from its config alone (no weights loaded)."""
    return H.config_space(load_config(spec)).shapes


def load_model(spec: dict, device: str = "cpu"):
    """(model in eval mode with eager attention, tokenizer); a folder saved by ``save_pruned`` is re-pruned."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    source = _source(spec)
    config = load_config(spec)
    try:
        if getattr(config, H.record_key(config), None):
            model = H.load_pruned(source, AutoModelForSeq2SeqLM, device=device)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(source, attn_implementation="eager", **hub_kwargs(spec))
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs(spec))
    except HeadsieveError:
        raise
    except Exception as err:  # transformers raises OSError/ValueError/ImportError (e.g. sentencepiece missing)
        raise _load_error(source, err) from None
    return model.to(device).eval(), tokenizer


def read_pairs(source_path, target_path, pairs_spec: dict):
    """(importance pool, test pairs) of two parallel CoNLL-U files, split as ``pairs_spec`` says."""
    pairs = read_parallel(source_path, target_path)
    pool, test = split_pairs(pairs, int(pairs_spec.get("importance_pool", 200)), int(pairs_spec.get("split_seed", 0)))
    if pairs_spec.get("max_pool") is not None:
        pool = pool[: int(pairs_spec["max_pool"])]
    if pairs_spec.get("max_test") is not None:
        test = test[: int(pairs_spec["max_test"])]
    return pool, test


def _bleu_tokenize(spec: dict) -> str:
    from headsieve.translation.bleu import bleu_tokenizer

    return spec.get("bleu_tokenize") or bleu_tokenizer(spec.get("target_language"))


# ------------------------------------------------------------------------------------------------ tables


def importance_frame(scores: dict) -> pd.DataFrame:
    """Long table (kind, layer, head, importance) of ``{kind: [layers, heads]}``."""
    rows = [
        (kind, l, h, float(v[l, h])) for kind, v in scores.items() for l in range(v.shape[0]) for h in range(v.shape[1])
    ]
    frame = pd.DataFrame(rows, columns=["kind", "layer", "head", "importance"])
    return frame.astype({"layer": "int16", "head": "int16"})


# ------------------------------------------------------------------------------------------------ steps


def importance(
    spec: dict, source_path, target_path, pairs_spec: dict, options: dict, output, device="cpu"
) -> pd.DataFrame:
    """Gate importance of every head (all kinds) on the importance pool."""
    from headsieve.translation.importance import head_importance, pair_batches

    model, tokenizer = load_model(spec, device)
    pool, _ = read_pairs(source_path, target_path, pairs_spec)
    batches = pair_batches(tokenizer, pool, int(options.get("batch_size", 8)), int(options.get("max_length", 256)),
                           spec.get("source_prefix", ""))  # fmt: skip
    log.info("importance on %d pairs in %d batches", len(pool), len(batches))
    frame = importance_frame(head_importance(model, batches, device=device))
    write_frame(frame, output)
    return frame


def select_masks(shapes: dict, strategies: list, fractions: list, seed: int, importance_path, output) -> pd.DataFrame:
    """Heads pruned by every strategy at every fraction for one seed (:func:`headsieve.pruning.masks.mask_table`:
    strategy, fraction, seed, kind, layer, head) of a model of ``shapes`` (``{kind: (layers, heads)}``)."""
    from headsieve.models.headspace import HeadSpace
    from headsieve.pruning.masks import mask_table, read_importance

    space = HeadSpace.from_shapes(shapes)
    scores = read_importance(importance_path, space) if importance_path else None
    frame = mask_table(space, strategies, fractions, seed, importance=scores)
    write_frame(frame, output)
    return frame


def evaluate_masks(
    spec, masks_path, source_path, target_path, pairs_spec, options, output, translations=None, device="cpu"
):
    """BLEU/chrF of every mask of one seed on the test pairs, each distinct mask generated once."""
    from headsieve.models.masking import mask_from_heads, mask_key
    from headsieve.translation.evaluate import TranslationEvaluator

    model, tokenizer = load_model(spec, device)
    _, test = read_pairs(source_path, target_path, pairs_spec)
    masks = pd.read_parquet(masks_path)
    evaluator = TranslationEvaluator(
        model, tokenizer, test, batch_size=int(options.get("batch_size", 16)), num_beams=int(options.get("num_beams", 1)),
        max_new_tokens=int(options.get("max_new_tokens", 256)), max_source_length=int(options.get("max_source_length", 256)),
        source_prefix=spec.get("source_prefix", ""), tokenize=_bleu_tokenize(spec), generate_options=options.get("options"),
        device=device, progress=bool(options.get("progress", True)),
    )  # fmt: skip
    with evaluator:
        named = {}
        for (strategy, fraction), _ in masks.groupby(["strategy", "fraction"], sort=True):
            named[(strategy, float(fraction))] = mask_from_heads(evaluator.space, heads_of(masks, strategy, fraction))
        unique = {mask_key(m): m for m in named.values()}  # e.g. every strategy at fraction 0: generated once
        log.info("translating %d test pairs under %d masks (%d distinct)", len(test), len(named), len(unique))
        found = {
            row.pop("mask"): row for row in evaluator.evaluate_many(unique, keep_translations=True)
        }  # with a progress bar over the masks
    seed = int(masks["seed"].iloc[0])
    rows, texts = [], []
    for (strategy, fraction), mask in named.items():
        result = dict(found[mask_key(mask)])
        hypotheses = result.pop("translations")
        rows.append({"strategy": strategy, "fraction": fraction, "seed": seed, **result})
        texts += [(strategy, fraction, seed, p.sent_id, h) for p, h in zip(test, hypotheses)]
    frame = pd.DataFrame(rows)
    write_frame(frame, output)
    if translations:
        write_frame(
            pd.DataFrame(texts, columns=["strategy", "fraction", "seed", "sent_id", "translation"]), translations
        )
    return frame


def roles(spec, source_path, target_path, pairs_spec, options, output, device="cpu") -> pd.DataFrame:
    """Role scores of the encoder self-attention and cross-attention heads on the importance pool."""
    from headsieve.translation.roles import head_roles

    model, tokenizer = load_model(spec, device)
    pool, _ = read_pairs(source_path, target_path, pairs_spec)
    frame = head_roles(
        model, tokenizer, pool, batch_size=int(options.get("batch_size", 8)), max_length=int(options.get("max_length", 128)),
        source_prefix=spec.get("source_prefix", ""), window=int(options.get("window", 2)), band=int(options.get("band", 1)),
        device=device,
    )  # fmt: skip
    write_frame(frame, output)
    return frame


def collect(paths: list, output) -> pd.DataFrame:
    """One scores table from the per-seed tables, sorted by strategy, fraction and seed."""
    if not paths:
        raise HeadsieveError("no score tables to collect")
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    frame = frame.sort_values(["strategy", "fraction", "seed"], kind="stable").reset_index(drop=True)
    write_frame(frame, output)
    return frame


def report(scores_path, importance_path, roles_path, model: str, comparisons_output, figures, title: str) -> pd.DataFrame:
    """Paired strategy comparisons (BLEU and chrF) and the figures: score curves, comparison maps, importance
    and role maps.  Returns the comparisons table."""
    from pathlib import Path

    from headsieve.plots import translation as plots
    from headsieve.translation.report import METRICS, comparisons, long_scores

    scores = pd.read_parquet(scores_path)
    table = comparisons(scores, model)
    write_frame(table, comparisons_output)
    figures = Path(figures)
    scores_long = long_scores(scores, model)
    for metric in METRICS:
        plots.score_curves(scores_long, metric, figures / f"{metric}_by_fraction", title)
        plots.strategy_comparisons(table, metric, figures / f"{metric}_comparisons", title)
    plots.importance_maps(pd.read_parquet(importance_path), figures / "importance", title)
    plots.role_maps(pd.read_parquet(roles_path), figures / "roles", title)
    log.info("comparisons: %d rows; figures in %s", len(table), figures)
    return table
