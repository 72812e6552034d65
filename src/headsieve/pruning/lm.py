"""Pruning decoder-only language models (issue 17): head importance from the language-model loss, and the
paired comparisons of the pruning curves (perplexity, copying loss, retrieval accuracy against the share of
heads pruned).

* :func:`lm_importance`: Michel et al. importance ``{kind: [layers, heads]}`` of a causal LM, the gradient
  of its language-model loss with respect to head gates (:func:`headsieve.pruning.importance.gate_importance`
  over :func:`headsieve.tasks.lm.lm_batches`), for the ``importance`` strategy.
* :func:`lm_comparisons`: per metric and fraction, every strategy against ``random`` (and optional pairs),
  paired over the seeds both have: the statistics of :func:`headsieve.pruning.report.paired_comparisons`
  (mean difference strategy - against, its two-sided t interval, paired t test, p corrected across EVERY
  comparison of the table (all metrics, fractions and strategies: one family), minimal detectable difference
  at the given power).  A metric where lower is better (NLL, perplexity) gives positive differences when the
  strategy harms more than random.
* :func:`lm_curves`: the curves themselves, per metric, strategy and fraction over seeds (n seeds, mean, sd,
  two-sided t interval: :func:`headsieve.pruning.report.curve_table`); fraction 0, the unpruned model, once
  as strategy ``none``.
"""

from __future__ import annotations

import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.pruning.importance import gate_importance
from headsieve.pruning.report import DEFAULT_CORRECTION, curve_table, paired_comparisons
from headsieve.tasks.lm import lm_batches

#: columns of the evaluation rows :func:`lm_comparisons` reads
EVALUATION_COLUMNS = ("strategy", "fraction", "seed", "metric", "value")


def lm_importance(model, sequences, *, batch_size: int = 8, device=None, normalise: bool = True) -> dict:
    """Head importance ``{kind: [layers, heads]}`` (float64, non-negative) from the language-model loss on
    token id ``sequences`` (held-out text, never the evaluation sequences): the mean over batches of
    ``|dL/dgate|``, each layer's row divided by its L2 norm if ``normalise``."""
    return gate_importance(model, lm_batches(sequences, batch_size), device, normalise, "language-model sequences")


def lm_comparisons(
    evaluations: pd.DataFrame,
    baseline: str = "random",
    pairs=(),
    keys=(),
    correction: str = DEFAULT_CORRECTION,
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Paired comparisons of per-seed evaluation rows (module docstring).

    ``evaluations``: columns strategy, fraction, seed, metric, value (and ``keys``, e.g. model or corpus,
    that split curves); rows at fraction 0 are ignored.  Returns columns keys, metric, fraction, strategy,
    against, seeds, mean_diff, sd_diff, ci_low, ci_high, t, df, p, mdd, p_adj, correction, alpha, power."""
    frame, names = _as_tasks(evaluations, list(keys) + ["metric"])
    table = paired_comparisons(frame, baseline, pairs, correction, alpha, power)
    return _named(table, names)


def lm_curves(evaluations: pd.DataFrame, keys=(), alpha: float = 0.05) -> pd.DataFrame:
    """Per metric, strategy and fraction over seeds: columns keys, metric, strategy, fraction, seeds, mean, sd,
    ci_low, ci_high (module docstring)."""
    frame, names = _as_tasks(evaluations, list(keys) + ["metric"])
    table = curve_table(frame.assign(metric=frame["task"]), alpha)
    return _named(table.drop(columns=["metric"]), names)


def _as_tasks(evaluations: pd.DataFrame, panel: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows as pruning.report reads them: one ``task`` code per (keys, metric) panel, every row primary,
    one protocol; and the panel names of each code."""
    panel = list(panel)
    missing = [c for c in list(EVALUATION_COLUMNS) + panel if c not in evaluations.columns]
    if missing:
        raise HeadsieveError(f"evaluation rows lack column(s) {', '.join(missing)} (need {', '.join(EVALUATION_COLUMNS)})")
    codes, uniques = pd.MultiIndex.from_frame(evaluations[panel].astype(str)).factorize()
    frame = evaluations.assign(task=codes, primary=True, protocol="lm")
    return frame, pd.DataFrame(list(uniques), columns=panel)


def _named(table: pd.DataFrame, names: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``task`` codes replaced by the panel's columns (in front), without ``protocol``."""
    front = names.iloc[table["task"].to_numpy()].reset_index(drop=True)
    return front.join(table.drop(columns=["task", "protocol"]).reset_index(drop=True))
