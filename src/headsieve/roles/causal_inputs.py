"""Inputs for the causal roles, as pure functions deterministic by seed (issue 17).

* :func:`repeated_tokens`: a random token sequence of length ``L`` repeated (Olsson et al.'s induction
  input); from the second copy on every query has an earlier occurrence (``causal:duplicate``) and the token
  after it (``causal:induction``).
* :func:`needle_input`: a haystack of random tokens with a needle inserted at a random depth, a marker, then
  the needle copied; ``copy_query[k]`` is the position whose next token is the ``k``-th needle token and
  ``copy_source[k]`` that token's position in the needle (the key a retrieval head attends to while the
  model copies it, Wu et al. 2024).
* :func:`needle_facts`: the causal facts of a needle input with its copy map (:class:`NeedleFacts`), whose
  target rows for ``causal:retrieval`` :func:`retrieval_rows` gives (query ``copy_query[k]`` -> key
  ``copy_source[k]``; none on facts without a copy map).
* :func:`text_facts`: the causal facts of a UD sentence, one position per word (token ids: the lowercased
  forms, equal forms equal ids; delimiters: ``PUNCT`` words; the gold tree).

Token ids: ``bos`` (default 0) and ``marker`` (default 1) are reserved; random tokens are drawn from
``first_id .. vocab_size - 1`` (``first_id`` default 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headsieve.roles.causal import CausalFacts


def repeated_tokens(seed: int, length: int, vocab_size: int, repeats: int = 2, bos: int | None = 0, first_id: int = 2) -> np.ndarray:
    """``[bos] x x ... x`` (``repeats`` copies of one random sequence ``x`` of ``length`` tokens) as int64."""
    if length < 1 or repeats < 1 or vocab_size <= first_id:
        raise ValueError(f"repeated_tokens: length {length}, repeats {repeats}, vocab {vocab_size}, first id {first_id}")
    x = np.random.default_rng(seed).integers(first_id, vocab_size, size=length)
    head = [] if bos is None else [bos]
    return np.concatenate([np.array(head, dtype=np.int64), np.tile(x, repeats)]).astype(np.int64)


def repeated_facts(seed: int, length: int, vocab_size: int, repeats: int = 2, bos: int | None = 0) -> CausalFacts:
    """Causal facts of :func:`repeated_tokens` (no delimiter, no tree)."""
    token = repeated_tokens(seed, length, vocab_size, repeats, bos)
    return CausalFacts(token=token, delimiter=np.zeros(len(token), dtype=bool))


@dataclass(frozen=True)
class NeedleInput:
    """A needle-in-context input: ``tokens`` [T]; the needle at ``needle_start .. + needle_length``; the
    copy after the marker at ``answer_start``; ``copy_query`` / ``copy_source`` [needle_length]."""

    tokens: np.ndarray
    needle_start: int
    needle_length: int
    answer_start: int
    copy_query: np.ndarray
    copy_source: np.ndarray


def needle_input(
    seed: int,
    context_length: int,
    needle_length: int,
    vocab_size: int,
    bos: int | None = 0,
    marker: int = 1,
    first_id: int = 2,
    lead_marker: bool = False,
) -> NeedleInput:
    """``[bos] haystack[:d] needle haystack[d:] marker needle``: needle tokens distinct and absent from the
    haystack, so each copied token has exactly one source; depth ``d`` uniform in ``0..context_length``.

    ``lead_marker``: the marker also stands right before the needle (``... marker needle haystack[d:] marker
    needle``), so the context says where the needle begins and every needle token, the first included, can
    be copied from the context (the token after the earlier occurrence of the current one); without it the
    first needle token cannot be known from the context.  Same draws either way."""
    pool = vocab_size - first_id
    if needle_length < 1 or context_length < 0 or pool <= needle_length:
        raise ValueError(f"needle_input: needle {needle_length}, context {context_length}, vocab {vocab_size}")
    rng = np.random.default_rng(seed)
    needle = rng.choice(pool, size=needle_length, replace=False) + first_id
    rest = np.setdiff1d(np.arange(first_id, vocab_size), needle)
    haystack = rng.choice(rest, size=context_length, replace=True)
    depth = int(rng.integers(0, context_length + 1))
    head = [] if bos is None else [bos]
    lead = [marker] if lead_marker else []
    tokens = np.concatenate([head, haystack[:depth], lead, needle, haystack[depth:], [marker], needle]).astype(np.int64)
    needle_start = len(head) + depth + len(lead)
    answer_start = len(head) + context_length + len(lead) + needle_length + 1
    k = np.arange(needle_length)
    return NeedleInput(tokens, needle_start, needle_length, answer_start, answer_start + k - 1, needle_start + k)


def text_facts(words, upos, heads) -> CausalFacts:
    """Causal facts of one UD sentence, one position per word: token ids from the lowercased forms (equal
    forms, equal ids), delimiters where ``upos`` is PUNCT, the gold ``heads`` (0 root, else 1-based)."""
    forms = [w.lower() for w in words]
    _, token = np.unique(np.array(forms, dtype=object), return_inverse=True)
    n = len(forms)
    return CausalFacts(
        token=token.astype(np.int64).reshape(n),
        delimiter=np.array([u == "PUNCT" for u in upos], dtype=bool).reshape(n),
        piece_word=np.arange(n),
        word_head=np.asarray(heads, dtype=np.int64),
    )


@dataclass(frozen=True)
class NeedleFacts(CausalFacts):
    """The causal facts of a needle input (:func:`needle_facts`) with the copy map of ``causal:retrieval``:
    ``copy_query`` [K] (the queries whose next token is a needle token) and ``copy_source`` [K] (that
    token's position in the needle)."""

    copy_query: np.ndarray | None = None
    copy_source: np.ndarray | None = None


def needle_facts(needle: NeedleInput) -> NeedleFacts:
    """Causal facts of a needle input (no delimiter, no tree) with its copy map."""
    token = np.asarray(needle.tokens, dtype=np.int64)
    return NeedleFacts(token=token, delimiter=np.zeros(len(token), dtype=bool),
                       copy_query=np.asarray(needle.copy_query, dtype=np.int64),
                       copy_source=np.asarray(needle.copy_source, dtype=np.int64))  # fmt: skip


def retrieval_rows(facts: CausalFacts, q0: int = 0, q1: int | None = None) -> np.ndarray:
    """``causal:retrieval``: query ``copy_query[k]`` targets key ``copy_source[k]`` (the needle token the model
    copies next, Wu et al. 2024); every other query, and every query of facts without a copy map, none."""
    n = facts.n_pieces
    q1 = n if q1 is None else q1
    if not 0 <= q0 <= q1 <= n:
        raise ValueError(f"query range [{q0}, {q1}) outside a sequence of {n}")
    S = np.zeros((q1 - q0, n), dtype=bool)
    query, source = getattr(facts, "copy_query", None), getattr(facts, "copy_source", None)
    if query is None or source is None:
        return S
    query, source = np.asarray(query, dtype=np.int64), np.asarray(source, dtype=np.int64)
    keep = (query >= q0) & (query < q1) & (source <= query)
    S[query[keep] - q0, source[keep]] = True
    return S
