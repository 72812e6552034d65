"""Segment sums of rows, the same numbers as ``np.add.reduceat(values, starts, axis=0)``, many times faster.

The role scores sum the attention of every head over contiguous runs of rows (the targets of a query,
the queries of an input).  ``np.add.reduceat`` over axis 0 of a [P, X] float array is slow on short runs:
per run it calls its inner loop once per column.  Its result is, per run of rows ``v_0..v_{L-1}``,
``v_0 + pairwise_sum(v_1..v_{L-1})`` with numpy's pairwise summation in the array's dtype (fewer than 8
terms: in order from 0; up to 128: eight running sums over blocks of 8, combined as
``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the remaining terms in order; more: the two
halves split at a multiple of 8).  :func:`reduceat_rows` computes exactly that, for all runs of one length
at once, so the scores keep their bits (``tests/unit/roles/test_roles_fast_paths.py`` checks it against
``np.add.reduceat`` for every run length up to 300, several widths and both float dtypes).
"""

from __future__ import annotations

import numpy as np


def reduceat_rows(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.add.reduceat(values, starts, axis=0)`` for a 2-D float array and strictly increasing ``starts``
    (every run non-empty); other arrays go to ``np.add.reduceat`` itself."""
    if values.ndim != 2 or values.dtype.kind != "f" or len(starts) == 0 or len(values) == 0:
        return np.add.reduceat(values, starts, axis=0)
    lengths = np.diff(np.r_[starts, len(values)])
    out = np.empty((len(starts), values.shape[1]), dtype=values.dtype)
    for length in np.unique(lengths):
        runs = np.flatnonzero(lengths == length)
        if length == 1:
            out[runs] = values[starts[runs]]
            continue
        block = values[starts[runs][:, None] + np.arange(length)]  # [runs, length, X]
        out[runs] = block[:, 0] + pairwise_sum(block[:, 1:])
    return out


def pairwise_sum(a: np.ndarray) -> np.ndarray:
    """numpy's pairwise summation over axis 1 of a [S, n, X] array, in its dtype: [S, X]."""
    n = a.shape[1]
    if n < 8:
        total = np.zeros((a.shape[0], a.shape[2]), dtype=a.dtype)
        for i in range(n):
            total += a[:, i]
        return total
    if n <= 128:
        r = a[:, :8].copy()
        top = n - n % 8
        for i in range(8, top, 8):
            r += a[:, i : i + 8]
        total = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
        for i in range(top, n):
            total += a[:, i]
        return total
    half = n // 2
    half -= half % 8
    return pairwise_sum(a[:, :half]) + pairwise_sum(a[:, half:])
