"""Per-head attention statistics after Clark et al. (2019), accumulated over a corpus.

* mean attention to [CLS], to [SEP] (all of them summed), to punctuation, to the token itself, to the
  previous and to the next token (averaged over every query piece of the corpus);
* mean row entropy (nats) against the entropy of uniform attention over the same rows (``log N``);
* per-relation accuracy: for each dependent, is the word it attends to most (ignoring special tokens
  and itself) its head?  Word attention sums over the pieces of the target word and averages over the
  pieces of the query word (the paper's convention).  Compared with the best fixed-offset baseline
  (head = dependent + k, k in -3..+2, k != 0).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from headsieve.roles.sieve import Batch, SentenceFacts
from headsieve.tokens import CLS, SEP, is_punctuation

OFFSETS = (-3, -2, -1, 1, 2)
PIECE_STATS = ("cls", "sep", "punct", "self", "prev", "next", "entropy", "entropy_uniform")


def punctuation_pieces(row: dict, facts: SentenceFacts) -> np.ndarray:
    """[N] bool: pieces of punctuation tokens (UPOS PUNCT where tagged, else all-punctuation text)."""
    if row.get("word_upos") is not None:
        punct_tokens = {t for t, u in zip(row["word_token"], row["word_upos"]) if u == "PUNCT"}
    else:
        punct_tokens = {t for t, w in enumerate(row["tokens"]) if is_punctuation(w)}
    return np.isin(facts.piece_token, list(punct_tokens)) & (facts.piece_token >= 0)


def _key_masks(facts_list, rows, N) -> dict[str, np.ndarray]:
    masks = {name: np.zeros((len(facts_list), N), dtype=np.float32) for name in ("cls", "sep", "punct")}
    for b, (f, row) in enumerate(zip(facts_list, rows)):
        n = f.n_pieces
        masks["cls"][b, :n] = f.special == CLS
        masks["sep"][b, :n] = f.special == SEP
        masks["punct"][b, :n] = punctuation_pieces(row, f)
    return masks


class HeadStats:
    """Accumulate Clark-style statistics batch by batch; :meth:`frame` gives the tidy table."""

    def __init__(self, n_layers: int, n_heads: int):
        self.shape = (n_layers, n_heads)
        X = n_layers * n_heads
        self.sums = {s: np.zeros(X) for s in PIECE_STATS}
        self.counts = {s: 0 for s in PIECE_STATS}
        self.correct: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(X))
        self.n_dep: dict[str, int] = defaultdict(int)
        self.offset_hits: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(OFFSETS)))

    def add_batch(self, batch: Batch, rows: list[dict]) -> None:
        """Add a :class:`~headsieve.roles.sieve.Batch` of inputs (``rows``: their tokens rows)."""
        A, lengths = batch.A, batch.lengths
        n_total = int(lengths.sum())
        received = batch.received  # [B, K, X]: attention each key receives, summed over queries
        for name, mask in _key_masks(batch.facts, rows, A.shape[1]).items():
            self._add(name, np.einsum("bkx,bk->x", received, mask), n_total)
        idx = np.arange(A.shape[1])
        self._add("self", A[:, idx, idx].sum((0, 1)), n_total)
        n_pairs = int((lengths - 1).clip(min=0).sum())
        self._add("prev", A[:, idx[1:], idx[:-1]].sum((0, 1)), n_pairs)
        self._add("next", A[:, idx[:-1], idx[1:]].sum((0, 1)), n_pairs)
        self._add("entropy", batch.entropy.sum((0, 1)), n_total)
        self._add("entropy_uniform", np.full(A.shape[-1], float((lengths * np.log(lengths)).sum())), n_total)
        if any(f.heads is not None for f in batch.facts):
            self._add_accuracy(batch)

    def _add(self, stat: str, total: np.ndarray, n: int) -> None:
        self.sums[stat] += total
        self.counts[stat] += n

    def _add_accuracy(self, batch: Batch) -> None:
        """Which word each dependent attends to most (word attention: mean over its pieces, sum over the
        target word's pieces; special tokens and the dependent itself excluded)."""
        words = batch.words  # usable arcs of every input with a tree, universal relation labels
        dep_flat, head_flat = words.arcs()
        if len(dep_flat) == 0:
            return
        b, dep, head = words.b[dep_flat], words.word[dep_flat], words.word[head_flat]
        rel = words.label[dep_flat]
        W = batch.membership.shape[1]
        rows = batch.word_sum[b, dep]  # [D, W, X], a copy
        rows[(batch.piece_counts[b] == 0) | (np.arange(W)[None, :] == dep[:, None])] = -np.inf  # not candidates
        # "the head is the argmax" (first index on ties), without numpy's slow strided argmax: the head's
        # value is the maximum, and no candidate before it reaches that maximum
        best = rows.max(1)  # [D, X]
        at_head = rows[np.arange(len(dep)), head]  # [D, X]
        rows[np.arange(W)[None, :] >= head[:, None]] = -np.inf  # what is left: the candidates before the head
        hit = (at_head == best) & (rows.max(1) < best)
        names, inverse = np.unique(rel, return_inverse=True)
        # counts per relation (integers, no BLAS call: numpy's BLAS may run on threads the step does not have)
        correct = _count_rows(hit, inverse, len(names))
        n_dep = np.bincount(inverse, minlength=len(names))
        at_offset = _count_rows(head[:, None] == dep[:, None] + np.array(OFFSETS)[None, :], inverse, len(names))
        for k, r in enumerate(names):
            self.correct[r] += correct[k]
            self.n_dep[r] += int(n_dep[k])
            self.offset_hits[r] += at_offset[k]

    def frame(self, model: str, corpus: str) -> pd.DataFrame:
        """Long table: model, corpus, layer, head, stat, relation, value, n, baseline, baseline_offset."""
        L, H = self.shape
        layer, head = (a.ravel() for a in np.meshgrid(np.arange(L), np.arange(H), indexing="ij"))
        parts = []
        for stat in PIECE_STATS:
            value = self.sums[stat] / max(self.counts[stat], 1)
            parts.append(_stat_frame(layer, head, stat, None, value, self.counts[stat], np.nan, 0))
        for rel in sorted(self.n_dep):
            n = self.n_dep[rel]
            best = int(np.argmax(self.offset_hits[rel]))
            value = self.correct[rel] / n
            parts.append(_stat_frame(layer, head, "accuracy", rel, value, n, self.offset_hits[rel][best] / n, OFFSETS[best]))
        out = pd.concat(parts, ignore_index=True)
        out.insert(0, "corpus", corpus)
        out.insert(0, "model", model)
        return out.astype({"layer": "int16", "head": "int16", "n": "int64", "baseline_offset": "int8"})


def _count_rows(flags: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """[n_groups, X] number of True ``flags`` [D, X] per group id of the rows."""
    counts = np.zeros((n_groups, flags.shape[1]), dtype=np.int64)
    np.add.at(counts, group, flags.astype(np.int64))
    return counts


def _stat_frame(layer, head, stat, relation, value, n, baseline, offset) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "stat": stat,
            "relation": relation,
            "value": np.asarray(value).ravel(),
            "n": n,
            "baseline": baseline,
            "baseline_offset": offset,
        }
    )
