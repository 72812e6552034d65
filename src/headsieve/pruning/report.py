"""Tables built on the pruning evaluations: paired strategy comparisons with confidence intervals, corrected
p values and the smallest difference the design can detect (and the curves' unpruned start).

Every comparison pairs two strategies over the seeds they share, at one task, protocol, fraction (and
``finetuned`` state, where the table has one): the per-seed differences ``d_s = value(strategy) -
value(against)`` are the sample.  Reported per row:

* ``seeds`` (n), ``mean_diff``, ``sd_diff`` (sample sd, ddof 1);
* ``ci_low``, ``ci_high``: the two-sided ``1 - alpha`` t interval ``mean +- t(1 - alpha/2, n-1) sd / sqrt(n)``;
* ``t``, ``df``, ``p``: the two-sided paired t test;
* ``p_adj`` and ``correction``: ``p`` corrected across EVERY comparison of the table (one family: all tasks,
  protocols, fractions and pairs), by Holm (default) or Benjamini-Hochberg (``bh``);
* ``alpha``, ``power``, ``mdd``: the minimal detectable difference, the true mean difference that the
  two-sided paired t test at ``alpha`` (uncorrected) with these n seeds finds with probability ``power``,
  given the observed sd of the differences (``statsmodels.stats.power.TTestPower``: effect size times
  ``sd_diff``).

With fewer than 2 seeds, or differences that do not vary (sd 0: no evidence of a spread, not certainty),
the interval, t, p, p_adj and mdd are NaN; such rows are not part of the corrected family.

Why Holm by default: the README and the figures read individual comparisons as findings, so the guarantee
wanted is that no claim in the table is false with probability above alpha (family-wise error), and Holm
gives it under any dependence between comparisons (they share seeds and the random baseline).  ``bh``
controls the false discovery rate instead (valid under positive dependence): more power for a screen.

Evaluations without a ``protocol`` column are of the ``finetune_then_prune`` protocol (heads masked in the
fine-tuned model).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy import stats

from headsieve.errors import HeadsieveError
from headsieve.io.markdown import table_lines

#: strategy pairs the seed study compares, besides every strategy against random
PAIRS = (("consecutive", "spread"), ("top", "bottom"), ("top_bottom", "middle"))

#: the protocol of evaluations that do not name one (Michel et al.: mask heads of the fine-tuned model)
DEFAULT_PROTOCOL = "finetune_then_prune"

#: correction name -> statsmodels ``multipletests`` method
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}

#: the default correction (see the module docstring for the reason)
DEFAULT_CORRECTION = "holm"


def primary(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Rows of the task's primary metric only."""
    return evaluations[evaluations["primary"]].copy()


def with_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``protocol`` column (:data:`DEFAULT_PROTOCOL` where it has none)."""
    if "protocol" in frame.columns:
        return frame
    return frame.assign(protocol=DEFAULT_PROTOCOL)


def panel_keys(frame: pd.DataFrame) -> list[str]:
    """The columns that split evaluations into separate curves and comparison families: ``protocol`` and,
    where present, ``finetuned``."""
    return ["protocol"] + (["finetuned"] if "finetuned" in frame.columns else [])


def with_unpruned(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every strategy the unpruned (fraction 0) value of its seed, so that curves start at 0."""
    frame = with_protocol(frame)
    zero = frame[frame["fraction"] == 0]
    if zero.empty:
        return frame
    keys = panel_keys(frame)
    parts = [frame[frame["fraction"] > 0]]
    for strategy in frame.loc[frame["fraction"] > 0, "strategy"].unique():
        for _, base in zero.groupby(keys, observed=True, sort=True):
            base = base.drop_duplicates(["task", "seed", "metric"])
            parts.append(base.assign(strategy=strategy))
    return pd.concat(parts, ignore_index=True)


def check_correction(correction: str) -> str:
    """``correction`` if it is a known name (holm, bh), else a one-line error."""
    if correction not in CORRECTIONS:
        raise HeadsieveError(f"multiple-test correction '{correction}' is not one of {', '.join(CORRECTIONS)}")
    return correction


def minimal_detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true mean paired difference that a two-sided paired t test at ``alpha`` with ``n`` pairs detects
    with probability ``power``, for differences of sd ``sd`` (NaN with n < 2 or sd not positive)."""
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return float("nan")
    return _detectable_effect(int(n), float(alpha), float(power)) * float(sd)


@functools.lru_cache(maxsize=256)
def _detectable_effect(n: int, alpha: float, power: float) -> float:
    """The standardised effect (mean / sd of the differences) of :func:`minimal_detectable_difference`."""
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(np.asarray(effect).reshape(-1)[0])


def paired_difference(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The statistics of one comparison (see the module docstring) from paired values ``a`` and ``b``."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    mean = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n >= 2 else float("nan")
    out = {"seeds": n, "mean_diff": mean, "sd_diff": sd, "ci_low": np.nan, "ci_high": np.nan, "t": np.nan,
           "df": n - 1 if n >= 2 else np.nan, "p": np.nan}  # fmt: skip
    if n >= 2 and sd > 0:
        se = sd / np.sqrt(n)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
        t = mean / se
        out.update(ci_low=mean - half, ci_high=mean + half, t=t, p=float(2 * stats.t.sf(abs(t), n - 1)))
    out["mdd"] = minimal_detectable_difference(n, sd, alpha, power)
    return out


def adjust(p: pd.Series, correction: str = DEFAULT_CORRECTION) -> pd.Series:
    """``p`` corrected as one family (NaN stays NaN and is not counted)."""
    from statsmodels.stats.multitest import multipletests

    method = CORRECTIONS[check_correction(correction)]
    out = pd.Series(np.nan, index=p.index, dtype=float)
    finite = p.notna()
    if finite.any():
        out[finite] = multipletests(p[finite].to_numpy(dtype=float), method=method)[1]
    return out


def paired_comparisons(
    evaluations: pd.DataFrame,
    baseline: str = "random",
    pairs=PAIRS,
    correction: str = DEFAULT_CORRECTION,
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Paired comparisons over seeds at each fraction: every strategy against ``baseline`` and the study's
    ``pairs``, within each task, protocol (and ``finetuned`` state, where present).

    Columns: task, protocol, [finetuned,] fraction, strategy, against, seeds, mean_diff (strategy - against),
    sd_diff, ci_low, ci_high, t, df, p, p_adj, correction, alpha, power, mdd (module docstring).
    """
    check_correction(correction)
    frame = with_protocol(primary(evaluations))
    frame = frame[frame["fraction"] > 0]
    keys = ["task"] + panel_keys(frame) + ["fraction"]
    rows = []
    for group, sub in frame.groupby(keys, observed=True, sort=True):
        wide = sub.pivot_table(index="seed", columns="strategy", values="value")
        for a, b in [(s, baseline) for s in wide.columns if s != baseline] + list(pairs):
            if a not in wide or b not in wide:
                continue
            both = wide[[a, b]].dropna()
            row = dict(zip(keys, group))
            row.update(strategy=a, against=b)
            row.update(paired_difference(both[a].to_numpy(), both[b].to_numpy(), alpha, power))
            rows.append(row)
    columns = keys + ["strategy", "against", "seeds", "mean_diff", "sd_diff", "ci_low", "ci_high", "t", "df", "p"]
    table = pd.DataFrame(rows, columns=columns + ["mdd"])
    if "finetuned" in table.columns:
        table["finetuned"] = table["finetuned"].astype(bool)
    table["fraction"] = table["fraction"].astype(float)
    table["seeds"] = table["seeds"].astype(int)
    table["p_adj"] = adjust(table["p"], correction)
    table["correction"] = correction
    table["alpha"] = float(alpha)
    table["power"] = float(power)
    return table[columns + ["p_adj", "correction", "alpha", "power", "mdd"]]


def _fmt(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "n/a"


def summary_lines(comparisons: pd.DataFrame) -> list[str]:
    """Markdown lines stating, per protocol (and finetuned state), the design's seeds, the minimal detectable
    difference (smallest, median and largest over the comparisons) and how many comparisons hold after the
    correction; all from the comparisons table."""
    if comparisons.empty:
        return ["No comparisons (fewer than two strategies at a fraction above 0)."]
    table = with_protocol(comparisons)
    correction, alpha = str(table["correction"].iloc[0]), float(table["alpha"].iloc[0])
    power = float(table["power"].iloc[0])
    tested = int(table["p"].notna().sum())
    lines = [
        f"{len(table)} comparisons, {tested} with a paired t test; p corrected by {correction} across all "
        f"{tested}; {int((table['p_adj'] < alpha).sum())} with p_adj < {alpha:g}."
    ]
    for group, sub in table.groupby(["task"] + panel_keys(table), observed=True, sort=True):
        name = ", ".join(f"{k}={v}" for k, v in zip(["task"] + panel_keys(table), group))
        seeds = sorted(sub["seeds"].unique())
        mdd = sub["mdd"].dropna()
        held = int((sub["p_adj"] < alpha).sum())
        seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        if mdd.empty:
            detect = "no minimal detectable difference (fewer than 2 seeds or no variation)"
        else:
            detect = (f"minimal detectable difference at power {power:g} (paired t, two-sided alpha {alpha:g}): "
                      f"{_fmt(mdd.min())} to {_fmt(mdd.max())}, median {_fmt(mdd.median())}")  # fmt: skip
        lines.append(f"{name}: {len(sub)} comparisons over {seed_text} seeds; {detect}; {held} with p_adj < {alpha:g}.")
    return lines


#: the compensation tests the summary states, with what a small p means
COMPENSATION_TESTS = (
    ("p_layers_differ", "the change differs between layers"),
    ("p_concentrated", "the change is concentrated in the layers that lost heads"),
    ("p_pruned_share", "the change follows the share of a layer's heads pruned"),
)


def compensation_lines(summary: pd.DataFrame, measures=("jsd", "jsd_retraining"), alpha: float = 0.05) -> list[str]:
    """Markdown lines, per strategy, fraction and measure of the compensation summary table: for each
    permutation test (null: the change is exchangeable across the remaining heads), the p value of every
    seed, how many seeds reject at ``alpha``, and the seeds' p values combined by Fisher's method (the seeds
    are independent fine-tunings; permutation p values are valid, so the combination is too).  A test that
    does not reject is no proof of an even spread."""
    lines = []
    sub = summary[summary["measure"].isin(measures)]
    for (strategy, fraction, measure), rows in sub.groupby(["strategy", "fraction", "measure"], sort=True):
        rows = rows.sort_values("seed")
        parts = []
        for column, meaning in COMPENSATION_TESTS:
            if column not in rows.columns:
                continue
            p = rows[column].to_numpy(dtype=float)
            shown = ", ".join("n/a" if not np.isfinite(v) else f"{v:.3g}" for v in p)
            finite = p[np.isfinite(p)]
            combined = float(stats.combine_pvalues(finite, method="fisher")[1]) if len(finite) else float("nan")
            combined_text = "n/a" if not np.isfinite(combined) else f"{combined:.3g}"
            parts.append(f"{meaning}: p = {shown} ({int(np.sum(p < alpha))} of {len(p)} seeds < {alpha:g}; "
                         f"Fisher combined p = {combined_text})")  # fmt: skip
        lines.append(f"compensation, {strategy} at {fraction:g}, {measure}: " + "; ".join(parts) + ".")
    return lines


def curve_table(evaluations: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The primary metric per task, protocol, strategy and fraction over seeds: n seeds, mean, sd and the
    two-sided ``1 - alpha`` t interval of the mean (NaN with fewer than 2 seeds).  Fraction 0 is the unpruned
    model (the same for every strategy of a seed, so it appears once, as strategy ``none``)."""
    frame = with_protocol(primary(evaluations))
    zero = frame["fraction"] == 0
    frame.loc[zero, "strategy"] = "none"
    frame = frame.drop_duplicates(["task", "protocol", "strategy", "fraction", "seed", "metric"])
    keys = ["task", "protocol", "metric", "strategy", "fraction"]
    out = frame.groupby(keys, sort=True, observed=True)["value"].agg(seeds="count", mean="mean", sd="std").reset_index()
    n = out["seeds"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1)) * out["sd"].to_numpy() / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def _interval(low: float, high: float) -> str:
    return "" if np.isnan(low) else f" [{_fmt(low)}, {_fmt(high)}]"


def results_markdown(evaluations: pd.DataFrame, comparisons: pd.DataFrame, title: str, alpha: float = 0.05) -> list[str]:
    """Markdown of the run's results, every figure taken from the two tables: the unpruned baseline (mean, sd
    and range over seeds), the metric per protocol, strategy and fraction with its interval, and every
    comparison with its mean difference, interval, corrected p and minimal detectable difference."""
    curves = curve_table(evaluations, alpha)
    level = f"{1 - alpha:.0%}"
    lines = [f"# Pruning: {title}", ""]
    base = with_protocol(primary(evaluations))
    base = base[base["fraction"] == 0].drop_duplicates(["task", "seed", "metric"])
    for (task, metric), sub in base.groupby(["task", "metric"], sort=True):
        values = sub.sort_values("seed")["value"]
        sd = f", sd {_fmt(values.std(ddof=1))}" if len(values) > 1 else ""
        lines.append(
            f"- unpruned baseline ({task}, {metric}, {len(values)} seeds {', '.join(map(str, sorted(sub['seed'])))}): "
            f"mean {_fmt(values.mean())}{sd}, range {_fmt(values.min())} to {_fmt(values.max())}"
        )
    lines += ["", f"## {metric_name(curves)} by share of heads pruned (mean over seeds, {level} t interval)", ""]
    for (task, protocol, metric), sub in curves.groupby(["task", "protocol", "metric"], sort=True):
        fractions = sorted(sub["fraction"].unique())
        lines += [f"{task}, {protocol}:", "", "| strategy | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
                  "|---|" + "---:|" * len(fractions)]  # fmt: skip
        for strategy, rows in sub.groupby("strategy", sort=False):
            cells = {r.fraction: f"{_fmt(r.mean)}{_interval(r.ci_low, r.ci_high)}" for r in rows.itertuples()}
            lines.append(f"| {strategy} | " + " | ".join(cells.get(f, "") for f in fractions) + " |")
        lines.append("")
    if not comparisons.empty:
        table = with_protocol(comparisons)
        first = table.iloc[0]
        lines += [
            f"## Paired comparisons (difference of means over seeds, {level} t interval, p corrected by "
            f"{first['correction']} across all {int(table['p'].notna().sum())} tests; mdd = smallest difference "
            f"detectable with power {float(first['power']):g})",
            "",
        ]
        header = ["task", "protocol", "fraction", "strategy", "against", "seeds", "difference", "p", "p_adj", "mdd"]
        rows = [[r.task, r.protocol, f"{r.fraction:.0%}", r.strategy, r.against, r.seeds,
                 f"{_fmt(r.mean_diff)}{_interval(r.ci_low, r.ci_high)}", "" if np.isnan(r.p) else f"{r.p:.3g}",
                 "" if np.isnan(r.p_adj) else f"{r.p_adj:.3g}", "" if np.isnan(r.mdd) else _fmt(r.mdd)]
                for r in table.itertuples()]  # fmt: skip
        lines += table_lines(header, "llrllrrrrr", rows) + [""]
    return lines


def metric_name(curves: pd.DataFrame) -> str:
    metrics = sorted(curves["metric"].unique())
    return " / ".join(metrics).capitalize() if metrics else "Metric"
