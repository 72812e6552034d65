"""Pruning figures: metric against fraction pruned, strategy comparisons, compensation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scipy import stats

from headsieve.plots.common import plt, save
from headsieve.pruning.report import with_unpruned, panel_keys, primary, with_protocol


def _panel_name(keys: list[str], values) -> str:
    """A panel title from its protocol (and finetuned state)."""
    values = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
    protocol = str(values["protocol"])
    name = protocol.replace("_", " ")
    if "finetuned" in values and protocol == "finetune_then_prune":
        name += ": pruned, then fine-tuned further" if values["finetuned"] else ": masked, no further training"
    elif values.get("finetuned"):
        name += " (finetuned)"
    return name


def mean_ci(values: pd.Series, level: float = 0.95) -> pd.Series:
    """Mean and two-sided t interval of the mean (the interval is the mean itself with fewer than 2 values)."""
    v = values.to_numpy(dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return pd.Series({"mean": mean, "low": mean, "high": mean, "n": len(v)})
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return pd.Series({"mean": mean, "low": mean - half, "high": mean + half, "n": len(v)})


def metric_curves(evaluations: pd.DataFrame, stem, title: str):
    """Primary metric against the share of heads pruned, one line per strategy (mean over seeds), band = 95%
    t confidence interval of the mean over seeds; one panel per protocol (and finetuned state)."""
    frame = with_unpruned(primary(evaluations))
    metric = frame["metric"].iloc[0]
    keys = panel_keys(frame)
    panels = [(values, _panel_name(keys, values)) for values, _ in frame.groupby(keys, observed=True, sort=True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False, sharey=True, layout="constrained")
    colours = plt.get_cmap("tab20")
    strategies = sorted(frame["strategy"].unique())
    for ax, (values, name) in zip(axes[0], panels):
        values = values if isinstance(values, tuple) else (values,)
        sub = frame[np.logical_and.reduce([frame[k] == v for k, v in zip(keys, values)])]
        for k, strategy in enumerate(strategies):
            s = sub[sub["strategy"] == strategy]
            if s.empty:
                continue
            g = s.groupby("fraction")["value"].apply(mean_ci).unstack().reset_index()
            ax.plot(g["fraction"], g["mean"], marker="o", ms=3, label=strategy, color=colours(k % 20))
            ax.fill_between(g["fraction"], g["low"].astype(float), g["high"].astype(float), alpha=0.15, color=colours(k % 20))
        if len(panels) > 1 or "protocol" in evaluations.columns:  # a table without protocols: one panel, no title
            ax.set_title(name)
        ax.set_xlabel("share of heads pruned")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    seeds = frame["seed"].nunique()
    fig.suptitle(f"{title}: {metric} by strategy (lines: mean over {seeds} seeds; bands: 95% t interval of the mean)")
    return save(fig, stem)


def comparison_map(comparisons: pd.DataFrame, stem, title: str, note: str = ""):
    """Mean paired difference to the comparison strategy at each fraction with its 95% interval over seeds,
    one panel per protocol (and finetuned state); * where the corrected p (``p_adj``; ``p`` in tables without
    it) is below alpha.  ``note``: a line under the title (e.g. the minimal detectable difference)."""
    table = with_protocol(comparisons)
    keys = panel_keys(table)
    p_col = "p_adj" if "p_adj" in table.columns else "p"
    alpha = float(table["alpha"].iloc[0]) if "alpha" in table.columns and len(table) else 0.05
    correction = str(table["correction"].iloc[0]) if "correction" in table.columns and len(table) else "none"
    table = table.assign(row=table["strategy"] + " vs " + table["against"])
    groups = list(table.groupby(keys, observed=True, sort=True)) or [((), table)]
    rows = sorted(table["row"].unique())
    fractions = sorted(table["fraction"].unique())
    width = max(5.0, 2.6 + 1.1 * len(fractions))
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), max(2.8, 1.3 + 0.42 * len(rows))),
                             squeeze=False, layout="constrained")  # fmt: skip
    limit = float(np.nanmax(np.abs(table["mean_diff"].to_numpy(dtype=float)))) if len(table) else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    for ax, (values, sub) in zip(axes[0], groups):
        wide = sub.pivot_table(index="row", columns="fraction", values="mean_diff").reindex(index=rows, columns=fractions)
        img = ax.imshow(wide.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        cells = sub.set_index(["row", "fraction"])
        for i, row in enumerate(rows):
            for j, fraction in enumerate(fractions):
                if (row, fraction) not in cells.index:
                    continue
                c = cells.loc[(row, fraction)]
                c = c.iloc[0] if isinstance(c, pd.DataFrame) else c
                if not np.isfinite(c["mean_diff"]):
                    continue
                star = "*" if np.isfinite(c[p_col]) and c[p_col] < alpha else ""
                text = f"{c['mean_diff']:+.3f}{star}"
                if "ci_low" in c and np.isfinite(c["ci_low"]):
                    text += f"\n[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                ax.text(j, i, text, ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(fractions)), [f"{f:.2f}" for f in fractions])
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel("share of heads pruned")
        if len(groups) > 1:
            ax.set_title(_panel_name(keys, values), fontsize=8)
    fig.colorbar(img, ax=axes[0][-1]).set_label("mean paired difference")
    head = f"{title}: paired over seeds, mean difference [95% t interval]; * {p_col} < {alpha:g}"
    if p_col == "p_adj":
        head += f" ({correction}-corrected across the comparisons of the table)"
    fig.suptitle(head + (f"\n{note}" if note else ""), fontsize=9)
    return save(fig, stem)


def _fmt_p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


def compensation_figure(heads: pd.DataFrame, summary: pd.DataFrame, stem, title: str):
    """Per strategy (columns): how much each remaining head's attention changed (JSD), by layer; top row
    against the unpruned model retrained alike, bottom row against the same pruned model before retraining.
    Grey: layers that lost heads; the titles give the Gini coefficient, the share of the change in them and the
    permutation test of whether the change differs between layers (one p per seed, from the summary table)."""
    strategies = sorted(heads["strategy"].unique())
    rows = [("jsd", "vs unpruned, retrained alike"), ("jsd_retraining", "vs itself before retraining")]
    fig, axes = plt.subplots(2, len(strategies), figsize=(3.6 * len(strategies), 6.4), squeeze=False, layout="constrained")
    for row, (measure, label) in enumerate(rows):
        for ax, strategy in zip(axes[row], strategies):
            sub = heads[heads["strategy"] == strategy]
            layers = sorted(sub["layer"].unique())
            for layer in sorted(set(sub.loc[sub["pruned"], "layer"])):
                ax.axvspan(layer - 0.45, layer + 0.45, color="0.9")
            alive = sub[~sub["pruned"]]
            jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(alive))
            ax.scatter(alive["layer"] + jitter, alive[measure], s=8, alpha=0.6)
            means = alive.groupby("layer")[measure].mean()
            ax.plot(means.index, means.values, color="black", lw=1)
            s = summary[(summary["strategy"] == strategy) & (summary["measure"] == measure)]
            note = ""
            if not s.empty:
                note = (f"Gini {s['gini'].mean():.2f}; in pruned layers {s['share_in_pruned_layers'].mean():.0%}"
                        f" of change, {s['heads_share_in_pruned_layers'].mean():.0%} of heads")  # fmt: skip
                if "p_layers_differ" in s.columns:
                    ps = ", ".join(_fmt_p(v) for v in s.sort_values("seed")["p_layers_differ"]) if "seed" in s.columns else ""
                    note += f"\npermutation p, layers differ (per seed): {ps}"
            ax.set_title(f"{strategy}\n{note}", fontsize=8)
            ax.set_xlabel("layer")
            ax.set_xticks(layers)
        axes[row][0].set_ylabel(f"JSD of a remaining head\n{label}")
    fig.suptitle(f"{title}: where the remaining heads changed after pruning and fine-tuning (grey: layers that lost heads)")
    return save(fig, stem)
