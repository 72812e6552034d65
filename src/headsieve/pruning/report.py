"""Tables built on the pruning evaluations: paired strategy comparisons (and the curves' unpruned start)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: strategy pairs the seed study compares, besides every strategy against random
PAIRS = (("consecutive", "spread"), ("top", "bottom"), ("top_bottom", "middle"))


def primary(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Rows of the task's primary metric only."""
    return evaluations[evaluations["primary"]].copy()


def _with_unpruned(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every strategy the unpruned (fraction 0) value of its seed, so that curves start at 0."""
    zero = frame[frame["fraction"] == 0]
    if zero.empty:
        return frame
    parts = [frame[frame["fraction"] > 0]]
    for strategy in frame.loc[frame["fraction"] > 0, "strategy"].unique():
        for finetuned in zero["finetuned"].unique():
            base = zero[zero["finetuned"] == finetuned].drop_duplicates(["task", "seed", "metric"])
            parts.append(base.assign(strategy=strategy))
    return pd.concat(parts, ignore_index=True)


def paired_comparisons(evaluations: pd.DataFrame, baseline: str = "random", pairs=PAIRS) -> pd.DataFrame:
    """Paired tests over seeds at each fraction: every strategy against ``baseline`` and the study's ``pairs``.

    Columns: task, finetuned, fraction, strategy, against, seeds, mean_diff (strategy - against), t, p
    (two-sided paired t test; NaN with fewer than 2 seeds or no variation).
    """
    frame = primary(evaluations)
    frame = frame[frame["fraction"] > 0]
    rows = []
    for (task, finetuned, fraction), sub in frame.groupby(["task", "finetuned", "fraction"], observed=True):
        wide = sub.pivot_table(index="seed", columns="strategy", values="value")
        for a, b in [(s, baseline) for s in wide.columns if s != baseline] + list(pairs):
            if a not in wide or b not in wide:
                continue
            both = wide[[a, b]].dropna()
            diff = both[a] - both[b]
            if len(both) >= 2 and diff.std(ddof=1) > 0:
                t, p = stats.ttest_rel(both[a], both[b])
            else:
                t, p = np.nan, np.nan
            rows.append(
                {
                    "task": task, "finetuned": bool(finetuned), "fraction": float(fraction), "strategy": a,
                    "against": b, "seeds": len(both), "mean_diff": float(diff.mean()) if len(both) else np.nan,
                    "t": float(t), "p": float(p),
                }  # fmt: skip
            )
    return pd.DataFrame(rows)
