"""Scores of the causal roles (decoder-only self-attention), with the statistics of the encoder roles.

Query ``q`` sees keys ``0..q``; a role's targets ``S_q`` are visible keys (:mod:`headsieve.roles.causal`).
Score forms (``score`` option, as ``roles.score``):

* ``mass`` (default): ``m_q = sum_{k in S_q} A[q, k] / sum_k A[q, k]``; the uniform share is
  ``u_q = |S_q| / (q + 1)`` (a uniform causal row puts that much there); queries with ``u_q`` above
  ``max_uniform_share`` are left out and counted (so early rows, which see few keys, do not enter: a
  previous-token query is scored from ``q = 3`` on at the default 0.25).
* ``ratio``: ``r_q = mean_{k in S_q} A[q, k] / abar_q`` with ``abar_q = sum_k A[q, k] / (q + 1)``.

Queries with no visible target (a first occurrence for ``causal:duplicate``) are undefined too: they are
left out and counted in ``n_undefined``.  Sentence score: the mean over the defined queries (NaN, with
``n_queries`` 0, when the role has targets in the input but no query is defined); a role with no target
anywhere in an input gives no row for it.  The pair sums are :func:`headsieve.roles.sieve.mass_from_pairs`
and :func:`headsieve.roles.sieve.sieve_from_pairs`, the encoder roles' code; the tests are
:func:`headsieve.roles.tests.role_tests` with the registry's default tau per score form.
"""

from __future__ import annotations

import numpy as np

from headsieve.errors import HeadsieveError
from headsieve.roles.causal import CausalFacts
from headsieve.roles.registry import ROLES, role_names
from headsieve.roles.sieve import SCORE_FORMS, Batch, mass_from_pairs, sieve_from_pairs

#: the causal roles, in display order
CAUSAL_ROLES = role_names("causal")

CAUSAL_OPTIONS = {
    "score": "mass",  # mass | ratio
    "max_uniform_share": 0.25,  # mass: queries whose |S_q| / (q + 1) exceeds this are left out
    "local_window": 2,  # causal:local: keys q - w .. q
    "roles": list(CAUSAL_ROLES),
}


def causal_target_rows(facts: CausalFacts, options: dict | None = None, q0: int = 0, q1: int | None = None, roles=None):
    """The target rows of queries ``q0..q1-1`` of one sequence for each causal role: {role: [q1 - q0, T]
    bool} (keys <= query; only these rows are built, never the full T x T mask)."""
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    q1 = facts.n_queries if q1 is None else q1
    out = {}
    for name in roles or opts["roles"]:
        entry = ROLES.get(name)
        if entry is None or entry.rows is None:
            raise HeadsieveError(f"role {name!r}: not a causal role (causal roles: {', '.join(CAUSAL_ROLES)})")
        out[name] = entry.rows(facts, opts, q0, q1)
    return out


def check_causal(batch: Batch, names: list[str], atol: float = 1e-6) -> None:
    """One line naming the first input whose attention puts weight on a key after its query."""
    N = batch.A.shape[1]
    future = np.triu(np.ones((N, N), dtype=bool), 1)
    for b in range(len(batch.facts)):
        worst = float(np.abs(batch.A[b][future]).max()) if N > 1 else 0.0
        if worst > atol:
            raise HeadsieveError(f"{names[b]}: attention is not causal (weight {worst:.3g} on a key after its query)")


def _pairs(batch: Batch, names: list[str], opts: dict):
    """(input, role, query, key) of every target, and the number of queries with a target per (input, role)."""
    parts, with_target = [], np.zeros((len(batch.facts), len(names)), dtype=np.int64)
    for b, facts in enumerate(batch.facts):
        rows = causal_target_rows(facts, opts, roles=names)
        for r, name in enumerate(names):
            q, k = np.nonzero(rows[name])
            parts.append((np.full(len(q), b), np.full(len(q), r), q, k))
            with_target[b, r] = rows[name].any(1).sum()
    b, r, q, k = (np.concatenate(x).astype(np.int64) for x in zip(*parts))
    return b, r, q, k, with_target


def score_causal(batch: Batch, options: dict | None = None, detail: bool = False):
    """Every head's score for every causal role, for a batch of causal attention (facts: CausalFacts).

    Returns a list of (batch position, role, scores [X], n_queries) sorted by (position, role); with
    ``detail`` also n_undefined (queries without a visible target or above the uniform-share cap) and the
    score form."""
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    if opts["score"] not in SCORE_FORMS:
        raise HeadsieveError(f"causal roles: score form {opts['score']!r} not one of {SCORE_FORMS}")
    names = list(opts["roles"])
    b, r, q, k, with_target = _pairs(batch, names, opts)
    if len(b) == 0:
        return []
    values = batch.A[b, q, k]
    if opts["score"] == "mass":
        share = 1.0 / (q + 1)
        bs, rs, scores, nq, nu = mass_from_pairs(values, b, r, q, batch.row_sums, share, opts["max_uniform_share"])
    else:
        bs, rs, scores, nq = sieve_from_pairs(values, b, r, q, batch.causal_abar)
        nu = np.zeros(len(bs), dtype=np.int64)
    no_target = batch.lengths[bs] - with_target[bs, rs]
    out = [
        (int(x), names[y], s, int(n), int(u + e), opts["score"])
        for x, y, s, n, u, e in zip(bs, rs, scores, nq, nu, no_target)
    ]
    out.sort(key=lambda o: (o[0], o[1]))
    return out if detail else [o[:4] for o in out]


def causal_target_provider(facts: CausalFacts, options: dict | None = None, roles=None):
    """A target provider for :mod:`headsieve.roles.chunked`: ``targets(q0, q1) -> bool [n_roles, q1 - q0, T]``,
    the rows of the causal roles (``roles``, default ``options["roles"]``) in that order."""
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    names = list(roles or opts["roles"])

    def targets(q0: int, q1: int) -> np.ndarray:
        rows = causal_target_rows(facts, opts, q0, q1, names)
        return np.stack([rows[name] for name in names])

    return targets
