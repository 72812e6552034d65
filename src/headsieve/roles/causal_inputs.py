"""Inputs for the causal roles, as pure functions deterministic by seed (issue 17).

* :func:`repeated_tokens`: a random token sequence of length ``L`` repeated (Olsson et al.'s induction
  input); from the second copy on every query has an earlier occurrence (``causal:duplicate``) and the token
  after it (``causal:induction``).
* :func:`needle_input`: a haystack of random tokens with a needle inserted at a random depth, a marker, then
  the needle copied; ``copy_query[k]`` is the position whose next token is the ``k``-th needle token and
  ``copy_source[k]`` that token's position in the needle (the key a retrieval head attends to while the
  model copies it, Wu et al. 2024).
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
) -> NeedleInput:
    """``[bos] haystack[:d] needle haystack[d:] marker needle``: needle tokens distinct and absent from the
    haystack, so each copied token has exactly one source; depth ``d`` uniform in ``0..context_length``."""
    pool = vocab_size - first_id
    if needle_length < 1 or context_length < 0 or pool <= needle_length:
        raise ValueError(f"needle_input: needle {needle_length}, context {context_length}, vocab {vocab_size}")
    rng = np.random.default_rng(seed)
    needle = rng.choice(pool, size=needle_length, replace=False) + first_id
    rest = np.setdiff1d(np.arange(first_id, vocab_size), needle)
    haystack = rng.choice(rest, size=context_length, replace=True)
    depth = int(rng.integers(0, context_length + 1))
    head = [] if bos is None else [bos]
    tokens = np.concatenate([head, haystack[:depth], needle, haystack[depth:], [marker], needle]).astype(np.int64)
    needle_start = len(head) + depth
    answer_start = len(head) + context_length + needle_length + 1
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
