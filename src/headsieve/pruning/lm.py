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
"""

from __future__ import annotations

import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.pruning.importance import gate_importance
from headsieve.pruning.report import DEFAULT_CORRECTION, paired_comparisons
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
    missing = [c for c in EVALUATION_COLUMNS + tuple(keys) if c not in evaluations.columns]
    if missing:
        raise HeadsieveError(f"evaluation rows lack column(s) {', '.join(missing)} (need {', '.join(EVALUATION_COLUMNS)})")
    panel = list(keys) + ["metric"]
    frame = evaluations.copy()
    codes, uniques = pd.MultiIndex.from_frame(frame[panel].astype(str)).factorize()
    frame = frame.assign(task=codes, primary=True, protocol="lm")
    table = paired_comparisons(frame, baseline, pairs, correction, alpha, power)
    names = pd.DataFrame(list(uniques), columns=panel)
    table = names.iloc[table["task"].to_numpy()].reset_index(drop=True).join(table.drop(columns=["task", "protocol"]))
    return table
