"""Figure of the separation matrix (planted role x tested role -> label rate), from its tidy table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.plots.common import plt, save
from headsieve.roles.separation import matrix_for_figure, shown


def separation_figure(matrix: pd.DataFrame, stem, min_strength: float = 0.5):
    """Heat map of label rates; expected cells (planted role or a role containing it) outlined."""
    table = matrix_for_figure(matrix, min_strength)
    strong = shown(matrix, min_strength)
    expected = strong.groupby(["planted", "role"], observed=True)["expected"].any().unstack("role")
    expected = expected.reindex(index=table.index, columns=table.columns).fillna(False).astype(bool)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * table.shape[1], 1.0 + 0.4 * table.shape[0]))
    values = table.to_numpy(dtype=float)
    image = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isnan(values[i, j]):
                ax.text(j, i, "-", ha="center", va="center", fontsize=7, color="grey")
                continue
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > 0.6 else "black")  # fmt: skip
            if expected.iloc[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="darkorange", lw=1.5))
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("tested role")
    ax.set_ylabel("planted head")
    ax.set_title(f"Label rate: single roles at >= {min_strength:g} of each row, mixtures (outlined: expected)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return save(fig, stem)
