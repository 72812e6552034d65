"""Positional controls of the syntactic roles: shape-matched decoys and a paired test per head.

Many dependency arcs are short (det, amod and compound mostly join adjacent words in English), so a head
that attends to the next word scores high on those relations without knowing any syntax.  The control
asks, sentence by sentence, whether the head attends to the syntactic head MORE than to words at the same
position relative to the query that are not syntactically linked to it.

Decoys.  For every true (query, target) pair of a syntactic role (``dep2head``: dependent -> head, or the
other directions, exactly as the role's target sets are built), its *shape* is: the signed word offset
``t - q``, the number of pieces of the query word and of the target word, and the signed piece offset
from the query word's first piece to the target word's first piece.  The decoys of a sentence are its
usable word pairs (both words kept with pieces, not inside one surface token: the same rule as the true
targets) that are not joined by a dependency arc in either direction.  A true pair's control value is the
mean, over the decoys of the same sentence with the same shape, of each decoy's attention put in the
score's form (divided by its own query's reference: the uniform reference under ``ratio``, the row mass
under ``mass``), scaled back to the true query's reference.  So a head whose attention depends only on the
relative position of pieces (a next-word or a previous-token head) gives a true pair and its decoys the
same expected value; matching the piece counts also removes the bias of the ``mean`` aggregation against
multi-piece words.  A true pair without a decoy of its shape in its sentence keeps its own value (it adds
no difference); a sentence whose pairs of a role have no decoy at all has no control (NaN) for that role.

The sentence's control score is the role's score form applied to the control values of its pairs (same
queries, same targets per query, same defined queries under ``mass``), so ``score - control`` is the
per-sentence difference "true head minus offset-matched decoys".

Paired test.  Per head and syntactic role, over the sentences with a control: one-sided t test of
H0: mean difference <= 0, corrected within each (model, corpus) family of control tests by the role
tests' correction; ``label_controlled`` = the reference label AND the adjusted paired p < alpha.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from headsieve.roles.sieve import DEFAULT_OPTIONS, Batch, sentence_roles, syntactic_form
from headsieve.roles.segments import reduceat_rows
from headsieve.roles.word_pairs import decoy_pairs
from headsieve.roles.tests import GroupCodes, adjust, t_test_greater

#: columns the control adds to tests.parquet (NaN / False for the roles without a control)
CONTROL_COLUMNS = (
    "control_mean", "diff_n", "diff_mean", "diff_sd", "diff_ci_low", "diff_ci_high",
    "diff_t", "diff_p", "diff_p_adj", "label_controlled",
)  # fmt: skip


# ------------------------------------------------------------------ decoy target sets


def linked_words(heads: np.ndarray) -> np.ndarray:
    """[W, W] bool: a dependency arc joins words a and b (either direction)."""
    n = len(heads)
    linked = np.zeros((n, n), dtype=bool)
    dep = np.flatnonzero(heads > 0)
    linked[dep, heads[dep] - 1] = True
    return linked | linked.T


def decoy_targets(heads: np.ndarray, usable: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[W, W] decoy pairs of one sentence: usable word pairs ``(q, q + d)`` at a signed offset ``d`` of some
    true pair in ``targets`` ([roles, W, W], as :func:`~headsieve.roles.targets.syntactic_targets` builds
    them) and not joined by a dependency arc (so never a true pair of any direction)."""
    q, t = np.nonzero(targets.any(0))
    idx = np.arange(len(heads))
    offset = idx[None, :] - idx[:, None]
    return usable & ~linked_words(heads) & np.isin(offset, np.unique(t - q))


def pair_shapes(batch: Batch, b, q, t) -> np.ndarray:
    """[P] int64 code of (input, word offset, query pieces, target pieces, first-piece offset) of word pairs:
    equal codes, equal shapes in the same input."""
    counts = batch.piece_counts.astype(np.int64)
    first = batch.membership.argmax(-1).astype(np.int64)  # first piece of each word
    W, N = counts.shape[1], batch.A.shape[1]  # |word offset| < W, pieces <= N, |piece offset| < N
    code = np.asarray(b, dtype=np.int64) * (2 * W + 1) + (t - q + W)
    code = (code * (N + 1) + counts[b, q]) * (N + 1) + counts[b, t]
    return code * (2 * N + 1) + (first[b, t] - first[b, q] + N)


# ------------------------------------------------------------------ control scores


def _group_mean(values: np.ndarray, groups: np.ndarray, n_groups: int):
    """Mean of ``values`` [P, X] per group id (float64), and the number of members per group."""
    counts = np.bincount(groups, minlength=n_groups)
    sums = np.zeros((n_groups, values.shape[1]), dtype=np.float64)
    if len(groups):
        order = np.argsort(groups, kind="stable")
        present = np.flatnonzero(counts)
        starts = np.r_[0, np.cumsum(counts[present])[:-1]]
        sums[present] = reduceat_rows(np.asarray(values, dtype=np.float64)[order], starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums / counts[:, None], counts


def control_values(batch: Batch, b, q, t, own, decoys, aggregation: str, reference: np.ndarray):
    """Control value of each true pair (input ``b``, query ``q``, target ``t``; ``own`` [P, X] their word
    attention), in the values' own units, and whether it has decoys of its shape.  ``decoys``: (input,
    query, target) arrays of the decoy pairs."""
    db, dq, dt = decoys
    if len(db) == 0:
        return own, np.zeros(len(b), dtype=bool)
    shapes = np.concatenate([pair_shapes(batch, b, q, t), pair_shapes(batch, db, dq, dt)])
    _, group = np.unique(shapes, return_inverse=True)
    group = group.astype(np.int64)
    true_group, decoy_group = group[: len(b)], group[len(b) :]
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = batch.word_values(db, dq, dt, aggregation) / reference[db, dq]
    means, counts = _group_mean(normalised, decoy_group, int(group.max()) + 1)
    matched = counts[true_group] > 0
    control = np.where(matched[:, None], means[true_group] * reference[b, q], own)
    return control.astype(np.float32), matched


def _control_pairs(batch: Batch, roles: list[str], opts: dict):
    """True pairs of the syntactic roles (shared with their scores: ``Batch.syntactic_pairs``) and the decoy
    pairs (b, q, t) of their sentences."""
    pairs = batch.syntactic_pairs(roles, opts)
    return pairs, decoy_pairs(batch.words, len(batch.facts), batch.piece_counts.shape[1], pairs)


def control_scores(batch: Batch, roles: list[str], opts: dict):
    """Decoy (control) scores of the syntactic ``roles``: (b_s, role index, control [S, X]) in the order and
    form of the role scores; NaN where none of a sentence's pairs of the role has a decoy of its shape."""
    pairs, decoys = _control_pairs(batch, roles, opts)
    if len(pairs) == 0:
        return [], [], []
    b, r, q, t = pairs.b, pairs.r, pairs.q, pairs.t
    aggregation, reference, scorer = syntactic_form(batch, opts)
    own = batch.pair_values(pairs, aggregation)
    values, matched = control_values(batch, b, q, t, own, decoys, aggregation, reference)
    b_s, r_s, scores = scorer(values, b, r, q, t)[:3]
    r_span = len(roles)
    any_matched = np.zeros(int(b.max() + 1) * r_span, dtype=bool)
    np.logical_or.at(any_matched, b * r_span + r, matched)
    scores = np.where(any_matched[b_s * r_span + r_s][:, None], scores, np.nan).astype(np.float32)
    return b_s, r_s, scores


def score_controls(batch: Batch, options: dict | None = None) -> dict[tuple[int, str], np.ndarray]:
    """The control scores [X] of every syntactic role of every input of a batch: {(batch position, role)}."""
    opts = dict(DEFAULT_OPTIONS, **(options or {}))
    roles = sorted({name for f in batch.facts for name in sentence_roles(f, opts)})
    if not roles:
        return {}
    return {(int(b), roles[k]): s for b, k, s in zip(*control_scores(batch, roles, opts))}


# ------------------------------------------------------------------ the paired test


def control_tests(
    scores: pd.DataFrame, alpha: float = 0.05, correction: str = "bh", keys=("model", "corpus")
) -> pd.DataFrame:
    """Paired one-sided test per (keys, layer, head, role) with a control: difference = score - control per
    sentence, H0: mean difference <= 0.  ``scores`` has columns keys + layer, head, role, score, control
    (NaN where there is no control).  Returns one row per group with :data:`CONTROL_COLUMNS` except
    ``label_controlled`` (diff_ci_* the two-sided 1 - alpha interval of the mean difference; diff_p_adj
    adjusted within each (keys) family)."""
    group_cols = list(keys) + ["layer", "head", "role"]
    ok = (scores["control"].notna() & scores["score"].notna()).to_numpy()
    groups = GroupCodes(scores, group_cols, rows=ok)  # grouped by one code per row: roles/tests.py
    control = scores["control"].to_numpy()[ok]
    g = groups.groupby(diff=scores["score"].to_numpy()[ok].astype(float) - control.astype(float), control=control)
    out = groups.frame(g["diff"].agg(diff_n="count", diff_mean="mean", diff_sd="std"))  # ddof 1
    out.insert(len(group_cols), "control_mean", g["control"].mean().to_numpy())
    n = out["diff_n"].to_numpy(dtype=float)
    t, p = t_test_greater(n, out["diff_mean"].to_numpy(), out["diff_sd"].to_numpy(), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(1 - alpha / 2, np.where(n >= 2, n - 1, 1)) * out["diff_sd"].to_numpy() / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["diff_ci_low"], out["diff_ci_high"] = out["diff_mean"] - half, out["diff_mean"] + half
    out["diff_t"], out["diff_p"] = t, p
    out["diff_p_adj"] = np.nan
    for _, idx in out.groupby(list(keys), sort=False, observed=True).groups.items():
        out.loc[idx, "diff_p_adj"] = adjust(out.loc[idx, "diff_p"].to_numpy(), correction)
    return out[group_cols + [c for c in CONTROL_COLUMNS if c != "label_controlled"]]


def add_controls(
    tests: pd.DataFrame, scores: pd.DataFrame, alpha: float = 0.05, correction: str = "bh", keys=("model", "corpus")
) -> pd.DataFrame:
    """``tests`` (as :func:`~headsieve.roles.tests.role_tests` gives them) with the control columns after
    ``label``: the paired test's statistics for the syntactic roles (NaN for the others, and ``diff_n`` 0)
    and ``label_controlled`` = label AND diff_p_adj < alpha (False without a control)."""
    group_cols = list(keys) + ["layer", "head", "role"]
    if "control" in scores.columns:
        controls = control_tests(scores, alpha, correction, keys)
    else:
        controls = pd.DataFrame(columns=group_cols + [c for c in CONTROL_COLUMNS if c != "label_controlled"])
    merged = tests.copy()
    index = pd.MultiIndex.from_frame(merged[group_cols].astype({c: str for c in list(keys) + ["role"]}))
    found = controls.set_index(
        pd.MultiIndex.from_frame(controls[group_cols].astype({c: str for c in list(keys) + ["role"]}))
    )
    found = found.reindex(index)
    at = list(merged.columns).index("label") + 1
    for k, col in enumerate(c for c in CONTROL_COLUMNS if c != "label_controlled"):
        values = found[col].to_numpy(dtype=float)
        if col == "diff_n":
            values = np.nan_to_num(values, nan=0).astype(np.int64)
        merged.insert(at + k, col, values)
    controlled = merged["label"].to_numpy(dtype=bool) & (np.nan_to_num(merged["diff_p_adj"], nan=1.0) < alpha)
    merged.insert(at + len(CONTROL_COLUMNS) - 1, "label_controlled", controlled)
    return merged


def control_lines(tests: pd.DataFrame) -> list[str]:
    """Summary lines (markdown list items): the syntactic labels that hold against shape-matched decoys, in
    all and per relation (reference labels / controlled labels); none for a table without the control."""
    if "label_controlled" not in tests or not (tests["diff_n"] > 0).any():
        return []
    syn = tests[tests["diff_n"] > 0]
    per_role = syn.groupby(syn["role"].astype(str))[["label", "label_controlled"]].sum()
    per_role = per_role[per_role["label"] > 0].sort_values(["label", "label_controlled"], ascending=False)
    first = tests.iloc[0]
    lines = [
        f"- positional control (true head against decoys of the same shape, paired one-sided t test, "
        f"{first['correction']}): {int(syn['label_controlled'].sum())} of {int(syn['label'].sum())} syntactic "
        "labels hold"
    ]
    if len(per_role):
        lines.append(
            "  (labels / controlled per role: "
            + ", ".join(f"{r} {int(a)} / {int(b)}" for r, (a, b) in per_role.iterrows())
            + ")"
        )
    return lines
