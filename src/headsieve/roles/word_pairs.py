"""Word pairs of a batch of inputs: the syntactic roles' (query, target) pairs and their positional decoys.

Built once per batch for every input at once (no per-input target matrices) and shared by the syntactic
roles' scores (:mod:`headsieve.roles.sieve`) and their positional control (:mod:`headsieve.roles.controls`).
The pairs are exactly the True entries of the per-input target matrices that
:func:`headsieve.roles.targets.syntactic_targets` and :func:`headsieve.roles.controls.decoy_targets` build,
in the same order (input, role, query word, target word), so the scores summed over them are the same
numbers; ``tests/unit/roles/test_roles_word_pairs.py`` checks both against those functions.

Inputs are the batch's :class:`~headsieve.roles.sieve.SentenceFacts` and ``piece_counts`` [B, W] (pieces of
each word, zero-padded), from which a word is usable when it was kept and has pieces, and a pair of words
when both are usable and they do not lie inside one surface token (``SentenceFacts.usable_pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DIRECTIONS = ("dep2head", "head2dep", "both")


@dataclass
class WordPairs:
    """(input, role, query word, target word) index arrays [P] (int64), sorted in that order; ``values``
    caches the word attention of the pairs per aggregation (filled by ``Batch.pair_values``)."""

    b: np.ndarray
    r: np.ndarray
    q: np.ndarray
    t: np.ndarray
    values: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.b)


@dataclass
class BatchWords:
    """The words of every input with a tree, concatenated: input ``b``, position ``word`` in the input,
    1-based UD ``head`` (0 root), relation ``label``, surface ``token`` and ``usable`` (kept, with pieces)."""

    b: np.ndarray
    word: np.ndarray
    head: np.ndarray
    label: np.ndarray
    token: np.ndarray
    usable: np.ndarray

    @classmethod
    def of(cls, facts, piece_counts: np.ndarray, subtypes: bool = False) -> "BatchWords":
        with_tree = [b for b, f in enumerate(facts) if f.heads is not None]
        sizes = np.array([len(facts[b].heads) for b in with_tree], dtype=np.int64)
        b = np.repeat(np.array(with_tree, dtype=np.int64), sizes)
        word = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)

        def joined(get, dtype):
            return np.concatenate([get(facts[k]) for k in with_tree]) if with_tree else np.zeros(0, dtype)

        kept = joined(lambda f: f.word_kept, bool)
        return cls(
            b=b,
            word=word,
            head=joined(lambda f: f.heads, np.int32).astype(np.int64),
            label=joined(lambda f: f.labels(subtypes), object),
            token=joined(lambda f: f.word_token, np.int32),
            usable=kept & (piece_counts[b, word] > 0),
        )

    def arcs(self):
        """Usable arcs: flat indices (dependent, head) into these words, both words usable and in different
        surface tokens (the rule of ``SentenceFacts.usable_pairs``)."""
        dep = np.flatnonzero(self.head > 0)
        head = dep - self.word[dep] + self.head[dep] - 1
        keep = self.usable[dep] & self.usable[head] & (self.token[dep] != self.token[head])
        return dep[keep], head[keep]


def syntactic_pairs(words: BatchWords, width: int, roles: list[str], union, direction: str) -> WordPairs:
    """The (input, role, query, target) pairs of the syntactic ``roles`` (``dep:<relation>`` and
    ``syntactic``, the union of the relations in ``union``) over a batch's words; ``width`` is the batch's
    word dimension W.  Same pairs, same order as stacking :func:`~headsieve.roles.targets.syntactic_targets`
    per input and taking the True entries."""
    dep, head = words.arcs()
    position = {name: k for k, name in enumerate(roles)}
    names, inverse = np.unique(words.label[dep], return_inverse=True) if len(dep) else ([], np.zeros(0, int))
    role_of = np.array([position.get(f"dep:{n}", -1) for n in names], dtype=np.int64)[inverse]
    arcs = [(role_of, np.ones(len(dep), dtype=bool))]
    if "syntactic" in position:
        in_union = np.array([n in union for n in names], dtype=bool)[inverse]
        arcs.append((np.full(len(dep), position["syntactic"], dtype=np.int64), in_union))
    parts = []
    for k, member in arcs:
        sel = member & (k >= 0)
        d, h, kk = words.word[dep[sel]], words.word[head[sel]], k[sel]
        if direction in ("dep2head", "both"):
            parts.append((words.b[dep[sel]], kk, d, h))
        if direction in ("head2dep", "both"):
            parts.append((words.b[dep[sel]], kk, h, d))
    b, r, q, t = (np.concatenate(x) for x in zip(*parts)) if parts else (np.zeros(0, np.int64),) * 4
    code = np.unique(((b * max(len(roles), 1) + r) * width + q) * width + t)
    t, code = code % width, code // width
    q, code = code % width, code // width
    return WordPairs(code // max(len(roles), 1), code % max(len(roles), 1), q, t)


def decoy_pairs(words: BatchWords, batch_size: int, width: int, pairs: WordPairs):
    """(input, query, target) of the positional decoys of every input with a tree: usable word pairs at the
    signed offset of some true pair of the input (any role) and not joined by an arc in either direction.
    Same pairs, same order as stacking :func:`~headsieve.roles.controls.decoy_targets` per input."""
    usable = np.zeros((batch_size, width), dtype=bool)
    token = np.full((batch_size, width), -1, dtype=np.int64)
    usable[words.b, words.word] = words.usable
    token[words.b, words.word] = words.token
    linked = np.zeros((batch_size, width, width), dtype=bool)
    dep = np.flatnonzero(words.head > 0)  # every arc, usable or not
    linked[words.b[dep], words.word[dep], words.head[dep] - 1] = True
    linked |= linked.transpose(0, 2, 1)
    present = np.zeros((batch_size, 2 * width + 1), dtype=bool)  # signed offsets of the true pairs
    present[pairs.b, pairs.t - pairs.q + width] = True
    idx = np.arange(width)
    at_offset = present[:, idx[None, :] - idx[:, None] + width]  # [B, W, W]
    decoy = usable[:, :, None] & usable[:, None, :] & (token[:, :, None] != token[:, None, :])
    decoy &= at_offset & ~linked
    return tuple(x.astype(np.int64) for x in np.nonzero(decoy))
