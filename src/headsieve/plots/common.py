"""Shared figure helpers: headless backend, consistent style, deterministic PNG + PDF output."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from headsieve.io.atomic import atomic_path  # noqa: E402

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "svg.hashsalt": "headsieve",
        "pdf.compression": 6,
    }
)


def save(fig, stem: str | os.PathLike) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf atomically, without timestamps (same data, same bytes)."""
    stem = Path(stem)
    out = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=meta, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def grid(n: int, cols: int = 4, size: tuple[float, float] = (3.0, 2.6)):
    rows = max(1, -(-n // cols))
    cols = min(cols, max(n, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)
