"""Role results per key-value group of grouped-query attention (Llama, Qwen2, Mistral, SmolLM2; issue 17).

Query heads ``h`` of a layer share key-value head ``h // group_size``; a group's keys and values go only when
all its query heads go (:func:`headsieve.models.heads.kv_head_map`), so a pruning decision about keys and
values is a decision about groups.  The group's score on an input is the mean of its query heads' scores on
that input (the heads present in the table; NaN scores left out; NaN when none is defined), and the group is
tested as a head is: :func:`headsieve.roles.tests.role_tests` over the per-input group scores (one-sided t
test against the role's tau per score form, confidence interval, correction over every (layer, group, role)
of a family).  Without grouping (``group_size`` 1) the group table is the head table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.roles.tests import role_tests

#: the per-input columns a score table may carry besides the keys, layer, head and role
INPUT_COLUMNS = ("input", "sentence_index")


def kv_group_of(heads, group_size: int) -> np.ndarray:
    """The key-value group of each query head (original indices): ``head // group_size``."""
    if int(group_size) < 1:
        raise HeadsieveError(f"key-value group size {group_size} is not a positive integer")
    return np.asarray(heads, dtype=np.int64) // int(group_size)


def _input_column(scores: pd.DataFrame) -> str:
    for column in INPUT_COLUMNS:
        if column in scores.columns:
            return column
    raise HeadsieveError(f"score table lacks an input column ({' or '.join(INPUT_COLUMNS)}): cannot pair heads per input")


def kv_group_scores(scores: pd.DataFrame, group_size: int | None = None, keys=()) -> pd.DataFrame:
    """Per input, the mean score of each (layer, kv_group, role) over its query heads.

    ``scores``: long per-input per-query-head table with columns ``keys``, an input column (``input`` or
    ``sentence_index``), layer, head, role, score, optionally form and kv_group (else ``head // group_size``).
    Returns columns keys, input column, layer, kv_group, role, [form,] score (mean over the group's heads with
    a defined score), n_heads (heads averaged)."""
    missing = [c for c in ("layer", "head", "role", "score") if c not in scores.columns]
    if missing:
        raise HeadsieveError(f"score table lacks column(s) {', '.join(missing)} (expected the per-head score table)")
    table = scores.copy()
    if group_size is not None:
        table["kv_group"] = kv_group_of(table["head"], group_size)
    elif "kv_group" not in table.columns:
        raise HeadsieveError("score table has no kv_group column; give the key-value group size")
    by = list(keys) + [_input_column(table), "layer", "kv_group", "role"] + (["form"] if "form" in table else [])
    table["role"] = table["role"].astype(str)
    if "form" in table:
        table["form"] = table["form"].astype(str)
    grouped = table.groupby(by, sort=True, observed=True)["score"]
    out = grouped.agg(score="mean", n_heads="count").reset_index()
    out["n_heads"] = out["n_heads"].astype(np.int64)
    return out


def kv_group_tests(
    scores: pd.DataFrame,
    group_size: int | None = None,
    tau: float | None = None,
    alpha: float = 0.05,
    correction: str = "bh",
    keys=(),
    tau_by_role: dict | None = None,
) -> pd.DataFrame:
    """:func:`headsieve.roles.tests.role_tests` over the per-input group scores (:func:`kv_group_scores`).

    Returns role_tests' columns with ``kv_group`` in place of ``head``: keys, layer, kv_group, role, n,
    n_left_out, mean, sd, ci_low, ci_high, t, p, p_adj, label, tau, alpha, correction, form,
    untested_reason.  Each (keys) group is one correction family (all of it when ``keys`` is empty)."""
    groups = kv_group_scores(scores, group_size, keys).rename(columns={"kv_group": "head"})
    family = list(keys)
    if not family:
        groups.insert(0, "_family", 0)
        family = ["_family"]
    tests = role_tests(groups, tau=tau, alpha=alpha, correction=correction, keys=tuple(family), tau_by_role=tau_by_role)
    tests = tests.rename(columns={"head": "kv_group"})
    return tests.drop(columns=["_family"]) if "_family" in tests.columns else tests
