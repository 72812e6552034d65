"""Sieve bias scores: how much more than uniform a head attends to a role's targets.

For one head and one input with attention ``A`` (N x N, rows = queries, summing to 1):

* uniform reference of query ``i``: ``abar_i = (1/N) sum_j A[i, j]`` (about 1/N),
* per-query bias ``r_i = mean_{j in S_i} A[i, j] / abar_i`` (1 = no more than uniform),
* sentence score: the mean of ``r_i`` over the queries with a non-empty target set ``S_i``.

Syntactic roles are scored on words: the attention from word ``a`` to word ``b`` is aggregated from the
word pieces (``mean`` over the pieces of ``a`` of the ``mean``, or ``sum``, over the pieces of ``b``), and
``abar_a`` is the mean of the pieces' uniform references.  Pieces come from the tokenizer's own word
alignment (``tokens.parquet``).

Everything is vectorised over heads, roles and inputs (no Python loop per head, query or target): a
batch of inputs is stacked "heads last" ([B, N, N, L*H]), word-level attention comes from two batched
matrix products, each role's target set is turned into a list of (query, target) pairs, the attention of
all heads on all pairs is gathered at once, and the means over targets, then over queries, are segment
sums over the sorted pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.roles.targets import PIECE_ROLES, syntactic_targets

#: relations scored by default; the union of these is the role ``syntactic``
CORE_RELATIONS = (
    "nsubj", "obj", "iobj", "amod", "advmod", "det", "case", "nmod", "obl", "conj",
    "compound", "aux", "mark", "cop", "nummod", "acl", "advcl", "xcomp", "ccomp",
)  # fmt: skip

DEFAULT_OPTIONS = {
    "local_window": 2,
    "block_weighting": "plain",  # plain | entropy (reference code: ratio x row entropy)
    "direction": "dep2head",  # dep2head | head2dep | both
    "aggregation": "mean",  # mean | sum  (over the pieces of the target word)
    "relations": "all",  # "all" relations present, or a list
    "union": list(CORE_RELATIONS),  # relations whose union is the role 'syntactic'
    "subtypes": False,  # keep relation subtypes (nmod:poss) apart
    "piece_roles": ["local", "cls", "sep", "delimiter", "block"],
}


@dataclass
class SentenceFacts:
    """What the role targets need to know about one input, from its ``tokens.parquet`` row."""

    n_pieces: int
    special: np.ndarray  # [N] piece_special codes
    segment: np.ndarray  # [N] piece_segment (-1 for special tokens)
    piece_token: np.ndarray  # [N] surface token of each piece (-1 for special tokens)
    word_token: np.ndarray  # [W]
    word_kept: np.ndarray  # [W] bool
    heads: np.ndarray | None = None  # [W] UD heads (0 root, 1-based), None without a tree
    relations: np.ndarray | None = None  # [W] relation labels as in the treebank (nmod:poss)

    @classmethod
    def from_row(cls, row: dict) -> "SentenceFacts":
        heads = row.get("word_head")
        rels = row.get("word_deprel")
        return cls(
            n_pieces=int(row["n_pieces"]),
            special=np.asarray(row["piece_special"], dtype=np.int8),
            segment=np.asarray(row["piece_segment"], dtype=np.int8),
            piece_token=np.asarray(row["piece_token"], dtype=np.int32),
            word_token=np.asarray(row["word_token"], dtype=np.int32),
            word_kept=np.asarray(row["word_kept"], dtype=bool),
            heads=None if heads is None else np.asarray(heads, dtype=np.int32),
            relations=None if rels is None else np.asarray(rels, dtype=object),
        )

    def labels(self, subtypes: bool = False) -> np.ndarray:
        """Relation labels, universal part only (nmod:poss -> nmod) unless ``subtypes``."""
        if subtypes:
            return self.relations
        return np.array([r.split(":")[0] for r in self.relations], dtype=object)

    def word_piece_matrix(self) -> np.ndarray:
        """[W, N] membership: word ``a`` owns piece ``i`` (the pieces of its surface token)."""
        return self.word_token[:, None] == self.piece_token[None, :]

    def usable_pairs(self) -> np.ndarray:
        """[W, W]: both words kept with pieces, and not inside one surface token."""
        ok = self.word_kept & (self.word_piece_matrix().sum(1) > 0)
        return ok[:, None] & ok[None, :] & (self.word_token[:, None] != self.word_token[None, :])


class Batch:
    """A batch of inputs stacked heads last, with the derived quantities the roles and statistics share.

    ``A`` [B, N, N, X] float32 (X = layers x heads; zero outside each input) is a NumPy view of the torch
    tensor ``T``; the heavy elementwise work and matrix products run in torch (vectorised, on every
    thread torch is given).  ``lengths`` [B] are the piece counts, ``facts`` the inputs' facts.
    """

    def __init__(self, arrays: list[np.ndarray], facts: list[SentenceFacts]):
        self.lengths = np.array([a.shape[-1] for a in arrays])
        self.X = arrays[0].shape[0] * arrays[0].shape[1]
        N = int(self.lengths.max())
        self.T = torch.zeros((len(arrays), N, N, self.X), dtype=torch.float32)
        for b, a in enumerate(arrays):
            n = a.shape[-1]
            self.T[b, :n, :n] = torch.from_numpy(np.ascontiguousarray(a)).reshape(self.X, n, n).permute(1, 2, 0)
        self.A = self.T.numpy()
        self.facts = facts

    def check(self, names: list[str], atol: float = 2e-2) -> None:
        """Fail with one line naming the first input whose attention has NaN/inf, negative weights or rows
        that do not sum to 1 (``names[b]`` says where input ``b`` comes from)."""
        rows = self.row_sums  # a NaN or infinite weight makes its row sum NaN or infinite
        finite = np.isfinite(rows).all(axis=(1, 2))
        negative = (self.T.reshape(len(self.facts), -1).amin(1) < 0).numpy()
        real = np.arange(self.A.shape[1])[None, :] < self.lengths[:, None]  # [B, N]
        with np.errstate(invalid="ignore"):
            off = np.where(real[:, :, None], np.abs(rows - 1), 0).max(axis=(1, 2))
        for b in range(len(self.facts)):
            if not finite[b]:
                raise HeadsieveError(f"{names[b]}: attention contains NaN or infinite values")
            if negative[b]:
                raise HeadsieveError(f"{names[b]}: attention contains negative weights")
            if off[b] > atol:
                raise HeadsieveError(f"{names[b]}: attention rows do not sum to 1 (off by up to {off[b]:.3g})")

    @cached_property
    def row_sums(self) -> np.ndarray:
        """``sum_j A[i, j]`` per input, query piece and head: [B, N, X]."""
        return self.T.sum(2).numpy()

    @cached_property
    def abar(self) -> np.ndarray:
        """Uniform reference ``abar_i = (1/N) sum_j A[i, j]`` per input, query piece and head: [B, N, X]."""
        return self.row_sums / self.lengths[:, None, None]

    @cached_property
    def received(self) -> np.ndarray:
        """Attention each key piece receives, summed over queries: [B, N, X]."""
        return self.T.sum(1).numpy()

    @cached_property
    def entropy(self) -> np.ndarray:
        """Row entropy (nats) per input, query piece and head: [B, N, X] (0 log 0 = 0).

        numpy, one thread: torch's threaded log splits the array where its thread count says, and the
        vector and scalar paths round the last bit differently, so the bytes depended on the machine."""
        return row_entropy(self.A)

    @cached_property
    def membership(self) -> np.ndarray:
        """[B, W, N] float: word ``a`` owns piece ``i`` (zero-padded)."""
        W = max(len(f.word_token) for f in self.facts)
        M = np.zeros((len(self.facts), W, self.A.shape[1]), dtype=np.float32)
        for b, f in enumerate(self.facts):
            m = f.word_piece_matrix()
            M[b, : m.shape[0], : m.shape[1]] = m
        return M

    @cached_property
    def piece_counts(self) -> np.ndarray:
        """[B, W] number of pieces of each word."""
        return self.membership.sum(-1)

    @cached_property
    def word_sum(self) -> np.ndarray:
        """[B, W, W, X]: mean over the pieces of word ``a`` (axis 1) of the sum over the pieces of word ``b``
        (axis 2), for every head (axis 3)."""
        B, N, _, X = self.A.shape
        M = torch.from_numpy(self.membership)  # [B, W, N]
        W = M.shape[1]
        to_words = torch.matmul(M.unsqueeze(1), self.T)  # [B, N(query pieces), W, X]: sums over key pieces
        out = torch.matmul(torch.from_numpy(self._from_mean), to_words.reshape(B, N, W * X))
        return out.reshape(B, W, W, X).numpy()

    def word_values(self, b, q, t, aggregation: str = "mean") -> np.ndarray:
        """Word attention of word pairs (input ``b``, query word ``q``, target word ``t``): [P, X]."""
        values = self.word_sum[b, q, t]
        if aggregation == "mean":
            values = values / self.piece_counts[b, t][:, None]
        return values

    @cached_property
    def word_abar(self) -> np.ndarray:
        """[B, W, X]: mean of the uniform references of a word's pieces."""
        return np.matmul(self._from_mean, self.abar)

    @cached_property
    def _from_mean(self) -> np.ndarray:
        counts = self.piece_counts
        return self.membership / np.where(counts > 0, counts, 1)[..., None]


def row_entropy(A: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each attention row: [B, N, X] for A [B, N, N, X] (0 log 0 = 0)."""
    terms = np.log(np.maximum(A, np.float32(1e-30)))
    terms *= A
    return -terms.sum(2)


def _segment_mean(values: np.ndarray, keys: np.ndarray):
    """Mean of ``values`` rows per distinct integer key: (sorted unique keys, means [G, X], counts [G])."""
    if len(keys) > 1 and (keys[1:] < keys[:-1]).any():
        unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:  # already sorted, as the pairs are built
        new = np.r_[True, keys[1:] != keys[:-1]]
        unique, inverse = keys[new], np.cumsum(new) - 1
        counts = np.diff(np.r_[np.flatnonzero(new), len(keys)])
    sums = torch.zeros((len(unique), values.shape[1]), dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(inverse), torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
    return unique, sums.numpy() / counts[:, None], counts


def sieve_from_pairs(values, b, role, query, reference, weight=None):
    """Sentence scores from (query, target) pairs.

    ``values`` [P, X]: attention of every head from the pair's query to its target; ``b``, ``role``,
    ``query`` [P]: the pair's input, role id and query id; ``reference`` [B, Q, X]: the queries' uniform
    references; ``weight(b_q, role_q, q_q)`` -> [Q, X] optional per-query multiplier.
    ``r_q = mean_{targets} value / abar_q``; score = mean of ``r_q`` over the queries of (input, role).
    Returns (b_s, role_s, scores [S, X], n_queries [S]).
    """
    q_span = int(query.max()) + 1
    r_span = int(role.max()) + 1
    qkeys, per_query, _ = _segment_mean(values, (b.astype(np.int64) * r_span + role) * q_span + query)
    qb, qrole, qq = qkeys // (r_span * q_span), (qkeys // q_span) % r_span, qkeys % q_span
    with np.errstate(divide="ignore", invalid="ignore"):
        r = per_query / reference[qb, qq]
    if weight is not None:
        r = r * weight(qb, qrole, qq)
    skeys, scores, n_queries = _segment_mean(r, qb * r_span + qrole)
    return skeys // r_span, skeys % r_span, scores, n_queries


def sentence_roles(facts: SentenceFacts, options: dict) -> list[str]:
    """Syntactic roles (``dep:<relation>``, ``syntactic``) that apply to this input."""
    if facts.heads is None:
        return []
    present = set(facts.labels(options["subtypes"])[facts.heads > 0])
    wanted = present if options["relations"] == "all" else present & set(options["relations"])
    roles = [f"dep:{r}" for r in sorted(wanted)]
    if present & set(options["union"]):
        roles.append("syntactic")
    return roles


def _pairs(masks_per_input):
    """(input, role, query, target) index arrays of the True entries of per-input [R, Q, K] masks."""
    parts = []
    for b, S in masks_per_input:
        r, q, t = np.nonzero(S)
        parts.append((np.full(len(q), b), r, q, t))
    if not parts:
        return (np.zeros(0, dtype=np.int64),) * 4
    return tuple(np.concatenate(x).astype(np.int64) for x in zip(*parts))


def _piece_scores(batch: Batch, roles: list[str], opts: dict):
    """Piece-level sieve scores (local, delimiters, block)."""
    masks = [(b, np.stack([PIECE_ROLES[name][1](f, opts) for name in roles])) for b, f in enumerate(batch.facts)]
    b, r, q, k = _pairs(masks)
    if len(b) == 0:
        return [], [], [], []
    weight = None
    if opts["block_weighting"] == "entropy" and "block" in roles:
        block = roles.index("block")

        def entropy_weight(qb, qrole, qq):  # the reference code's variant: block ratio x row entropy
            return np.where((qrole == block)[:, None], batch.entropy[qb, qq], 1.0)

        weight = entropy_weight
    return sieve_from_pairs(batch.A[b, q, k], b, r, q, batch.abar, weight)


def _syntactic_scores(batch: Batch, roles: list[str], opts: dict):
    """Word-level sieve scores of the syntactic roles."""
    union = set(opts["union"])
    masks = [
        (b, syntactic_targets(f.heads, f.labels(opts["subtypes"]), f.usable_pairs(), roles, union, opts["direction"]))
        for b, f in enumerate(batch.facts)
        if f.heads is not None
    ]
    b, r, q, t = _pairs(masks)
    if len(b) == 0:
        return [], [], [], []
    return sieve_from_pairs(batch.word_values(b, q, t, opts["aggregation"]), b, r, q, batch.word_abar)


def score_batch(batch: Batch, options: dict | None = None):
    """Every head's score for every role that applies, for a batch of inputs.

    Returns a list of (batch position, role, scores [X], n_queries); roles whose target sets are empty
    for an input (a relation absent, a single segment for ``block``) are left out for that input.
    """
    opts = dict(DEFAULT_OPTIONS, **(options or {}))
    out: list[tuple[int, str, np.ndarray, int]] = []
    piece = list(opts["piece_roles"])
    syn = sorted({name for f in batch.facts for name in sentence_roles(f, opts)})
    for names, fn in ((piece, _piece_scores), (syn, _syntactic_scores)):
        if names:
            for b, k, scores, nq in zip(*fn(batch, names, opts)):
                out.append((int(b), names[k], scores, int(nq)))
    return out


def role_family(role: str) -> str:
    if role.startswith("dep:") or role == "syntactic":
        return "syntactic"
    return PIECE_ROLES[role][0]
