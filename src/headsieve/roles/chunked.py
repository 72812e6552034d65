"""Role masses and ``mass`` scores from queries and keys, one query chunk at a time (issue 17, item 3).

The stored dump keeps every head's full attention ``[heads, T, T]``; for long inputs that is too much (a
2,048-token input of a 30 x 9 model holds 4.5 GB).  Every score of the ``mass`` form needs, per head and
query, only the attention mass the query's row puts on each role's targets, so the rows can be made and
consumed a chunk of queries at a time: ``softmax(q k^T * scale + bias)`` for queries ``q0:q1`` is
``[heads, q1 - q0, T]``, and peak memory grows with heads x chunk x T, not heads x T x T.

* :func:`chunked_role_masses` takes one layer's queries ``q [heads, T, d]`` and keys ``k [kv_heads, T, d]``
  (grouped-query attention: query head ``h`` reads key head ``h // (heads // kv_heads)``; the keys are
  never repeated per query head), the scaling, an optional causal mask and an optional additive bias
  (padding), and a target provider; it returns :class:`RoleMasses`.
* :func:`full_role_masses` computes the same quantities from a full attention matrix ``[heads, T, T]``
  (the dump path), through the same provider.
* :func:`mass_scores` turns masses into the per-input ``mass`` scores of ``roles/sieve.py``:
  ``m_i = mass_i / row_i`` per query, the queries with an empty target set are no queries of the role,
  those whose uniform share ``|S_i| / n_keys_i`` exceeds ``max_uniform_share`` (+1e-9) are left out and
  counted as undefined, and the score is the mean of ``m_i`` over the rest (NaN when none is left).
  ``n_keys`` is the number of keys a query can see: ``T`` for bidirectional attention (what the sieve
  uses), ``i + 1`` for causal attention (:func:`visible_keys`).

A target provider is a function ``targets(q0, q1) -> bool [n_roles, q1 - q0, T]``: the rows ``q0:q1`` of
every role's target sets (a NumPy array or a torch tensor).  It is called once per chunk, with
``q1 - q0 <= chunk``, so it need never build a ``[T, T]`` mask either.

The softmax is computed in ``dtype`` (float32 by default, float64 for tests) by ``torch.softmax``, which
subtracts the row maximum before the exponential.  Under the causal mask a chunk's rows stop at its last
query's position (the later keys get no weight), which halves the work on average.  A row whose every key
is masked (all ``-inf``) has no distribution and gives NaN; padding biases should use a large finite
negative value (as transformers does), not ``-inf``, for padded queries to stay finite.  Nothing here knows
about models: wiring it into a forward pass is a separate step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from headsieve.errors import HeadsieveError

#: ``targets(q0, q1) -> bool [n_roles, q1 - q0, T]``
TargetProvider = Callable[[int, int], "np.ndarray | torch.Tensor"]

DEFAULT_CHUNK = 256


@dataclass(frozen=True)
class RoleMasses:
    """Per role, head and query: the attention mass on the role's targets, and what the scores need.

    ``mass`` [R, H, T]: ``sum_{j in S_i} A[h, i, j]``; ``row`` [H, T]: ``sum_j A[h, i, j]`` (1 up to
    rounding for a softmax row); ``n_targets`` [R, T]: ``|S_i|`` as the provider gives it (a causal role's
    provider gives only keys ``j <= i``).  ``mass`` and ``row`` in the computing dtype."""

    mass: np.ndarray
    row: np.ndarray
    n_targets: np.ndarray


@dataclass(frozen=True)
class RoleScores:
    """Per-input ``mass`` scores of every role and head.

    ``scores`` [R, H] float32 (NaN where no query is scored); ``n_queries`` [R]: the scored queries;
    ``n_undefined`` [R]: the queries with targets left out by the uniform-share cap; ``present`` [R]: the
    role has targets for at least one query (a role without is left out of the input's scores, as in
    ``roles/sieve.py``)."""

    scores: np.ndarray
    n_queries: np.ndarray
    n_undefined: np.ndarray
    present: np.ndarray


def visible_keys(n: int, causal: bool) -> np.ndarray:
    """Keys each of ``n`` queries can see: ``n`` each (bidirectional) or ``i + 1`` (causal): [n] int64."""
    return np.arange(1, n + 1, dtype=np.int64) if causal else np.full(n, n, dtype=np.int64)


def _as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(x).to(dtype)


def _check_qk(q: torch.Tensor, k: torch.Tensor, chunk: int) -> int:
    """Validate shapes; return the number of query heads per key head."""
    if q.dim() != 3 or k.dim() != 3:
        raise HeadsieveError(f"chunked role masses: q {tuple(q.shape)} and k {tuple(k.shape)} must be [heads, T, d]")
    heads, T, d = q.shape
    kv_heads = k.shape[0]
    if k.shape[1:] != (T, d) or kv_heads == 0 or heads % kv_heads:
        raise HeadsieveError(
            f"chunked role masses: q {tuple(q.shape)} and k {tuple(k.shape)} do not fit "
            "(k must be [kv_heads, T, d] with heads a multiple of kv_heads)"
        )
    if chunk < 1:
        raise HeadsieveError(f"chunked role masses: chunk {chunk} must be at least 1")
    return heads // kv_heads


def _bias3(bias, heads: int, T: int, dtype: torch.dtype) -> torch.Tensor | None:
    """An additive bias as [heads or 1, T or 1, T]: accepts [T] (per key), [T or 1, T], [heads or 1, T or 1, T]."""
    if bias is None:
        return None
    b = _as_tensor(bias, dtype)
    if b.dim() == 1:
        b = b[None, None, :]
    elif b.dim() == 2:
        b = b[None]
    ok = b.dim() == 3 and b.shape[0] in (1, heads) and b.shape[1] in (1, T) and b.shape[2] == T
    if not ok:
        raise HeadsieveError(
            f"chunked role masses: bias {tuple(torch.as_tensor(bias).shape)} must broadcast to [{heads}, {T}, {T}] "
            "as [T], [T|1, T] or [heads|1, T|1, T]"
        )
    return b


def _targets_chunk(targets: TargetProvider, q0: int, q1: int, n_roles: int | None, T: int) -> torch.Tensor:
    """The provider's rows q0:q1 as a bool tensor [R, q1 - q0, T], checked."""
    S = torch.as_tensor(targets(q0, q1))
    if S.dim() != 3 or S.shape[1:] != (q1 - q0, T) or (n_roles is not None and S.shape[0] != n_roles):
        raise HeadsieveError(
            f"target provider: rows {q0}:{q1} gave shape {tuple(S.shape)}, expected "
            f"[{'n_roles' if n_roles is None else n_roles}, {q1 - q0}, {T}]"
        )
    return S.to(torch.bool)


def attention_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    q0: int,
    q1: int,
    causal: bool,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Attention rows of queries ``q0:q1`` over the keys they can reach: [heads, q1 - q0, K] in q's dtype,
    ``K = q1`` when ``causal`` (the keys after the chunk's last query get no weight and are not computed),
    else ``T``.

    ``q`` [heads, T, d] already scaled, ``k`` [kv_heads, T, d] (grouped: query head ``h`` reads key head
    ``h // (heads // kv_heads)``), ``bias`` [heads or 1, T or 1, T] or None.  The softmax is torch's, which
    subtracts each row's maximum before the exponential."""
    heads, T, d = q.shape
    kv_heads = k.shape[0]
    group = heads // kv_heads
    c = q1 - q0
    K = q1 if causal else T
    qc = q[:, q0:q1].reshape(kv_heads, group * c, d)  # head h = kv * group + g
    scores = torch.bmm(qc, k[:, :K].transpose(1, 2)).view(heads, c, K)
    if bias is not None:
        rows = slice(q0, q1) if bias.shape[1] == T and T > 1 else slice(None)
        scores.add_(bias[:, rows, :K])
    if causal:  # within the chunk's own keys, key j > query i is the future
        future = torch.ones(c, c, dtype=torch.bool).triu(1)
        scores[:, :, q0:q1].masked_fill_(future, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _masses_of_rows(P: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Mass of rows ``P`` [H, c, K] on targets ``S`` [R, c, K]: [R, H, c] (one role at a time: the
    temporary is [H, c, K])."""
    return torch.stack([(P * S[r]).sum(-1) for r in range(S.shape[0])])


def _collect(rows_of, targets: TargetProvider, T: int, chunk: int) -> RoleMasses:
    """Walk the queries in chunks: ``rows_of(q0, q1)`` gives attention rows [H, c, K] over keys ``0..K-1``
    (``K <= T``; the keys past ``K`` get no weight)."""
    if T == 0:
        raise HeadsieveError("role masses: an input of length 0 has no queries")
    masses, row_sums, counts = [], [], []
    n_roles = None
    for q0 in range(0, T, chunk):
        q1 = min(q0 + chunk, T)
        S = _targets_chunk(targets, q0, q1, n_roles, T)
        n_roles = S.shape[0]
        P = rows_of(q0, q1)
        masses.append(_masses_of_rows(P, S[:, :, : P.shape[-1]].to(P.dtype)))
        row_sums.append(P.sum(-1))
        counts.append(S.sum(-1))
        del P, S
    return RoleMasses(
        mass=torch.cat(masses, dim=2).numpy(),
        row=torch.cat(row_sums, dim=1).numpy(),
        n_targets=torch.cat(counts, dim=1).numpy().astype(np.int64),
    )


def chunked_role_masses(
    q,
    k,
    targets: TargetProvider,
    *,
    scale: float | None = None,
    causal: bool = False,
    bias=None,
    chunk: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float32,
) -> RoleMasses:
    """Role masses of one layer from its queries and keys, ``chunk`` queries at a time.

    ``q`` [heads, T, d] and ``k`` [kv_heads, T, d] (NumPy or torch; after any rotary embedding), ``scale``
    (default ``1 / sqrt(d)``), ``causal`` (query ``i`` sees keys ``0..i``), ``bias`` additive, broadcast to
    [heads, T, T] ([T] per key, [T|1, T], [heads|1, T|1, T]), ``targets`` the provider.  Peak memory beyond
    the inputs and outputs: the chunk's logits and softmax rows (2 x [heads, chunk, T]), one temporary of
    that size in the contraction, and the provider's target rows [n_roles, chunk, T] (bool and as dtype)."""
    q = _as_tensor(q, dtype)
    k = _as_tensor(k, dtype)
    _check_qk(q, k, chunk)
    heads, T, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    b = _bias3(bias, heads, T, dtype)
    with torch.no_grad():
        q = q * scale
        return _collect(lambda q0, q1: attention_chunk(q, k, q0, q1, causal, b), targets, T, chunk)


def full_role_masses(
    attention, targets: TargetProvider, *, chunk: int | None = None, dtype: torch.dtype = torch.float32
) -> RoleMasses:
    """Role masses from a full attention matrix [heads, T, T] (the dump path), through the same provider
    (called for all queries at once, or ``chunk`` at a time to keep the target rows small)."""
    A = _as_tensor(attention, dtype)
    if A.dim() != 3 or A.shape[1] != A.shape[2]:
        raise HeadsieveError(f"full role masses: attention {tuple(A.shape)} must be [heads, T, T]")
    T = A.shape[1]
    step = T if chunk is None else int(chunk)
    if step < 1 and T:
        raise HeadsieveError(f"full role masses: chunk {chunk} must be at least 1")
    with torch.no_grad():
        return _collect(lambda q0, q1: A[:, q0:q1], targets, T, max(step, 1))


def mass_scores(masses: RoleMasses, n_keys, max_uniform_share: float = 0.25) -> RoleScores:
    """Per-input ``mass`` scores (as ``roles/sieve.py`` defines them) from role masses.

    ``n_keys``: keys each query can see, a number or [T] (:func:`visible_keys`); the uniform share of
    query ``i`` is ``|S_i| / n_keys_i``.  Queries with no target do not count; queries whose share
    exceeds ``max_uniform_share`` (+1e-9, as the sieve) are left out and counted in ``n_undefined``."""
    mass = np.asarray(masses.mass, dtype=np.float64)
    row = np.asarray(masses.row, dtype=np.float64)
    n_targets = np.asarray(masses.n_targets)
    T = n_targets.shape[1]
    keys = np.broadcast_to(np.asarray(n_keys, dtype=np.float64), (T,))
    has = n_targets > 0  # [R, T]
    share = n_targets / keys[None, :]
    defined = has & (share <= max_uniform_share + 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = mass / row[None]  # [R, H, T]
    n_def = defined.sum(1)
    total = np.where(defined[:, None, :], m, 0.0).sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (total / n_def[:, None]).astype(np.float32)
    return RoleScores(scores=scores, n_queries=n_def, n_undefined=has.sum(1) - n_def, present=has.any(1))
