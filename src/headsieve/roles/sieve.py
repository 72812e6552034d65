"""Role scores: how much of a head's attention goes to a role's targets.

For one head and one input with attention ``A`` (N x N, rows = queries, summing to 1) and a role's target
sets ``S_i``, two score forms (``roles.score``):

* ``mass`` (default): per query the share of the row's mass on the targets,
  ``m_i = sum_{j in S_i} A[i, j] / sum_j A[i, j]`` (= the reference ratio divided by its attainable
  maximum N / |S_i|).  A uniform head puts ``u_i = |S_i| / N`` there; queries with ``u_i`` above
  ``max_uniform_share`` are left out and counted (``n_undefined``): there even a uniform head would come
  close to the threshold.  Sentence score: the mean of ``m_i`` over the scored queries (NaN, with
  ``n_queries`` 0, when no query of an input with the role's targets can be scored).
* ``ratio`` (the reference): ``r_i = mean_{j in S_i} A[i, j] / abar_i`` with ``abar_i = (1/N) sum_j
  A[i, j]``; sentence score: the mean of ``r_i`` over the queries with a non-empty ``S_i``.

Block has its own forms (``roles.block_weighting``): ``contrast`` (default) per query of a pair, the
density of attention on its own segment's regular pieces against the density on the other segment's
regular pieces, both outside the query's local window, ``b_i = d_own / (d_own + d_other)`` (0.5 = no
preference, also when neither gets any attention; queries with no own-segment or no other-segment piece
outside the window are undefined); ``plain``, the ratio over the own segment;
``entropy``, the reference code exactly (ratio x row entropy averaged over ALL rows, [CLS] and the first
segment's pieces targeting the first segment, the rest the second).

Syntactic roles are scored on words: the attention from word ``a`` to word ``b`` is aggregated from the
word pieces (``mean`` over the pieces of ``a`` of the ``mean``, or ``sum``, over the pieces of ``b``), and
``abar_a`` is the mean of the pieces' uniform references.  Under ``mass`` the share is the mean over the
pieces of ``a`` of the sum over the target words' pieces, over the mean row mass of ``a``'s pieces, and
``u = pieces of the target words / N``.  Pieces come from the tokenizer's own word alignment.

Everything is vectorised over heads, roles and inputs (no Python loop per head, query or target): a
batch of inputs is stacked "heads last" ([B, N, N, L*H]), word-level attention comes from two batched
matrix products, each role's target set is turned into a list of (query, target) pairs, the attention of
all heads on all pairs is gathered at once, and the sums over targets, then the means over queries, are
segment sums over the sorted pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.roles.registry import DEFAULT_PIECE_ROLES, ROLES
from headsieve.roles.targets import local_targets
from headsieve.roles.segments import reduceat_rows
from headsieve.roles.word_pairs import BatchWords, WordPairs, syntactic_pairs
from headsieve.tokens import REGULAR, SEP

#: relations scored by default; the union of these is the role ``syntactic``
CORE_RELATIONS = (
    "nsubj", "obj", "iobj", "amod", "advmod", "det", "case", "nmod", "obl", "conj",
    "compound", "aux", "mark", "cop", "nummod", "acl", "advcl", "xcomp", "ccomp",
)  # fmt: skip

SCORE_FORMS = ("mass", "ratio")
BLOCK_FORMS = ("contrast", "plain", "entropy")

DEFAULT_OPTIONS = {
    "score": "mass",  # mass (share of the row on the targets) | ratio (the reference sieve ratio)
    "max_uniform_share": 0.25,  # mass: queries whose uniform share |S_i| / N exceeds this are left out
    "local_window": 2,
    "block_weighting": "contrast",  # contrast | plain (ratio) | entropy (reference code: ratio x row entropy)
    "direction": "dep2head",  # dep2head | head2dep | both
    "aggregation": "mean",  # mean | sum  (over the pieces of the target word)
    "relations": "all",  # "all" relations present, or a list
    "union": list(CORE_RELATIONS),  # relations whose union is the role 'syntactic'
    "subtypes": False,  # keep relation subtypes (nmod:poss) apart
    "piece_roles": list(DEFAULT_PIECE_ROLES),
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

    @property
    def n_queries(self) -> int:
        """Queries of the self-attention: one per piece."""
        return len(self.special)

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
        return self._universal_labels

    def word_piece_matrix(self) -> np.ndarray:
        """[W, N] membership: word ``a`` owns piece ``i`` (the pieces of its surface token); read-only."""
        return self._word_piece_matrix

    def usable_pairs(self) -> np.ndarray:
        """[W, W]: both words kept with pieces, and not inside one surface token; read-only."""
        return self._usable_pairs

    # computed once per input (the scores, the control and the head statistics all ask)
    @cached_property
    def _universal_labels(self) -> np.ndarray:
        return _read_only(np.array([r.split(":")[0] for r in self.relations], dtype=object))

    @cached_property
    def _word_piece_matrix(self) -> np.ndarray:
        return _read_only(self.word_token[:, None] == self.piece_token[None, :])

    @cached_property
    def _usable_pairs(self) -> np.ndarray:
        ok = self.word_kept & (self.word_piece_matrix().sum(1) > 0)
        return _read_only(ok[:, None] & ok[None, :] & (self.word_token[:, None] != self.word_token[None, :]))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


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
        self._pairs: dict[tuple, WordPairs] = {}  # syntactic pairs per (roles, options), see syntactic_pairs

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
    def causal_abar(self) -> np.ndarray:
        """Uniform reference under the causal mask, ``(1/(i+1)) sum_j A[i, j]`` (query ``i`` sees keys
        ``0..i``): [B, N, X]; the causal roles' ``ratio`` form (:mod:`headsieve.roles.causal_score`)."""
        return self.row_sums / np.arange(1, self.A.shape[1] + 1)[None, :, None]

    @cached_property
    def received(self) -> np.ndarray:
        """Attention each key piece receives, summed over queries: [B, N, X]."""
        return self.T.sum(1).numpy()

    @cached_property
    def entropy(self) -> np.ndarray:
        """Row entropy (nats) per input, query piece and head: [B, N, X] (0 log 0 = 0).

        numpy, one thread: torch's threaded log splits the array where its thread count says, and the
        vector and scalar paths round the last bit differently, so the bytes depended on the machine."""
        return row_entropy(self.A, self.lengths)

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
        B, W, _, X = self.word_sum.shape
        values = np.take(self.word_sum.reshape(B * W * W, X), (b * W + q) * W + t, axis=0)
        if aggregation == "mean":
            values = values / self.piece_counts[b, t][:, None]
        return values

    @cached_property
    def words(self) -> BatchWords:
        """The words of the inputs with a tree, concatenated (universal relation labels)."""
        return BatchWords.of(self.facts, self.piece_counts)

    def syntactic_pairs(self, roles: list[str], opts: dict) -> WordPairs:
        """The (input, role, query, target) word pairs of the syntactic ``roles``, built once per batch and
        options and shared by the scores and the positional control."""
        key = (tuple(roles), bool(opts["subtypes"]), tuple(opts["union"]), opts["direction"])
        if key not in self._pairs:
            words = BatchWords.of(self.facts, self.piece_counts, True) if opts["subtypes"] else self.words
            W = self.piece_counts.shape[1]
            self._pairs[key] = syntactic_pairs(words, W, roles, set(opts["union"]), opts["direction"])
        return self._pairs[key]

    def pair_values(self, pairs: WordPairs, aggregation: str) -> np.ndarray:
        """:meth:`word_values` of ``pairs``, computed once per aggregation (read-only)."""
        if aggregation not in pairs.values:
            pairs.values[aggregation] = _read_only(self.word_values(pairs.b, pairs.q, pairs.t, aggregation))
        return pairs.values[aggregation]

    @cached_property
    def word_abar(self) -> np.ndarray:
        """[B, W, X]: mean of the uniform references of a word's pieces."""
        return np.matmul(self._from_mean, self.abar)

    @cached_property
    def _from_mean(self) -> np.ndarray:
        counts = self.piece_counts
        return self.membership / np.where(counts > 0, counts, 1)[..., None]


#: elements of attention per block of rows in :func:`row_entropy` (a block and its logs stay in the cache)
ENTROPY_BLOCK = 1 << 15


def row_entropy(A: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Entropy (nats) of each attention row: [B, N, X] for A [B, N, N, X] (0 log 0 = 0); -0.0 on padded rows.

    Input by input (``lengths``: its pieces; default N) and in blocks of rows, so that the logs of a block
    are summed while in the cache; each row is summed over its keys in key order, as over the whole array
    (same bits: a padded row of the whole array sums to +0.0, negated -0.0)."""
    B, N, _, X = A.shape
    out = np.full((B, N, X), -0.0, dtype=A.dtype)
    for b, n in enumerate(np.full(B, N) if lengths is None else lengths):
        n = int(n)
        step = max(1, ENTROPY_BLOCK // max(n * X, 1))
        for i in range(0, n, step):
            rows = A[b, i : i + step, :n]
            terms = np.log(np.maximum(rows, np.float32(1e-30)))
            terms *= rows
            np.negative(terms.sum(1), out=out[b, i : i + step])
    return out


def _segment_sum(values: np.ndarray, keys: np.ndarray):
    """Sum of ``values`` rows per distinct integer key: (sorted unique keys, sums [G, X], counts [G]).

    Contiguous segment sums (``np.add.reduceat``'s numbers, :func:`~headsieve.roles.segments.reduceat_rows`)
    over the rows sorted by key (the pairs are built sorted); much faster than a scattered ``index_add_``."""
    if len(keys) > 1 and (keys[1:] < keys[:-1]).any():
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    return keys[starts], reduceat_rows(values, starts), counts


def _segment_mean(values: np.ndarray, keys: np.ndarray):
    """Mean of ``values`` rows per distinct integer key: (sorted unique keys, means [G, X], counts [G])."""
    unique, sums, counts = _segment_sum(np.ascontiguousarray(values, dtype=np.float32), keys)
    return unique, sums / counts[:, None], counts


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


def mass_from_pairs(values, b, role, query, row_mass, share, cap):
    """Sentence scores of the ``mass`` form from (query, target) pairs.

    ``values`` [P, X]: attention of every head from the pair's query to its target; ``b``, ``role``,
    ``query`` [P]: the pair's input, role id and query id; ``row_mass`` [B, Q, X]: the queries' total
    attention; ``share`` [P]: the target's uniform share (1/N for a piece, pieces/N for a word).
    ``m_q = sum_{targets} value / row_mass_q`` over the queries whose ``u_q = sum share <= cap``; score =
    mean of ``m_q`` over those queries (NaN when there is none).
    Returns (b_s, role_s, scores [S, X], n_queries [S], n_undefined [S]).
    """
    q_span = int(query.max()) + 1
    r_span = int(role.max()) + 1
    keys = (b.astype(np.int64) * r_span + role) * q_span + query
    qkeys, per_query, counts = _segment_sum(np.ascontiguousarray(values, dtype=np.float32), keys)
    _, u, _ = _segment_sum(np.asarray(share, dtype=np.float64), keys)
    qb, qrole, qq = qkeys // (r_span * q_span), (qkeys // q_span) % r_span, qkeys % q_span
    with np.errstate(divide="ignore", invalid="ignore"):
        m = per_query / row_mass[qb, qq]
    return _defined_means(m, qb * r_span + qrole, u <= cap + 1e-9, r_span)


def _defined_means(values, keys, defined, r_span):
    """Per (input, role) key: the mean of ``values`` over the defined queries (NaN if none), the number of
    defined and of undefined queries.  Returns (b_s, role_s, scores, n_queries, n_undefined)."""
    kept = np.where(defined[:, None], values, 0.0).astype(np.float64)
    unique, sums, n_all = _segment_sum(kept, keys)
    _, n_def, _ = _segment_sum(defined.astype(np.int64), keys)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (sums / n_def[:, None]).astype(np.float32)
    return unique // r_span, unique % r_span, scores, n_def, n_all - n_def


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
    """Piece-level scores (local, prev, next, self, delimiters; block under the ``plain`` weighting).

    Returns (b, role index, scores, n_queries, n_undefined)."""
    masks = [(b, np.stack([ROLES[name].targets(f, opts) for name in roles])) for b, f in enumerate(batch.facts)]
    b, r, q, k = _pairs(masks)
    if len(b) == 0:
        return [], [], [], [], []
    ratio = np.array([opts["score"] == "ratio" or name == "block" for name in roles])
    out = []
    for use_ratio in (True, False):
        sel = ratio[r] == use_ratio
        if not sel.any():
            continue
        bs, rs, qs, ks = b[sel], r[sel], q[sel], k[sel]
        if use_ratio:
            res = sieve_from_pairs(batch.A[bs, qs, ks], bs, rs, qs, batch.abar)
            res = (*res, np.zeros(len(res[0]), dtype=np.int64))
        else:
            share = 1.0 / batch.lengths[bs]
            res = mass_from_pairs(batch.A[bs, qs, ks], bs, rs, qs, batch.row_sums, share, opts["max_uniform_share"])
        out.append(res)
    return tuple(np.concatenate(x) for x in zip(*out))


def block_contrast_masks(facts: SentenceFacts, window: int):
    """(own, other) [N, N] target sets of the ``contrast`` block form for a pair, or None for a single input:
    the regular pieces outside the query's local window, of its own segment and of the other segment
    (the window is left out of both, so a local head has no preference); queries are the regular pieces."""
    special, segment = facts.special, facts.segment
    regular = special == REGULAR
    if len(np.unique(segment[regular])) < 2:
        return None
    both = regular[:, None] & regular[None, :]
    same = segment[:, None] == segment[None, :]
    outside = both & ~local_targets(facts.n_pieces, window)
    return outside & same, outside & ~same


def block_entropy_targets(facts: SentenceFacts):
    """[N, N] targets of the reference code's block score, or None for a single input: EVERY row is a
    query; rows before the first [SEP] ([CLS] and the first segment) target the first segment's regular
    pieces, the others (first [SEP], second segment, last [SEP]) the second segment's."""
    special, segment = facts.special, facts.segment
    regular = special == REGULAR
    if len(np.unique(segment[regular])) < 2:
        return None
    first_sep = int(np.flatnonzero(special == SEP)[0])
    first = regular & (segment == segment[regular][0])
    rows = np.arange(facts.n_pieces) < first_sep
    return np.where(rows[:, None], first[None, :], (regular & ~first)[None, :])


def _dense(batch: Batch, masks: list) -> torch.Tensor:
    """Per-input [N, N] masks (None: zeros) stacked and padded: [B, N, N] float32."""
    N = batch.A.shape[1]
    out = torch.zeros((len(masks), N, N), dtype=torch.float32)
    for b, m in enumerate(masks):
        if m is not None:
            out[b, : m.shape[0], : m.shape[1]] = torch.from_numpy(m.astype(np.float32))
    return out


def _dense_rows(batch: Batch, rows: list) -> np.ndarray:
    """Per-input [N] bool vectors (None: False) stacked and padded: [B, N]."""
    out = np.zeros((len(rows), batch.A.shape[1]), dtype=bool)
    for b, r in enumerate(rows):
        if r is not None:
            out[b, : len(r)] = r
    return out


def _block_scores(batch: Batch, opts: dict):
    """Block scores of the ``contrast`` or ``entropy`` form: (b, scores, n_queries, n_undefined)."""
    if opts["block_weighting"] == "entropy":
        targets = [block_entropy_targets(f) for f in batch.facts]
        has = np.array([t is not None for t in targets])
        if not has.any():
            return [], [], [], []
        S = _dense(batch, targets)
        size = S.sum(2)  # [B, N]
        mean = torch.einsum("bqkx,bqk->bqx", batch.T, S) / size.clamp(min=1)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = mean.numpy() / batch.abar * batch.entropy  # [B, N, X]
        real = np.arange(batch.A.shape[1])[None, :] < batch.lengths[:, None]
        scores = np.where(real[..., None], r, 0).sum(1) / batch.lengths[:, None]
        b = np.flatnonzero(has)
        return b, scores[b].astype(np.float32), batch.lengths[b], np.zeros(len(b), dtype=np.int64)
    pairs = [block_contrast_masks(f, opts["local_window"]) for f in batch.facts]
    has = np.array([p is not None for p in pairs])
    if not has.any():
        return [], [], [], []
    own = _dense(batch, [p[0] if p else None for p in pairs])
    other = _dense(batch, [p[1] if p else None for p in pairs])
    d_own = torch.einsum("bqkx,bqk->bqx", batch.T, own) / own.sum(2).clamp(min=1)[..., None]
    d_other = torch.einsum("bqkx,bqk->bqx", batch.T, other) / other.sum(2).clamp(min=1)[..., None]
    total = (d_own + d_other).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.where(total > 1e-12, d_own.numpy() / total, 0.5)  # no attention on either: no preference
    query = _dense_rows(batch, [(f.special == REGULAR) if p else None for f, p in zip(batch.facts, pairs)])
    defined = query & (own.sum(2) > 0).numpy() & (other.sum(2) > 0).numpy()
    b = np.flatnonzero(has)
    n_def = defined[b].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(defined[b][..., None], contrast[b], 0).sum(1) / n_def[:, None]
    return b, scores.astype(np.float32), n_def, query[b].sum(1) - n_def


def _syntactic_scores(batch: Batch, roles: list[str], opts: dict):
    """Word-level sieve scores of the syntactic roles."""
    pairs = batch.syntactic_pairs(roles, opts)
    if len(pairs) == 0:
        return [], [], [], [], []
    aggregation, _, scorer = syntactic_form(batch, opts)
    return scorer(batch.pair_values(pairs, aggregation), pairs.b, pairs.r, pairs.q, pairs.t)


def syntactic_form(batch: Batch, opts: dict):
    """The syntactic roles' score form (shared with the positional control, roles/controls.py):
    (aggregation over the target word's pieces, per-query-word reference [B, W, X], scorer).
    ``scorer(values, b, r, q, t)`` takes the word attention of the (input, role, query, target) pairs and
    returns (b_s, role_s, scores, n_queries, n_undefined).  ``mass``: the share of the query word's mass on
    the target words' pieces (reference: the word's row mass); ``ratio``: the reference sieve ratio
    (reference: the word's uniform reference, ``aggregation`` as configured)."""
    if opts["score"] == "mass":
        row_mass = batch.word_abar * batch.lengths[:, None, None]

        def mass(values, b, r, q, t):
            share = batch.piece_counts[b, t] / batch.lengths[b]
            return mass_from_pairs(values, b, r, q, row_mass, share, opts["max_uniform_share"])

        return "sum", row_mass, mass

    def ratio(values, b, r, q, t):
        res = sieve_from_pairs(values, b, r, q, batch.word_abar)
        return (*res, np.zeros(len(res[0]), dtype=np.int64))

    return opts["aggregation"], batch.word_abar, ratio


def block_form(opts: dict) -> str:
    return f"block_{opts['block_weighting']}"


def score_form(role: str, opts: dict) -> str:
    """The score form of a role's scores under ``opts`` (the ``form`` column of scores.parquet)."""
    return block_form(opts) if role == "block" else opts["score"]


def score_batch(batch: Batch, options: dict | None = None, detail: bool = False):
    """Every head's score for every role that applies, for a batch of inputs.

    Returns a list of (batch position, role, scores [X], n_queries); with ``detail`` also n_undefined (the
    queries left out: uniform share above the cap, or no own-segment piece outside the window for block)
    and the score form.  Roles whose target sets are empty for an input (a relation absent, a single
    segment for ``block``) are left out for that input; under ``mass``, an input whose every query is left
    out keeps a row with NaN scores and n_queries 0.
    """
    opts = dict(DEFAULT_OPTIONS, **(options or {}))
    if opts["score"] not in SCORE_FORMS or opts["block_weighting"] not in BLOCK_FORMS:
        raise HeadsieveError(
            f"roles.score {opts['score']!r} / roles.block_weighting {opts['block_weighting']!r}: "
            f"expected one of {SCORE_FORMS} / {BLOCK_FORMS}"
        )
    out: list[tuple] = []
    piece = list(opts["piece_roles"])
    if "block" in piece and opts["block_weighting"] != "plain":
        piece.remove("block")
        for b, scores, nq, nu in zip(*_block_scores(batch, opts)):
            out.append((int(b), "block", scores, int(nq), int(nu), block_form(opts)))
    syn = sorted({name for f in batch.facts for name in sentence_roles(f, opts)})
    for names, fn in ((piece, _piece_scores), (syn, _syntactic_scores)):
        if names:
            for b, k, scores, nq, nu in zip(*fn(batch, names, opts)):
                out.append((int(b), names[k], scores, int(nq), int(nu), score_form(names[k], opts)))
    out.sort(key=lambda o: (o[0], o[1]))
    return out if detail else [o[:4] for o in out]
