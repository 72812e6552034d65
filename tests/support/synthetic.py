"""Synthetic inputs in the tokens.parquet row form, and attention with planted roles.

Used by the role tests: random sentences with multi-piece words, multi-word tokens, truncated words and
random trees; sentence pairs; Dirichlet (no-role) attention; attention where chosen heads hold a role.
"""

from __future__ import annotations

import numpy as np

from headsieve.roles import separation
from headsieve.tokens import CLS, REGULAR, SEP

RELATIONS = ("nsubj", "obj", "amod", "det", "case", "advmod")


def random_tree(rng, n: int, min_distance: int = 1) -> np.ndarray:
    """UD heads (0 = root, 1-based, int32) of a random tree over n words; arcs at least ``min_distance`` long
    where possible (the planted separation matrix's tree, the same draws)."""
    return separation.random_tree(rng, n, min_distance).astype(np.int32)


def sentence_row(
    rng,
    n_words: int,
    max_pieces: int = 3,
    mwt: bool = True,
    lost: bool = True,
    min_distance: int = 1,
    index: int = 0,
) -> dict:
    """A UD-like tokens row: [CLS] pieces... [SEP], words with 1..max_pieces pieces, maybe one multi-word
    token (two words sharing a surface token) and maybe one word not kept (truncated away)."""
    heads = random_tree(rng, n_words, min_distance)
    word_token = list(range(n_words))
    if mwt and n_words > 3:
        k = int(rng.integers(1, n_words - 1))  # words k and k+1 share a surface token
        word_token = [t if w <= k else t - 1 for w, t in enumerate(word_token)]
    n_tokens = max(word_token) + 1
    pieces_per_token = rng.integers(1, max_pieces + 1, size=n_tokens)
    piece_token = [-1] + [t for t in range(n_tokens) for _ in range(pieces_per_token[t])] + [-1]
    n = len(piece_token)
    kept = np.ones(n_words, dtype=bool)
    if lost and n_words > 4:
        kept[-1] = False
    return {
        "sentence_index": index,
        "sentence_id": f"s{index}",
        "tokens": [f"t{t}" for t in range(n_tokens)],
        "word_token": word_token,
        "word_head": heads.tolist(),
        "word_deprel": [RELATIONS[int(rng.integers(len(RELATIONS)))] if h else "root" for h in heads],
        "word_upos": ["PUNCT" if rng.random() < 0.1 else "NOUN" for _ in range(n_words)],
        "word_kept": kept.tolist(),
        "piece_token": piece_token,
        "piece_segment": [-1] + [0] * (n - 2) + [-1],
        "piece_special": [CLS] + [REGULAR] * (n - 2) + [SEP],
        "n_pieces": n,
        "input_ids": list(range(n)),
    }


def pair_row(rng, len_a: int, len_b: int, index: int = 0) -> dict:
    """A GLUE-like pair: [CLS] A [SEP] B [SEP], one piece per word, no tree."""
    n = len_a + len_b + 3
    special = [CLS] + [REGULAR] * len_a + [SEP] + [REGULAR] * len_b + [SEP]
    segment = [-1] + [0] * len_a + [-1] + [1] * len_b + [-1]
    piece_token, t = [], 0
    for s in special:
        piece_token.append(t if s == REGULAR else -1)
        t += s == REGULAR
    words = len_a + len_b
    return {
        "sentence_index": index,
        "sentence_id": f"p{index}",
        "tokens": [f"w{w}" for w in range(words)],
        "word_token": list(range(words)),
        "word_head": None,
        "word_deprel": None,
        "word_upos": None,
        "word_kept": [True] * words,
        "piece_token": piece_token,
        "piece_segment": segment,
        "piece_special": special,
        "n_pieces": n,
        "input_ids": list(range(n)),
    }


def dirichlet_attention(rng, layers: int, heads: int, n: int, concentration: float = 1.0) -> np.ndarray:
    """Attention with no role: every row an independent Dirichlet draw; [L, H, N, N] float32."""
    return rng.dirichlet(np.full(n, concentration), size=(layers, heads, n)).astype(np.float32)


def normalise(rows: np.ndarray) -> np.ndarray:
    return rows / rows.sum(-1, keepdims=True)


def planted_rows(kind: str, row: dict, window: int = 2) -> np.ndarray:
    """One head's [N, N] attention holding role ``kind`` for a tokens row (pure, no noise)."""
    n = row["n_pieces"]
    special = np.asarray(row["piece_special"])
    idx = np.arange(n)
    if kind == "local":
        return normalise((np.abs(idx[:, None] - idx[None, :]) <= window).astype(float))
    if kind in ("prev", "next", "self"):  # one-hot at the offset; the row without one: uniform
        A = (idx[None, :] - idx[:, None] == {"prev": -1, "next": 1, "self": 0}[kind]).astype(float)
        A[A.sum(1) == 0] = 1.0
        return normalise(A)
    if kind == "uniform":
        return np.full((n, n), 1.0 / n)
    if kind == "other_segment":  # a regular piece of a pair attends to the other segment's regular pieces
        seg = np.asarray(row["piece_segment"])
        regular = special == REGULAR
        A = ((seg[:, None] != seg[None, :]) & regular[None, :] & regular[:, None]).astype(float)
        A[~regular] = 1.0
        return normalise(A)
    if kind == "cls":
        return np.tile((special == CLS).astype(float), (n, 1))
    if kind == "sep":
        return normalise(np.tile((special == SEP).astype(float), (n, 1)))
    if kind == "block":
        seg = np.asarray(row["piece_segment"])
        regular = special == REGULAR
        A = ((seg[:, None] == seg[None, :]) & regular[None, :] & regular[:, None]).astype(float)
        A[~regular] = 1.0  # special tokens: uniform
        return normalise(A)
    if kind == "syntactic":  # every dependent's pieces attend to its head word's pieces
        A = np.ones((n, n))
        piece_token = np.asarray(row["piece_token"])
        for w, h in enumerate(row["word_head"]):
            if h == 0:
                continue
            src = piece_token == row["word_token"][w]
            dst = piece_token == row["word_token"][h - 1]
            A[src] = dst.astype(float)
        return normalise(A)
    raise ValueError(kind)
