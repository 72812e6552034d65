"""Figures of decoder-only language models (issue 17): the causal role map per layer x query head, and the
evaluation measures (perplexity, copying loss, retrieval accuracy) against the share of heads pruned."""

from __future__ import annotations

import pandas as pd

from headsieve.plots.common import plt, save
from headsieve.plots.pruning import mean_ci
from headsieve.plots.roles import role_maps
from headsieve.roles.registry import role_names

#: axis labels of the evaluation measures
METRIC_LABELS = {
    "perplexity": "perplexity (held-out text)",
    "copying_loss": "copying loss (NLL of the second copy, nats)",
    "retrieval_accuracy": "retrieval accuracy (needles reproduced)",
    "retrieval_token_accuracy": "retrieval token accuracy (needle tokens predicted)",
}


def causal_role_map(tests: pd.DataFrame, stem, title: str):
    """One panel per causal role present (registry order): every query head's mean score (colour; layer x
    head), heads labelled with the role ringed."""
    present = set(tests["role"].astype(str))
    roles = [r for r in role_names("causal") if r in present]
    # Wu et al.'s retrieval score (form top1) is a share of copied tokens in [0, 1]: drawn on the mass scale
    shares = tests.assign(form=tests["form"].astype(str).replace({"top1": "mass"})) if "form" in tests else tests
    return role_maps(shares, roles, stem, title, empty_note="no causal role scores")


def metric_curve(evaluations: pd.DataFrame, metric: str, stem, title: str, level: float = 0.95):
    """``metric`` against the share of heads pruned, one line per strategy (mean over seeds; band: the
    two-sided ``level`` t interval of the mean over seeds); the unpruned model (share 0) starts every line."""
    frame = evaluations[evaluations["metric"] == metric]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), layout="constrained")
    if frame.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {metric} evaluations", ha="center", va="center")
        ax.set_title(title)
        return save(fig, stem)
    zero = frame[frame["fraction"] == 0].drop_duplicates(["seed"])
    colours = plt.get_cmap("tab10")
    strategies = sorted(frame.loc[frame["fraction"] > 0, "strategy"].unique())
    for k, strategy in enumerate(strategies):
        pruned = frame[(frame["strategy"] == strategy) & (frame["fraction"] > 0)]
        line = pd.concat([zero.assign(strategy=strategy), pruned])
        g = line.groupby("fraction")["value"].apply(mean_ci, level=level).unstack().reset_index()
        ax.plot(g["fraction"], g["mean"], marker="o", ms=3, label=strategy, color=colours(k % 10))
        low, high = g["low"].astype(float), g["high"].astype(float)
        ax.fill_between(g["fraction"], low, high, alpha=0.15, color=colours(k % 10))
    if metric == "perplexity" and frame["value"].max() > 4 * max(frame["value"].min(), 1e-9):
        ax.set_yscale("log")
    ax.set_xlabel("share of query heads pruned (masked)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    seeds = frame["seed"].nunique()
    ax.set_title(f"{title}\nlines: mean over {seeds} seeds; bands: {level:.0%} t interval of the mean", fontsize=9)
    return save(fig, stem)

