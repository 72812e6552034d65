"""Target sets ("sieves") of the head roles.

A role defines, for each query position ``i``, a set ``S_i`` of key positions.  Each function returns
a boolean matrix ``S`` of shape [queries, keys] (``S[i, j]`` is True when ``j`` is in ``S_i``); a query
with an empty row has no target and does not enter the role's score.  Piece-level roles work on the
word pieces of one input; syntactic roles work on words (see :mod:`headsieve.roles.sieve` for how
piece attention is aggregated to words).

The roles themselves (name, family, which target function, nesting, thresholds, where they apply) are
defined once, in the registry :data:`headsieve.roles.registry.ROLES`.  Target functions of roles that
apply to an encoder-decoder model take a :class:`SourceFacts` (the source's special codes and the number of
queries: source positions for encoder self-attention, target positions for cross-attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headsieve.tokens import CLS, REGULAR, SEP


def local_targets(n: int, window: int = 2) -> np.ndarray:
    """``S_i = {j : |i - j| <= window}``, the token itself included, clipped at both ends."""
    idx = np.arange(n)
    return np.abs(idx[:, None] - idx[None, :]) <= window


def offset_targets(n: int, offset: int) -> np.ndarray:
    """``S_i = {i + offset}`` where that position exists: previous token (-1), self (0), next token (+1)."""
    idx = np.arange(n)
    return idx[None, :] - idx[:, None] == offset


def key_targets(row: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    """Every one of ``n_queries`` queries (default: one per key) targets the keys where ``row`` is True."""
    return np.broadcast_to(row, (len(row) if n_queries is None else n_queries, len(row))).copy()


def cls_targets(special: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    """Every query targets the [CLS] (first special / <s>) position(s)."""
    return key_targets(special == CLS, n_queries)


def sep_targets(special: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    """Every query targets every [SEP] (</s>) position, averaged."""
    return key_targets(special == SEP, n_queries)


def delimiter_targets(special: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    """Every query targets [CLS] and every [SEP], averaged."""
    return key_targets((special == CLS) | (special == SEP), n_queries)


def block_targets(segment: np.ndarray, special: np.ndarray) -> np.ndarray:
    """For a pair ``[CLS] A [SEP] B [SEP]``: a regular piece targets the regular pieces of its own segment.

    Special tokens have no segment and are not queries.  Inputs with one segment have no block role
    (every row empty).
    """
    regular = special == REGULAR
    if len(np.unique(segment[regular])) < 2:
        return np.zeros((len(segment), len(segment)), dtype=bool)
    same = segment[:, None] == segment[None, :]
    return same & regular[:, None] & regular[None, :]


def diagonal_targets(n_queries: int, special: np.ndarray, band: int = 1) -> np.ndarray:
    """Cross-attention [queries, keys]: the source's regular tokens (no specials) at ``R[0..m-1]``; target
    position ``t`` maps to ``c_t = round(t (m - 1) / (T - 1))`` (0 when ``T = 1``), the source token at the
    same relative position, and ``S_t = {R[k] : |k - c_t| <= band}`` (monotone alignment); no targets when
    the source has no regular token."""
    regular = np.flatnonzero(special == REGULAR)
    S = np.zeros((n_queries, len(special)), dtype=bool)
    m = len(regular)
    if m == 0:
        return S
    t = np.arange(n_queries)
    centre = np.rint(t * (m - 1) / max(n_queries - 1, 1)).astype(int)
    k = np.arange(m)
    near = np.abs(k[None, :] - centre[:, None]) <= band  # [T, m]
    S[:, regular] = near
    return S


@dataclass(frozen=True)
class SourceFacts:
    """What the roles of an encoder-decoder model need of one sentence: the source's special codes
    (``headsieve.tokens``) and the number of queries (source positions for encoder self-attention, target
    positions for cross-attention)."""

    special: np.ndarray
    n_queries: int

    @property
    def n_pieces(self) -> int:
        """Source positions (the keys)."""
        return len(self.special)


def syntactic_targets(
    heads: np.ndarray,
    relations: np.ndarray,
    usable: np.ndarray,
    roles: list[str],
    union: set[str],
    direction: str = "dep2head",
) -> np.ndarray:
    """Word-level target sets of the syntactic roles, [len(roles), words, words].

    ``heads`` are UD heads (0 = root, else 1-based); ``relations`` each word's relation label;
    ``usable[a, b]`` says whether a pair of words can be scored (both survived truncation and are not
    inside one surface token).  ``roles`` names the roles to build: ``dep:<relation>`` for one relation,
    ``syntactic`` for the union of the relations in ``union``.  Directions: ``dep2head`` (query = the
    dependent, target = its head; the reference default), ``head2dep`` (query = the head, targets = its
    dependents with that relation), ``both``.
    """
    n = len(heads)
    S = np.zeros((len(roles), n, n), dtype=bool)
    dep = np.flatnonzero(heads > 0)
    head = heads[dep] - 1
    keep = usable[dep, head]
    dep, head = dep[keep], head[keep]
    rel = relations[dep]
    position = {r: k for k, r in enumerate(roles)}
    arcs = [(np.array([position.get(f"dep:{r}", -1) for r in rel], dtype=int), np.ones(len(dep), bool))]
    if "syntactic" in position:
        arcs.append((np.full(len(dep), position["syntactic"]), np.fromiter((r in union for r in rel), bool, len(rel))))
    for k, member in arcs:
        sel = member & (k >= 0)
        if direction in ("dep2head", "both"):
            S[k[sel], dep[sel], head[sel]] = True
        if direction in ("head2dep", "both"):
            S[k[sel], head[sel], dep[sel]] = True
    return S
