"""Pruning figures: metric against fraction pruned, strategy comparisons, compensation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.plots.common import plt, save
from headsieve.pruning.report import _with_unpruned, primary


def metric_curves(evaluations: pd.DataFrame, stem, title: str):
    """Primary metric against the share of heads pruned, one line per strategy, band = min..max over seeds;
    left: masked without further training, right: fine-tuned after pruning."""
    frame = _with_unpruned(primary(evaluations))
    metric = frame["metric"].iloc[0]
    panels = [(False, "pruned, no further training"), (True, "pruned, then fine-tuned")]
    panels = [(ft, name) for ft, name in panels if (frame["finetuned"] == ft).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False, sharey=True, layout="constrained")
    colours = plt.get_cmap("tab20")
    strategies = sorted(frame["strategy"].unique())
    for ax, (finetuned, name) in zip(axes[0], panels):
        sub = frame[frame["finetuned"] == finetuned]
        for k, strategy in enumerate(strategies):
            s = sub[sub["strategy"] == strategy]
            if s.empty:
                continue
            g = s.groupby("fraction")["value"].agg(["mean", "min", "max"]).reset_index()
            ax.plot(g["fraction"], g["mean"], marker="o", ms=3, label=strategy, color=colours(k % 20))
            ax.fill_between(g["fraction"], g["min"], g["max"], alpha=0.15, color=colours(k % 20))
        ax.set_title(name)
        ax.set_xlabel("share of heads pruned")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    seeds = frame["seed"].nunique()
    fig.suptitle(f"{title}: {metric} by strategy (lines: mean over {seeds} seeds; bands: min to max)")
    return save(fig, stem)


def comparison_map(comparisons: pd.DataFrame, stem, title: str):
    """Mean paired difference to the comparison strategy at each fraction (masked models); * p < 0.05."""
    sub = comparisons[~comparisons["finetuned"]]
    if sub.empty:
        sub = comparisons
    sub = sub.assign(row=sub["strategy"] + " vs " + sub["against"])
    wide = sub.pivot_table(index="row", columns="fraction", values="mean_diff")
    pvals = sub.pivot_table(index="row", columns="fraction", values="p")
    size = (max(5.0, 2.6 + 0.9 * wide.shape[1]), max(2.6, 1.2 + 0.32 * wide.shape[0]))  # room for the titles
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    limit = float(np.nanmax(np.abs(wide.to_numpy()))) if wide.size else 1.0
    img = ax.imshow(wide.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(wide.shape[0]):
        for j in range(wide.shape[1]):
            v, p = wide.iat[i, j], pvals.iat[i, j] if pvals.shape == wide.shape else np.nan
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.3f}{'*' if p < 0.05 else ''}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(wide.shape[1]), [f"{c:.2f}" for c in wide.columns])
    ax.set_yticks(range(wide.shape[0]), wide.index, fontsize=7)
    ax.set_xlabel("share of heads pruned")
    fig.colorbar(img, ax=ax).set_label("mean paired difference")
    ax.set_title(f"{title}\npaired over seeds (* two-sided paired t test p < 0.05)")
    return save(fig, stem)


def compensation_figure(heads: pd.DataFrame, summary: pd.DataFrame, stem, title: str):
    """Per strategy (columns): how much each remaining head's attention changed (JSD), by layer; top row
    against the unpruned model retrained alike, bottom row against the same pruned model before retraining.
    Grey: layers that lost heads; the titles give the Gini coefficient and the share of the change in them."""
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
            ax.set_title(f"{strategy}\n{note}", fontsize=8)
            ax.set_xlabel("layer")
            ax.set_xticks(layers)
        axes[row][0].set_ylabel(f"JSD of a remaining head\n{label}")
    fig.suptitle(f"{title}: where the remaining heads changed after pruning and fine-tuning (grey: layers that lost heads)")
    return save(fig, stem)
