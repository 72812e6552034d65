"""Tables built on the translation scores: BLEU/chrF in the long form the pruning figures take, and paired
strategy comparisons (every strategy against random, and the location pairs of the seed study)."""

from __future__ import annotations

import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.pruning.report import paired_comparisons

#: the scores compared, in the order they are reported (BLEU first: the seed study's metric)
METRICS = ("bleu", "chrf")

#: strategy pairs compared besides every strategy against random: layers from the top against from the
#: bottom, the outer layers against the middle ones, and sparing a kind against pruning it first
PAIRS = (
    ("layer:top", "layer:bottom"),
    ("layer:top_bottom", "layer:middle"),
    ("spare:cross", "kind:cross"),
    ("spare:encoder", "kind:encoder"),
)

SCORE_COLUMNS = ("strategy", "fraction", "seed") + METRICS


def long_scores(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """One row per (strategy, fraction, seed, metric), in the form of the pruning evaluations: ``task`` is
    the model key, ``finetuned`` is false (translation models are only masked), ``primary`` marks BLEU."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise HeadsieveError(f"translation scores table lacks columns {missing} (made by translation-evaluate-masks?)")
    frame = scores.melt(id_vars=["strategy", "fraction", "seed"], value_vars=list(METRICS), var_name="metric")
    return frame.assign(task=model, finetuned=False, primary=frame["metric"] == METRICS[0]).sort_values(
        ["metric", "strategy", "fraction", "seed"], ignore_index=True
    )


def with_primary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``frame`` (from :func:`long_scores`) with ``metric`` marked as the primary one."""
    return frame.assign(primary=frame["metric"] == metric)


def comparisons(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """Paired t tests over seeds at each fraction, for BLEU and for chrF (column ``metric``): every strategy
    against ``random`` and the :data:`PAIRS`; ``mean_diff`` > 0: the first strategy keeps the higher score."""
    frame = long_scores(scores, model)
    parts = []
    for metric in METRICS:
        table = paired_comparisons(with_primary(frame, metric), pairs=PAIRS)
        parts.append(table.assign(metric=metric).drop(columns=["finetuned"], errors="ignore"))
    table = pd.concat(parts, ignore_index=True).rename(columns={"task": "model"})
    first = ["model", "metric", "fraction", "strategy", "against"]
    return table[first + [c for c in table.columns if c not in first]]
