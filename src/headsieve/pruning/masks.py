"""The masks table and the head importance table, for every model (encoder and encoder-decoder alike).

A masks table lists the heads each strategy prunes at each fraction for one seed, one row per head:
columns strategy, fraction, seed, kind, layer, head (:data:`MASK_COLUMNS`).  A (strategy, fraction) that
prunes nothing is one row with kind ``""`` and layer = head = -1.  A fixed-size strategy (``keep_one``,
``layer:L``, ``band``) has one mask, at its own fraction ``round(heads pruned / all heads, 4)``.

An importance table has columns layer, head, importance (and kind for a model with several kinds; an
encoder's table may leave it out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.models.headspace import Head, HeadSpace
from headsieve.pruning.strategies import is_fixed_size, select_heads

MASK_COLUMNS = ["strategy", "fraction", "seed", "kind", "layer", "head"]


def mask_table(
    space: HeadSpace, strategies, fractions, seed: int, labels: pd.DataFrame | None = None, importance: dict | None = None
) -> pd.DataFrame:
    """Heads pruned by every strategy at every fraction for one seed (:data:`MASK_COLUMNS`)."""
    rows = []
    for strategy in strategies:
        if is_fixed_size(strategy):  # its size is its own: one mask, at its own fraction
            heads = select_heads(strategy, space, 0.0, seed, labels=labels, importance=importance)
            rows += _mask_rows(strategy, round(len(heads) / space.n_total, 4), seed, heads)
            continue
        for fraction in fractions:
            heads = select_heads(strategy, space, fraction, seed, labels=labels, importance=importance)
            rows += _mask_rows(strategy, float(fraction), seed, heads)
    frame = pd.DataFrame(rows, columns=MASK_COLUMNS)
    return frame.astype({"fraction": float, "seed": "int32", "layer": "int16", "head": "int16"})


def _mask_rows(strategy: str, fraction: float, seed: int, heads) -> list[tuple]:
    return [(strategy, fraction, seed, k, l, h) for k, l, h in heads] or [(strategy, fraction, seed, "", -1, -1)]


def heads_of(masks: pd.DataFrame, strategy: str, fraction: float | None) -> list[Head]:
    """The ``(kind, layer, head)`` a strategy prunes at ``fraction`` (None: its only mask, a fixed-size
    strategy), in the table's order."""
    rows = masks[masks.strategy == strategy]
    if fraction is not None:
        rows = rows[np.isclose(rows.fraction, fraction)]
    if not len(rows):
        raise HeadsieveError(f"no mask for strategy '{strategy}' at fraction {fraction}")
    if rows["fraction"].nunique() > 1:
        raise HeadsieveError(f"strategy '{strategy}' has masks at several fractions; name the fraction")
    sel = rows[rows.layer >= 0]
    return list(zip(sel["kind"].astype(str).tolist(), sel["layer"].astype(int).tolist(), sel["head"].astype(int).tolist()))


def read_importance(path, space: HeadSpace) -> dict[str, np.ndarray]:
    """``{kind: [layers, heads]}`` from an importance table of a model with head space ``space``; every head
    must be in it (a table without a kind column belongs to a one-kind model)."""
    frame = pd.read_parquet(path)
    if "kind" in frame.columns:
        kinds = frame["kind"].astype(str).to_numpy()
    elif space.single is not None:
        kinds = np.full(len(frame), space.single.kind, dtype=object)
    else:
        raise HeadsieveError(f"{path}: no kind column (a model with kinds {', '.join(space.names)} needs one)")
    out = {kind: np.full(space.shape(kind), np.nan) for kind in space.names}
    for kind, layer, head, value in zip(kinds, frame["layer"].to_numpy(), frame["head"].to_numpy(), frame["importance"].to_numpy()):
        if kind not in out or not (0 <= layer < out[kind].shape[0] and 0 <= head < out[kind].shape[1]):
            where = f"({layer}, {head})" if space.single else f"({kind}, {layer}, {head})"
            raise HeadsieveError(f"{path}: head {where} does not fit the model (importance of another model?)")
        out[kind][layer, head] = value
    for kind, values in out.items():
        if np.isnan(values).any():
            layer, head = np.argwhere(np.isnan(values))[0]
            raise HeadsieveError(f"{path}: no importance for {kind} layer {layer} head {head} (incomplete table)")
    return out
