"""Target sets ("sieves") of the head roles, and the role registry.

A role defines, for each query position ``i``, a set ``S_i`` of key positions.  Each function returns
a boolean matrix ``S`` of shape [queries, keys] (``S[i, j]`` is True when ``j`` is in ``S_i``); a query
with an empty row has no target and does not enter the role's score.  Piece-level roles work on the
word pieces of one input; syntactic roles work on words (see :mod:`headsieve.roles.sieve` for how
piece attention is aggregated to words).

Every role is defined once in :data:`ROLES` (name, family, target function, the roles whose target sets
contain it by definition, default thresholds); every list of roles is derived from it.  Adding a piece
role is one target function and one :class:`Role` entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


@dataclass(frozen=True)
class Role:
    """One role: ``targets(facts, options) -> S`` for piece roles (None for the word-level syntactic roles);
    ``nests_in``: the roles whose target sets contain this role's by definition (so a head holding this role
    also holds those, and sharing a head with them is no finding); ``tau``: default threshold per score
    form (see :data:`DEFAULT_TAU`)."""

    name: str
    family: str
    targets: Callable | None
    nests_in: frozenset = frozenset()
    level: str = "piece"


def _block(f, o):
    return block_targets(f.segment, f.special)


#: the role registry, in display order; ``dep:<relation>`` roles are generated (family syntactic, nested
#: in the union role ``syntactic``)
ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role("local", "local", lambda f, o: local_targets(f.n_pieces, o["local_window"])),
        Role("prev", "local", lambda f, o: offset_targets(f.n_pieces, -1), frozenset({"local"})),
        Role("next", "local", lambda f, o: offset_targets(f.n_pieces, 1), frozenset({"local"})),
        Role("self", "local", lambda f, o: offset_targets(f.n_pieces, 0), frozenset({"local"})),
        Role("cls", "delimiter", lambda f, o: cls_targets(f.special), frozenset({"delimiter"})),
        Role("sep", "delimiter", lambda f, o: sep_targets(f.special), frozenset({"delimiter"})),
        Role("delimiter", "delimiter", lambda f, o: delimiter_targets(f.special)),
        Role("block", "block", _block),
        Role("syntactic", "syntactic", None, level="word"),
    )
}

#: piece-level roles: name -> (family, function(sentence facts, options) -> S)  (derived from ROLES)
PIECE_ROLES = {r.name: (r.family, r.targets) for r in ROLES.values() if r.level == "piece"}

#: role -> the roles whose target sets contain it by definition (dep:<relation> -> {syntactic}: see
#: :func:`containers`, which also covers the generated relation roles)
ROLE_NESTING: dict[str, frozenset[str]] = {r.name: r.nests_in for r in ROLES.values()}

#: roles labelled by default (``roles.piece_roles``)
DEFAULT_PIECE_ROLES = ("local", "prev", "next", "self", "cls", "sep", "delimiter", "block")

#: default threshold tau of the one-sided test, per score form (the ``form`` column of scores.parquet):
#: ``mass`` share of a query's attention on its targets (a head with >= 50% on its targets lies well
#: above 0.4; a uniform head scores u_i <= roles.max_uniform_share = 0.25 on every scored query);
#: ``ratio`` the reference sieve ratio (reference tau 3); ``block_contrast`` the own-segment density
#: share (0.5 = no preference; 0.65 = own segment 1.86x as dense as the other); ``block_plain`` the
#: plain own-segment ratio (a perfect block head scores N/|segment|, about 2); ``block_entropy`` the
#: reference code's ratio x entropy (tau 3 as the reference; a uniform head scores ln N and passes it
#: for N > 20).
DEFAULT_TAU: dict[str, float] = {
    "mass": 0.4,
    "ratio": 3.0,
    "block_contrast": 0.65,
    "block_plain": 1.5,
    "block_entropy": 3.0,
}


def role_family(role: str) -> str:
    """The family of a role (``dep:<relation>`` -> syntactic)."""
    if role.startswith("dep:"):
        return "syntactic"
    if role not in ROLES:
        raise KeyError(role)
    return ROLES[role].family


def is_role(role: str) -> bool:
    """A registered role or a relation role ``dep:<relation>``."""
    return role in ROLES or (role.startswith("dep:") and len(role) > 4)


def containers(role: str) -> frozenset[str]:
    """The roles whose target sets contain ``role``'s by definition."""
    if role.startswith("dep:"):
        return frozenset({"syntactic"})
    return ROLE_NESTING.get(role, frozenset())


def nested(a: str, b: str) -> bool:
    """True if either role's target sets contain the other's by definition (a role contains itself)."""
    return a == b or b in containers(a) or a in containers(b)


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
