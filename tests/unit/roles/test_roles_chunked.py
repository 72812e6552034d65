"""Role masses from queries and keys in query chunks (roles/chunked.py) against the full-matrix path and the sieve.

* The chunked path (float32, softmax per chunk, grouped keys never repeated) gives the same masses as a full
  attention matrix built independently in float64 (keys repeated per query head, torch.softmax), within
  1e-5, causal and bidirectional, with and without grouped-query attention, for chunk sizes that do and do
  not divide T.
* Planted heads put their mass where planted; uniform heads score exactly |S_i| / n_keys.
* On UD-like inputs of a few hundred pieces, mass_scores of the chunked path reproduce roles/sieve.py's
  scores, query counts and undefined counts for the piece roles (the full matrix goes to the sieve).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headsieve.errors import HeadsieveError
from headsieve.roles.chunked import chunked_role_masses, full_role_masses, mass_scores, visible_keys
from headsieve.roles.registry import ROLES
from headsieve.roles.sieve import DEFAULT_OPTIONS, Batch, SentenceFacts, score_batch

from support.synthetic import pair_row, sentence_row

POSITION_ROLES = ("prev", "local", "first", "self")


def position_targets(T: int, window: int = 2):
    """A provider of positional target sets, built per chunk from positions only: previous token,
    local window |i - j| <= window, first token, the token itself."""

    def targets(q0: int, q1: int) -> np.ndarray:
        i = np.arange(q0, q1)[:, None]
        j = np.arange(T)[None, :]
        first = np.broadcast_to(j == 0, (q1 - q0, T))
        return np.stack([j == i - 1, np.abs(i - j) <= window, first, j == i])

    return targets


def reference_attention(q, k, scale, causal=False, bias=None) -> torch.Tensor:
    """Full [heads, T, T] attention in float64: keys repeated per query head, torch.softmax."""
    q = torch.as_tensor(q, dtype=torch.float64)
    k = torch.as_tensor(k, dtype=torch.float64)
    group = q.shape[0] // k.shape[0]
    logits = q @ k.repeat_interleave(group, dim=0).transpose(1, 2) * scale
    if bias is not None:
        logits = logits + torch.as_tensor(bias, dtype=torch.float64)
    if causal:
        T = q.shape[1]
        logits = logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(logits, dim=-1)


def random_qk(rng, heads, kv_heads, T, d, spread=2.0):
    """Random queries and keys with varied sharpness (per-head scale), float32."""
    sharp = rng.uniform(0.3, spread, size=(heads, 1, 1))
    q = (rng.standard_normal((heads, T, d)) * sharp).astype(np.float32)
    k = rng.standard_normal((kv_heads, T, d)).astype(np.float32)
    return q, k


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(6, 6), (6, 2), (4, 1)])
@pytest.mark.parametrize("T", [1, 37, 512])
def test_chunked_equals_full_matrix(causal, heads, kv_heads, T):
    rng = np.random.default_rng(T * 10 + heads + kv_heads + causal)
    d = 16
    q, k = random_qk(rng, heads, kv_heads, T, d)
    scale = 1 / math.sqrt(d)
    targets = position_targets(T)
    full = full_role_masses(reference_attention(q, k, scale, causal), targets, dtype=torch.float64)
    assert full.mass.shape == (len(POSITION_ROLES), heads, T)
    for chunk in (1, 13, 64, 500, 1024):
        if chunk == 1 and T > 64:
            continue  # one-query chunks on 512 queries: covered by T = 37
        got = chunked_role_masses(q, k, targets, scale=scale, causal=causal, chunk=chunk)
        assert got.mass.dtype == np.float32
        np.testing.assert_allclose(got.mass, full.mass, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.row, 1.0, atol=1e-5)
        np.testing.assert_array_equal(got.n_targets, full.n_targets)
        if causal:  # query 0 sees only itself: all its mass on "self"
            np.testing.assert_allclose(got.mass[3, :, 0], 1.0, atol=1e-6)


def test_float64_option_matches_to_rounding():
    rng = np.random.default_rng(1)
    q, k = random_qk(rng, 6, 3, 129, 32, spread=4.0)
    targets = position_targets(129)
    for causal in (False, True):
        full = full_role_masses(reference_attention(q, k, 0.2, causal), targets, dtype=torch.float64)
        got = chunked_role_masses(q, k, targets, scale=0.2, causal=causal, chunk=50, dtype=torch.float64)
        assert got.mass.dtype == np.float64
        np.testing.assert_allclose(got.mass, full.mass, atol=1e-12, rtol=0)


def test_large_logits_stay_finite():
    """Max-subtracted softmax: logits in the thousands give finite rows summing to 1."""
    rng = np.random.default_rng(2)
    q, k = random_qk(rng, 3, 3, 64, 8)
    got = chunked_role_masses(q * 1000, k, position_targets(64), chunk=10)
    assert np.isfinite(got.mass).all()
    np.testing.assert_allclose(got.row, 1.0, atol=1e-5)


def test_padding_bias_equals_the_unpadded_input():
    """Keys past the input masked by a large negative additive bias: the real queries' masses equal those
    of the unpadded input (the provider of the padded length restricted to real keys)."""
    rng = np.random.default_rng(3)
    n, T, d = 30, 41, 16
    q, k = random_qk(rng, 6, 2, T, d)
    bias = np.where(np.arange(T) < n, 0.0, torch.finfo(torch.float32).min).astype(np.float32)
    for causal in (False, True):
        padded = chunked_role_masses(q, k, position_targets(T), causal=causal, bias=bias, chunk=16)
        plain = chunked_role_masses(q[:, :n], k[:, :n], position_targets(n), causal=causal, chunk=7)
        np.testing.assert_allclose(padded.mass[:, :, :n], plain.mass, atol=1e-6, rtol=0)
        assert np.isfinite(padded.mass).all()


def test_bias_per_head_and_query_plants_roles():
    """A [heads, T, T] bias plants a previous-token head, a first-token head and a self head; a head with
    no bias and zero queries is uniform.  Each puts (nearly) all its mass where planted."""
    T, d = 50, 8
    q = np.zeros((4, T, d), dtype=np.float32)
    k = np.zeros((2, T, d), dtype=np.float32)
    bias = np.zeros((4, T, T), dtype=np.float32)
    i = np.arange(T)
    bias[0, i[1:], i[1:] - 1] = 30.0
    bias[1, :, 0] = 30.0
    bias[2, i, i] = 30.0
    got = chunked_role_masses(q, k, position_targets(T), bias=bias, chunk=17)
    prev, local, first, self_ = range(4)
    assert got.mass[prev, 0, 1:].min() > 0.99
    assert got.mass[first, 1].min() > 0.99
    assert got.mass[self_, 2].min() > 0.99
    np.testing.assert_allclose(got.mass[local, 3], got.n_targets[local] / T, atol=1e-6)
    assert got.mass[prev, 1, 2:].max() < 0.01 and got.mass[first, 0, 2:].max() < 0.01


def test_uniform_heads_score_their_uniform_share():
    """Zero queries: every row uniform over the visible keys, so m_i = |S_i visible| / n_keys_i; queries
    whose share exceeds the cap are undefined, queries with no target are no queries of the role."""
    T = 12
    q = np.zeros((2, T, 4), dtype=np.float32)
    k = np.zeros((1, T, 4), dtype=np.float32)
    targets = position_targets(T, window=1)
    for causal in (False, True):
        masses = chunked_role_masses(q, k, targets, causal=causal, chunk=5)
        keys = visible_keys(T, causal)
        visible = np.stack([targets(0, T)[r] & (np.arange(T)[None] <= np.arange(T)[:, None]) if causal
                            else targets(0, T)[r] for r in range(4)])  # fmt: skip
        share = masses.n_targets / keys[None]
        has = masses.n_targets > 0
        defined = has & (share <= 0.25 + 1e-9)
        res = mass_scores(masses, keys, max_uniform_share=0.25)
        np.testing.assert_array_equal(res.n_queries, defined.sum(1))
        np.testing.assert_array_equal(res.n_undefined, (has & ~defined).sum(1))
        np.testing.assert_array_equal(res.present, has.any(1))
        for r in range(4):
            want = (visible[r].sum(1) / keys)[defined[r]]
            if defined[r].any():
                np.testing.assert_allclose(res.scores[r], want.mean(), atol=1e-6)
            else:
                assert np.isnan(res.scores[r]).all()
    # prev has no target for query 0 only; with the cap at 1, every other query is scored
    res = mass_scores(chunked_role_masses(q, k, targets, chunk=4), T, max_uniform_share=1.0)
    assert res.n_queries[0] == T - 1 and res.n_undefined[0] == 0


def test_provider_is_asked_for_chunks_only():
    T, chunk = 100, 24
    calls = []
    base = position_targets(T)

    def targets(q0, q1):
        calls.append((q0, q1))
        return base(q0, q1)

    rng = np.random.default_rng(4)
    q, k = random_qk(rng, 3, 1, T, 8)
    chunked_role_masses(q, k, targets, chunk=chunk)
    assert calls == [(0, 24), (24, 48), (48, 72), (72, 96), (96, 100)]


@pytest.mark.parametrize(
    "q_shape,k_shape,chunk",
    [((6, 10, 8), (4, 10, 8), 4), ((6, 10, 8), (2, 9, 8), 4), ((6, 10), (2, 10, 8), 4), ((6, 10, 8), (2, 10, 8), 0)],
)
def test_bad_shapes_are_one_line_errors(q_shape, k_shape, chunk):
    with pytest.raises(HeadsieveError) as err:
        chunked_role_masses(np.zeros(q_shape), np.zeros(k_shape), position_targets(10), chunk=chunk)
    assert "\n" not in str(err.value)


def test_provider_of_wrong_shape_is_an_error():
    with pytest.raises(HeadsieveError, match="target provider"):
        chunked_role_masses(np.zeros((2, 10, 4)), np.zeros((2, 10, 4)), lambda a, b: np.zeros((2, b - a, 9), bool))
    with pytest.raises(HeadsieveError, match="bias"):
        bias = np.zeros((3, 10, 10))
        chunked_role_masses(np.zeros((2, 10, 4)), np.zeros((2, 10, 4)), position_targets(10), bias=bias)


SIEVE_ROLES = ["local", "prev", "next", "self", "cls", "sep", "delimiter"]


def sieve_inputs():
    """UD-like inputs of real length (a few hundred pieces), a short one (local undefined) and a pair."""
    rng = np.random.default_rng(5)
    rows = [sentence_row(rng, 170, max_pieces=3, index=0), sentence_row(rng, 6, max_pieces=1, mwt=False, index=1),
            pair_row(rng, 120, 90, index=2)]  # fmt: skip
    return [SentenceFacts.from_row(r) for r in rows]


def test_chunked_mass_scores_reproduce_the_sieve():
    layers, heads, kv_heads, d = 2, 6, 2, 16
    opts = dict(DEFAULT_OPTIONS, piece_roles=SIEVE_ROLES)
    facts = sieve_inputs()
    assert max(f.n_pieces for f in facts) > 300
    rng = np.random.default_rng(6)
    qk, dumps = [], []
    for f in facts:
        per_layer = [random_qk(rng, heads, kv_heads, f.n_pieces, d, spread=3.0) for _ in range(layers)]
        qk.append(per_layer)
        A = [reference_attention(q, k, 1 / math.sqrt(d)).to(torch.float32).numpy() for q, k in per_layer]
        dumps.append(np.stack(A))  # [L, H, N, N], as the dump holds it
    sieve = [o for o in score_batch(Batch(dumps, facts), opts, detail=True) if o[1] in SIEVE_ROLES]  # not dep:*
    by_input = {(b, role): (scores, nq, nu) for b, role, scores, nq, nu, form in sieve}
    assert all(form == "mass" for *_, form in sieve)
    checked = 0
    for b, f in enumerate(facts):
        S = np.stack([ROLES[name].targets(f, opts) for name in SIEVE_ROLES])
        per_layer = []
        for q, k in qk[b]:
            masses = chunked_role_masses(q, k, lambda q0, q1: S[:, q0:q1], chunk=96)
            per_layer.append(mass_scores(masses, f.n_pieces, opts["max_uniform_share"]))
        for r, role in enumerate(SIEVE_ROLES):
            present = per_layer[0].present[r]
            assert present == ((b, role) in by_input)
            if not present:
                continue
            scores, nq, nu = by_input[(b, role)]
            got = np.concatenate([res.scores[r] for res in per_layer])  # layer-major, as the dump's heads
            np.testing.assert_allclose(got, scores, atol=1e-5, rtol=0, equal_nan=True)
            assert (per_layer[0].n_queries[r], per_layer[0].n_undefined[r]) == (nq, nu)
            checked += 1
    assert checked == len(sieve)
    # the short input leaves local undefined on every query (5 / 8 > 0.25): NaN scores, as the sieve
    assert by_input[(1, "local")][1] == 0 and np.isnan(by_input[(1, "local")][0]).all()
