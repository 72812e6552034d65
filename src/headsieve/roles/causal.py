"""Target sets of the causal head roles (decoder-only self-attention, issue 17).

Under the causal mask query ``q`` sees keys ``0..q``.  Every causal role's target set is restricted to the
keys a query can see, and its uniform reference is the share a uniform causal row puts there,
``u_q = |S_q| / (q + 1)`` (see :mod:`headsieve.roles.causal_score`).  A query with no visible target has
no score for that role (left out and counted).

Each role has a row function ``rows(facts, options, q0, q1) -> [q1 - q0, T]`` bool: the target rows of the
queries ``q0..q1-1`` only, so that a scorer working in chunks of queries never builds the full ``T x T``
mask; the registry's ``targets(facts, options)`` is the same function over every query.  Definitions
(``w = options["local_window"]``):

* ``causal:prev``: key ``q - 1``;  ``causal:local``: keys ``q - w .. q`` (the backward window, the query
  itself included; contains ``causal:prev``);
* ``causal:sink``: key 0 (the first-token "attention sink");
* ``causal:delimiter``: the visible delimiter/punctuation tokens (``facts.delimiter``), the query itself
  included when it is one;
* ``causal:duplicate``: earlier keys ``k < q`` holding the query's token;
* ``causal:induction``: for each earlier occurrence ``k < q`` of the query's token, the key ``k + 1`` (the
  token that followed it), itself left out (``k + 1 < q``: an immediate repeat ``A A`` gives no target);
* ``causal:head``: the pieces of a dependent word attend back to the pieces of its head word, for arcs whose
  head precedes the dependent (gold trees, ``facts.word_head``);
* ``causal:dependent``: the pieces of a head word attend back to the pieces of its dependents that precede
  it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CausalFacts:
    """What the causal roles need of one sequence: ``token`` [T] token ids, ``delimiter`` [T] bool
    (delimiter/punctuation positions), and for the syntactic roles ``piece_word`` [T] (0-based word of each
    position, -1 for none) and ``word_head`` [W] (UD heads: 0 root, else 1-based), or None without a tree."""

    token: np.ndarray
    delimiter: np.ndarray
    piece_word: np.ndarray | None = None
    word_head: np.ndarray | None = None

    @property
    def n_pieces(self) -> int:
        """Positions (the keys)."""
        return len(self.token)

    @property
    def n_queries(self) -> int:
        """Queries of the self-attention: one per position."""
        return len(self.token)


def visible(n: int, q0: int, q1: int) -> np.ndarray:
    """[q1 - q0, n]: key ``k`` is visible from query ``q`` when ``k <= q``."""
    return np.arange(n)[None, :] <= np.arange(q0, q1)[:, None]


def _span(facts: CausalFacts, q0: int, q1: int | None) -> tuple[int, int, np.ndarray, np.ndarray]:
    n = facts.n_pieces
    q1 = n if q1 is None else q1
    if not 0 <= q0 <= q1 <= n:
        raise ValueError(f"query range [{q0}, {q1}) outside a sequence of {n}")
    return q0, q1, np.arange(q0, q1)[:, None], np.arange(n)[None, :]


def offset_rows(facts: CausalFacts, offset: int, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """``S_q = {q + offset}`` (offset <= 0) where that key exists."""
    q0, q1, q, k = _span(facts, q0, q1)
    return k - q == offset


def window_rows(facts: CausalFacts, window: int, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """``S_q = {k : q - window <= k <= q}``, clipped at the start."""
    q0, q1, q, k = _span(facts, q0, q1)
    return (k <= q) & (k >= q - window)


def key_rows(facts: CausalFacts, keys: np.ndarray, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """Every query targets the visible keys where ``keys`` [T] is True."""
    q0, q1, q, k = _span(facts, q0, q1)
    return np.asarray(keys, dtype=bool)[None, :] & (k <= q)


def sink_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """Every query targets key 0."""
    return key_rows(facts, np.arange(facts.n_pieces) == 0, q0, q1)


def delimiter_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """Every query targets the visible delimiter/punctuation positions."""
    return key_rows(facts, facts.delimiter, q0, q1)


def duplicate_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """``S_q = {k < q : token[k] == token[q]}``."""
    q0, q1, q, k = _span(facts, q0, q1)
    token = np.asarray(facts.token)
    return (token[q0:q1, None] == token[None, :]) & (k < q)


def induction_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """``S_q = {k + 1 : k < q, token[k] == token[q], k + 1 < q}`` (the token after an earlier occurrence)."""
    q0, q1, q, k = _span(facts, q0, q1)
    earlier = duplicate_rows(facts, q0, q1)
    S = np.zeros_like(earlier)
    S[:, 1:] = earlier[:, :-1]
    return S & (k < q)


def _arc_rows(facts: CausalFacts, dep2head: bool, q0: int, q1: int | None) -> np.ndarray:
    q0, q1, q, k = _span(facts, q0, q1)
    if facts.word_head is None or facts.piece_word is None:
        return np.zeros((q1 - q0, facts.n_pieces), dtype=bool)
    heads = np.asarray(facts.word_head)
    W = len(heads)
    dep = np.flatnonzero(heads > 0)
    head = heads[dep] - 1
    back = head < dep  # arcs whose head precedes the dependent
    arcs = np.zeros((W, W), dtype=bool)
    if dep2head:
        arcs[dep[back], head[back]] = True  # query word: the dependent; target: its head
    else:
        arcs[head[~back], dep[~back]] = True  # query word: the head; target: an earlier dependent
    word = np.asarray(facts.piece_word)
    qw, kw = word[q0:q1], word
    ok = (qw[:, None] >= 0) & (kw[None, :] >= 0)
    return arcs[np.clip(qw, 0, None)[:, None], np.clip(kw, 0, None)[None, :]] & ok & (k <= q)


def head_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """A dependent's pieces target the pieces of its head word, when the head precedes the dependent."""
    return _arc_rows(facts, True, q0, q1)


def dependent_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """A head word's pieces target the pieces of its dependents that precede it."""
    return _arc_rows(facts, False, q0, q1)
