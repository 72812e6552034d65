"""Translation figures: BLEU/chrF against the share of heads pruned, strategy comparisons, and layer x head
maps of gate importance and role scores for each attention kind."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.models.headspace import KINDS
from headsieve.plots.common import grid, save
from headsieve.plots.pruning import comparison_map, metric_curves
from headsieve.translation.report import with_primary

KIND_NAMES = {"encoder": "encoder self-attention", "decoder": "decoder self-attention", "cross": "cross-attention"}


def score_curves(scores_long: pd.DataFrame, metric: str, stem, title: str):
    """``metric`` (bleu or chrf) against the share of heads pruned, one line per strategy (mean over seeds,
    band min to max); ``scores_long`` from :func:`headsieve.translation.report.long_scores`."""
    return metric_curves(with_primary(scores_long, metric), stem, title)


def strategy_comparisons(table: pd.DataFrame, metric: str, stem, title: str):
    """Mean paired difference of ``metric`` to the compared strategy at each fraction (* p < 0.05)."""
    sub = table[table["metric"] == metric].assign(finetuned=False)
    return comparison_map(sub, stem, f"{title}: {metric}")


def _head_matrix(frame: pd.DataFrame, value: str) -> np.ndarray:
    layers, heads = int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1
    out = np.full((layers, heads), np.nan)
    out[frame["layer"].to_numpy(), frame["head"].to_numpy()] = frame[value].to_numpy(dtype=float)
    return out


def head_maps(panels: list[tuple[str, pd.DataFrame]], value: str, stem, title: str, label: str, centre=None):
    """One layer x head heatmap per panel ``(name, rows with layer, head, value)``, one shared colour scale;
    with ``centre``, a diverging scale symmetric around it."""
    panels = [(name, frame) for name, frame in panels if not frame.empty]
    matrices = [_head_matrix(frame, value) for _, frame in panels]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices]) if matrices else np.array([])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = "viridis"
    if centre is not None:
        reach = max(abs(vmin - centre), abs(vmax - centre)) or 1.0
        vmin, vmax, cmap = centre - reach, centre + reach, "RdBu_r"
    fig, axes = grid(len(panels), cols=min(3, max(len(panels), 1)), size=(3.4, 2.8))
    img = None
    for ax, (name, _), matrix in zip(axes, panels, matrices):
        img = ax.imshow(matrix, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_title(name)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        ax.tick_params(labelsize=7)
    if img is not None:
        fig.colorbar(img, ax=axes[: len(panels)], shrink=0.8).set_label(label)
    fig.suptitle(title)
    return save(fig, stem)


def importance_maps(importance: pd.DataFrame, stem, title: str):
    """Gate importance of every head, one panel per attention kind."""
    panels = [(KIND_NAMES[kind], importance[importance["kind"] == kind]) for kind in KINDS]
    label = "importance (L2-normalised per layer)"
    return head_maps(panels, "importance", stem, f"{title}: head importance (|dL/dgate|)", label)


def role_maps(roles: pd.DataFrame, stem, title: str):
    """Mean role score of every head (log2; 0 = no more attention on the targets than uniform), one panel per
    attention kind and role."""
    frame = roles.assign(log_score=np.log2(np.clip(roles["score"].to_numpy(dtype=float), 1 / 16, 64)))
    panels = []
    for kind in KINDS:
        for role in sorted(frame.loc[frame["kind"] == kind, "role"].astype(str).unique()):
            sub = frame[(frame["kind"] == kind) & (frame["role"].astype(str) == role)]
            panels.append((f"{KIND_NAMES[kind]}: {role}", sub))
    label = "mean role score (log2; 0 = uniform)"
    return head_maps(panels, "log_score", stem, f"{title}: head roles", label, centre=0.0)
