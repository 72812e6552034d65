"""The vectorised role scores and head statistics equal a direct, loop-by-definition implementation
on random inputs (multi-piece words, multi-word tokens, truncated words, pairs, every option)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headsieve.roles.clark import OFFSETS, HeadStats
from headsieve.roles.sieve import Batch, SentenceFacts, score_batch
from headsieve.tokens import CLS, REGULAR, SEP

from support.synthetic import dirichlet_attention, pair_row, sentence_row

L, H = 2, 3


# ------------------------------------------------------------------ reference, by definition


def ref_targets(role, row, i, window):
    n = row["n_pieces"]
    special = row["piece_special"]
    seg = row["piece_segment"]
    if role == "local":
        return [j for j in range(n) if abs(i - j) <= window]
    if role in ("prev", "self", "next"):
        j = i + {"prev": -1, "self": 0, "next": 1}[role]
        return [j] if 0 <= j < n else []
    if role == "cls":
        return [j for j in range(n) if special[j] == CLS]
    if role == "sep":
        return [j for j in range(n) if special[j] == SEP]
    if role == "delimiter":
        return [j for j in range(n) if special[j] in (CLS, SEP)]
    if role == "block":
        if len({seg[j] for j in range(n) if special[j] == REGULAR}) < 2 or special[i] != REGULAR:
            return []
        return [j for j in range(n) if special[j] == REGULAR and seg[j] == seg[i]]
    raise ValueError(role)


def ref_piece_score(A, row, role, window):
    """Mean over queries with targets of mean_{j in S_i} A[i, j] / ((1/N) sum_j A[i, j])."""
    n = row["n_pieces"]
    rs = []
    for i in range(n):
        targets = ref_targets(role, row, i, window)
        if not targets:
            continue
        abar = sum(A[i, j] for j in range(n)) / n
        r = sum(A[i, j] for j in targets) / len(targets) / abar
        rs.append(r)
    return (sum(rs) / len(rs), len(rs)) if rs else (None, 0)


def ref_piece_mass(A, row, role, window, cap):
    """Mean over the queries with targets and uniform share |S_i| / N <= cap of the share of the row's
    mass on the targets; (score or None, scored queries, left-out queries)."""
    n = row["n_pieces"]
    ms, left_out = [], 0
    for i in range(n):
        targets = ref_targets(role, row, i, window)
        if not targets:
            continue
        if len(targets) / n > cap:
            left_out += 1
            continue
        ms.append(sum(A[i, j] for j in targets) / sum(A[i, j] for j in range(n)))
    if not ms and not left_out:
        return None, 0, 0
    return (sum(ms) / len(ms) if ms else math.nan), len(ms), left_out


def ref_block_contrast(A, row, window):
    """Per regular query of a pair: density on its own segment's regular pieces farther than ``window``
    against density on the other segment's regular pieces farther than ``window``, d_own / (d_own +
    d_other) (0.5 when both are 0); queries with no own or no other piece outside the window left out.  (score or
    None, scored, left out)."""
    n, special, seg = row["n_pieces"], row["piece_special"], row["piece_segment"]
    if len({seg[j] for j in range(n) if special[j] == REGULAR}) < 2:
        return None, 0, 0
    bs, left_out = [], 0
    for i in range(n):
        if special[i] != REGULAR:
            continue
        own = [j for j in range(n) if special[j] == REGULAR and seg[j] == seg[i] and abs(i - j) > window]
        other = [j for j in range(n) if special[j] == REGULAR and seg[j] != seg[i] and abs(i - j) > window]
        if not own or not other:
            left_out += 1
            continue
        d_own = sum(A[i, j] for j in own) / len(own)
        d_other = sum(A[i, j] for j in other) / len(other)
        bs.append(d_own / (d_own + d_other) if d_own + d_other > 0 else 0.5)
    return (sum(bs) / len(bs) if bs else math.nan), len(bs), left_out


def reference_code_block(A, row):
    """The reference code's block score (heads-hypothesis, block_score.ipynb), written from its loop:
    every row ``token`` of the input; rows before the first [SEP] target the first sentence's pieces
    (1 .. sep1 - 1), all others the second's (sep1 + 1 .. sep2 - 1); ratio to the row's mean attention,
    times the row's entropy; summed and divided by the input's length (all rows)."""
    n = row["n_pieces"]
    sep1 = row["piece_special"].index(SEP)
    sep2 = n - 1
    total = 0.0
    for token in range(n):
        avg = sum(A[token, :n]) / n
        if token < sep1:
            s_avg = sum(A[token, 1:sep1]) / (sep1 - 1)
        else:
            s_avg = sum(A[token, sep1 + 1 : sep2]) / (sep2 - sep1 - 1)
        p = A[token, :n] / sum(A[token, :n])  # scipy.stats.entropy normalises the row
        total += s_avg / avg * -sum(x * math.log(x) for x in p if x > 0)
    return total / n


def pieces_of(row, w):
    return [i for i, t in enumerate(row["piece_token"]) if t == row["word_token"][w]]


def ref_word_attention(A, row, a, b, aggregation):
    pa, pb = pieces_of(row, a), pieces_of(row, b)
    per_from = []
    for i in pa:
        s = sum(A[i, j] for j in pb)
        per_from.append(s / len(pb) if aggregation == "mean" else s)
    return sum(per_from) / len(pa)


def ref_word_abar(A, row, a):
    n = row["n_pieces"]
    return sum(sum(A[i, j] for j in range(n)) / n for i in pieces_of(row, a)) / len(pieces_of(row, a))


def usable(row, a, b):
    ok = lambda w: row["word_kept"][w] and pieces_of(row, w)  # noqa: E731
    return ok(a) and ok(b) and row["word_token"][a] != row["word_token"][b]


def ref_syntactic_score(A, row, relations, direction, aggregation):
    """Relations: a set of labels.  Queries and their targets by direction, over usable arcs."""
    targets: dict[int, set[int]] = {}
    for d, h in enumerate(row["word_head"]):
        if h == 0 or row["word_deprel"][d] not in relations or not usable(row, d, h - 1):
            continue
        if direction in ("dep2head", "both"):
            targets.setdefault(d, set()).add(h - 1)
        if direction in ("head2dep", "both"):
            targets.setdefault(h - 1, set()).add(d)
    rs = []
    for q, ts in sorted(targets.items()):
        mean = sum(ref_word_attention(A, row, q, t, aggregation) for t in ts) / len(ts)
        rs.append(mean / ref_word_abar(A, row, q))
    return (sum(rs) / len(rs), len(rs)) if rs else (None, 0)


# ------------------------------------------------------------------ comparisons


def batch_of(rows, arrays):
    return Batch(arrays, [SentenceFacts.from_row(r) for r in rows])


def scored(rows, arrays, options):
    out = {}
    for b, role, scores, nq in score_batch(batch_of(rows, arrays), options):
        out[(b, role)] = (scores.reshape(L, H), nq)
    return out


PIECE = ("local", "prev", "next", "self", "cls", "sep", "delimiter", "block")


def mixed_rows(rng):
    rows = [sentence_row(rng, int(rng.integers(2, 9)), index=k) for k in range(4)]
    rows += [pair_row(rng, int(rng.integers(1, 6)), int(rng.integers(1, 6)), index=4 + k) for k in range(3)]
    rows.append(pair_row(rng, 0, 3, index=9))  # an empty first segment: no block role
    return rows


@pytest.mark.parametrize("window", [1, 2, 3])
def test_piece_roles_match_reference(window):
    """The ``ratio`` form is the reference sieve ratio (block: the plain ratio over the own segment)."""
    rng = np.random.default_rng(window)
    rows = mixed_rows(rng)
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.5) for r in rows]
    got = scored(rows, arrays, {"score": "ratio", "local_window": window, "block_weighting": "plain"})
    for b, (row, A) in enumerate(zip(rows, arrays)):
        for role in PIECE:
            for layer in range(L):
                for head in range(H):
                    want, nq = ref_piece_score(A[layer, head].astype(float), row, role, window)
                    if want is None:
                        assert (b, role) not in got
                        continue
                    scores, got_nq = got[(b, role)]
                    assert got_nq == nq
                    assert scores[layer, head] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("cap", [0.25, 0.5])
def test_piece_mass_matches_definition(window, cap):
    """The default ``mass`` form: share of each row on the targets, queries above the uniform-share cap
    left out and counted; block by its ``contrast`` definition."""
    rng = np.random.default_rng(10 + window)
    rows = mixed_rows(rng) + [pair_row(rng, 7, 9, index=20), sentence_row(rng, 14, index=21)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.5) for r in rows]
    batch = batch_of(rows, arrays)
    got = {
        (b, role): (s.reshape(L, H), nq, nu, form)
        for b, role, s, nq, nu, form in score_batch(batch, {"local_window": window, "max_uniform_share": cap}, detail=True)
    }
    checked = 0
    for b, (row, A4) in enumerate(zip(rows, arrays)):
        for role in PIECE:
            for layer in range(L):
                for head in range(H):
                    A = A4[layer, head].astype(float)
                    if role == "block":
                        want, nq, nu = ref_block_contrast(A, row, window)
                    else:
                        want, nq, nu = ref_piece_mass(A, row, role, window, cap)
                    if want is None:
                        assert (b, role) not in got
                        continue
                    scores, got_nq, got_nu, form = got[(b, role)]
                    assert (got_nq, got_nu) == (nq, nu), (b, role)
                    assert form == ("block_contrast" if role == "block" else "mass")
                    if math.isnan(want):
                        assert np.isnan(scores[layer, head])
                    else:
                        assert scores[layer, head] == pytest.approx(want, rel=1e-5)
                        checked += 1
    assert checked > 100


def test_block_entropy_is_the_reference_code():
    """``block_weighting: entropy`` equals the reference code's loop (every row, [CLS] and [SEP] included)."""
    rng = np.random.default_rng(4)
    rows = [pair_row(rng, int(rng.integers(1, 8)), int(rng.integers(1, 8)), index=k) for k in range(6)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.5) for r in rows]
    got = scored(rows, arrays, {"score": "ratio", "block_weighting": "entropy", "piece_roles": ["block"]})
    for b, (row, A) in enumerate(zip(rows, arrays)):
        scores, nq = got[(b, "block")]
        assert nq == row["n_pieces"]
        for layer in range(L):
            for head in range(H):
                want = reference_code_block(A[layer, head].astype(float), row)
                assert scores[layer, head] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("direction", ["dep2head", "head2dep", "both"])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_syntactic_roles_match_reference(direction, aggregation):
    rng = np.random.default_rng(7)
    rows = [sentence_row(rng, int(rng.integers(2, 12)), index=k) for k in range(8)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.3) for r in rows]
    union = ["nsubj", "obj", "amod"]
    options = {"score": "ratio", "direction": direction, "aggregation": aggregation, "union": union}
    got = scored(rows, arrays, options)
    checked = 0
    for b, (row, A) in enumerate(zip(rows, arrays)):
        present = {r for r, h in zip(row["word_deprel"], row["word_head"]) if h}
        roles = {f"dep:{r}": {r} for r in present}
        if present & set(union):
            roles["syntactic"] = set(union)
        for role, relations in roles.items():
            for layer in range(L):
                for head in range(H):
                    want, nq = ref_syntactic_score(A[layer, head].astype(float), row, relations, direction, aggregation)
                    if want is None:
                        assert (b, role) not in got
                        continue
                    scores, got_nq = got[(b, role)]
                    assert got_nq == nq
                    assert scores[layer, head] == pytest.approx(want, rel=1e-5)
                    checked += 1
    assert checked > 50


def ref_syntactic_mass(A, row, relations, direction, cap):
    """Share of the query word's mass (mean over its pieces of their row sums) on its target words' pieces
    (mean over its pieces of the sum over the targets' pieces); u = target pieces / N."""
    n = row["n_pieces"]
    targets: dict[int, set[int]] = {}
    for d, h in enumerate(row["word_head"]):
        if h == 0 or row["word_deprel"][d] not in relations or not usable(row, d, h - 1):
            continue
        if direction in ("dep2head", "both"):
            targets.setdefault(d, set()).add(h - 1)
        if direction in ("head2dep", "both"):
            targets.setdefault(h - 1, set()).add(d)
    ms, left_out = [], 0
    for q, ts in sorted(targets.items()):
        if sum(len(pieces_of(row, t)) for t in ts) / n > cap:
            left_out += 1
            continue
        on = sum(ref_word_attention(A, row, q, t, "sum") for t in ts)
        ms.append(on / (ref_word_abar(A, row, q) * n))
    if not ms and not left_out:
        return None, 0, 0
    return (sum(ms) / len(ms) if ms else math.nan), len(ms), left_out


@pytest.mark.parametrize("direction", ["dep2head", "both"])
def test_syntactic_mass_matches_definition(direction):
    rng = np.random.default_rng(8)
    rows = [sentence_row(rng, int(rng.integers(2, 12)), index=k) for k in range(8)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.3) for r in rows]
    union = ["nsubj", "obj", "amod"]
    got = {
        (b, role): (s.reshape(L, H), nq, nu)
        for b, role, s, nq, nu, _ in score_batch(batch_of(rows, arrays), {"direction": direction, "union": union}, detail=True)
    }
    checked = 0
    for b, (row, A) in enumerate(zip(rows, arrays)):
        present = {r for r, h in zip(row["word_deprel"], row["word_head"]) if h}
        roles = {f"dep:{r}": {r} for r in present}
        if present & set(union):
            roles["syntactic"] = set(union)
        for role, relations in roles.items():
            for layer in range(L):
                for head in range(H):
                    want, nq, nu = ref_syntactic_mass(A[layer, head].astype(float), row, relations, direction, 0.25)
                    if want is None:
                        assert (b, role) not in got
                        continue
                    scores, got_nq, got_nu = got[(b, role)]
                    assert (got_nq, got_nu) == (nq, nu)
                    if math.isnan(want):
                        assert np.isnan(scores[layer, head])
                    else:
                        assert scores[layer, head] == pytest.approx(want, rel=1e-5)
                        checked += 1
    assert checked > 50


def test_relation_subtypes_and_selection():
    rng = np.random.default_rng(3)
    row = sentence_row(rng, 8, mwt=False, lost=False)
    row["word_deprel"] = [r if r == "root" else r + ":x" for r in row["word_deprel"]]
    A = dirichlet_attention(rng, L, H, row["n_pieces"])
    plain = scored([row], [A], {})
    assert all(role.count(":") <= 1 for _, role in plain)  # dep:nsubj, not dep:nsubj:x
    with_sub = scored([row], [A], {"subtypes": True})
    assert any(role.endswith(":x") for _, role in with_sub)
    only = scored([row], [A], {"relations": ["nsubj"], "piece_roles": []})
    assert {role for _, role in only} <= {"dep:nsubj", "syntactic"}


def ref_head_stats(rows, arrays):
    """Clark-style statistics by definition, per head."""
    out = {}
    for layer in range(L):
        for head in range(H):
            acc = {k: [0.0, 0] for k in ("cls", "sep", "punct", "self", "prev", "next", "entropy", "entropy_uniform")}
            correct: dict[str, list] = {}
            for row, A4 in zip(rows, arrays):
                A = A4[layer, head].astype(float)
                n = row["n_pieces"]
                punct_tokens = {row["word_token"][w] for w, u in enumerate(row["word_upos"]) if u == "PUNCT"}
                for i in range(n):
                    acc["cls"][0] += sum(A[i, j] for j in range(n) if row["piece_special"][j] == CLS)
                    acc["sep"][0] += sum(A[i, j] for j in range(n) if row["piece_special"][j] == SEP)
                    acc["punct"][0] += sum(A[i, j] for j in range(n) if row["piece_token"][j] in punct_tokens)
                    acc["self"][0] += A[i, i]
                    acc["entropy"][0] += -sum(a * math.log(a) for a in A[i] if a > 0)
                    acc["entropy_uniform"][0] += math.log(n)
                    if i > 0:
                        acc["prev"][0] += A[i, i - 1]
                        acc["next"][0] += A[i - 1, i]
                for k in ("cls", "sep", "punct", "self", "entropy", "entropy_uniform"):
                    acc[k][1] += n
                acc["prev"][1] += n - 1
                acc["next"][1] += n - 1
                words = range(len(row["word_token"]))
                for d, h in enumerate(row["word_head"]):
                    if h == 0 or not usable(row, d, h - 1):
                        continue
                    cands = [w for w in words if w != d and pieces_of(row, w)]
                    best = max(cands, key=lambda w: (ref_word_attention(A, row, d, w, "sum"), -w))
                    c = correct.setdefault(row["word_deprel"][d], [0, 0])
                    c[0] += best == h - 1
                    c[1] += 1
            for k, (s, n) in acc.items():
                out[(layer, head, k, None)] = s / n
            for rel, (c, n) in correct.items():
                out[(layer, head, "accuracy", rel)] = c / n
    return out


def test_head_stats_match_reference():
    rng = np.random.default_rng(11)
    rows = [sentence_row(rng, int(rng.integers(2, 10)), index=k) for k in range(6)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.2) for r in rows]
    stats = HeadStats(L, H)
    stats.add_batch(batch_of(rows[:3], arrays[:3]), rows[:3])  # two batches accumulate
    stats.add_batch(batch_of(rows[3:], arrays[3:]), rows[3:])
    frame = stats.frame("m", "c")
    want = ref_head_stats(rows, arrays)
    got = {
        (r.layer, r.head, r.stat, r.relation if isinstance(r.relation, str) else None): r.value
        for r in frame.itertuples()
    }
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the fixed-offset baseline: best offset's share of dependents whose head sits there
    for rel, group in frame[frame.stat == "accuracy"].groupby("relation"):
        deps = [
            (d, h - 1)
            for row in rows
            for d, h in enumerate(row["word_head"])
            if h and row["word_deprel"][d] == rel and usable(row, d, h - 1)
        ]
        best = max(sum(h == d + off for d, h in deps) for off in OFFSETS) / len(deps)
        assert group.baseline.iloc[0] == pytest.approx(best)


def test_accuracy_ties_go_to_the_first_candidate():
    """Uniform attention ties every word: the prediction is the first candidate word (as argmax takes it)."""
    rng = np.random.default_rng(5)
    rows = [sentence_row(rng, 7, max_pieces=1, mwt=False, lost=False, index=k) for k in range(6)]
    arrays = [np.full((L, H, r["n_pieces"], r["n_pieces"]), 1.0 / r["n_pieces"], dtype=np.float32) for r in rows]
    stats = HeadStats(L, H)
    stats.add_batch(batch_of(rows, arrays), rows)
    frame = stats.frame("m", "c")
    want = ref_head_stats(rows, arrays)
    for r in frame[frame.stat == "accuracy"].itertuples():
        assert r.value == pytest.approx(want[(r.layer, r.head, "accuracy", r.relation)])
    # with every word tied, the first candidate wins: word 0, or word 1 for the dependent at word 0
    deps = [(d, h - 1) for row in rows for d, h in enumerate(row["word_head"]) if h]
    expected = sum(h == (1 if d == 0 else 0) for d, h in deps) / len(deps)
    got = frame[frame.stat == "accuracy"]
    correct = (got["value"] * got["n"]).groupby([got["layer"], got["head"]]).sum() / len(deps)
    assert np.allclose(correct, expected)
