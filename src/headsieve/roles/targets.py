"""Target sets ("sieves") of the head roles, one function per role.

A role defines, for each query position ``i``, a set ``S_i`` of key positions.  Each function returns
a boolean matrix ``S`` of shape [queries, keys] (``S[i, j]`` is True when ``j`` is in ``S_i``); a query
with an empty row has no target and does not enter the role's score.  Piece-level roles work on the
word pieces of one input; syntactic roles work on words (see :mod:`headsieve.roles.sieve` for how
piece attention is aggregated to words).

Adding a role is one function here and one line in :data:`PIECE_ROLES` (or a new family in sieve.py).
"""

from __future__ import annotations

import numpy as np

from headsieve.tokens import CLS, REGULAR, SEP


def local_targets(n: int, window: int = 2) -> np.ndarray:
    """``S_i = {j : |i - j| <= window}``, the token itself included, clipped at both ends."""
    idx = np.arange(n)
    return np.abs(idx[:, None] - idx[None, :]) <= window


def cls_targets(special: np.ndarray) -> np.ndarray:
    """Every query targets the [CLS] (first special / <s>) position(s)."""
    return np.broadcast_to(special == CLS, (len(special), len(special))).copy()


def sep_targets(special: np.ndarray) -> np.ndarray:
    """Every query targets every [SEP] (</s>) position, averaged."""
    return np.broadcast_to(special == SEP, (len(special), len(special))).copy()


def delimiter_targets(special: np.ndarray) -> np.ndarray:
    """Every query targets [CLS] and every [SEP], averaged."""
    row = (special == CLS) | (special == SEP)
    return np.broadcast_to(row, (len(special), len(special))).copy()


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


#: piece-level roles: name -> (family, function(sentence facts, options) -> S)
PIECE_ROLES = {
    "local": ("local", lambda f, o: local_targets(f.n_pieces, o["local_window"])),
    "cls": ("delimiter", lambda f, o: cls_targets(f.special)),
    "sep": ("delimiter", lambda f, o: sep_targets(f.special)),
    "delimiter": ("delimiter", lambda f, o: delimiter_targets(f.special)),
    "block": ("block", lambda f, o: block_targets(f.segment, f.special)),
}


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
