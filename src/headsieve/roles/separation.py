"""The separation matrix: planted heads of every role, scored and tested by the real code, on the piece
lengths of real corpora.

A planted head is a mixture of components ``(kind, strength)`` plus Dirichlet(1) noise carrying the rest of
each row's mass: in every row where a component has targets, ``strength`` of the row is spread evenly over
them (a row where it has none gives that share to the noise).  Kinds:

* ``local`` (the window |i - j| <= w), ``prev``, ``next``, ``self``, ``cls``, ``sep`` (every [SEP]),
  ``block`` (the query's own segment's regular pieces), ``other_segment`` (the other segment's regular
  pieces), ``syntactic`` (a dependent word's pieces attend to its head word's pieces),
* ``uniform`` (strength ignored: every row 1/N) and ``noise`` (Dirichlet rows only).

The roles a planted component holds (:func:`planted_roles`) plus the roles whose target sets contain those by
definition (:func:`headsieve.roles.registry.containers`) are the labels it should get; any other label is a
confusion.  :func:`separation_tables` gives the matrix (planted kind x tested role -> label rate) and the
recall per length bin; ``python -m headsieve.steps.separation`` writes them for UD EWT dev (random trees, and
``ewt_gold`` with the gold trees), MRPC and QNLI dev as tokenized by the minilm tokenizer.

Trees: syntactic components are planted on random trees whose arcs span at least 3 words where the
sentence allows (``tree_min_distance``), so that the syntactic role is not restated by position; on the
gold trees most arcs span 1-2 words and a positional head holds syntactic labels too (the positional
control of :mod:`headsieve.roles.controls`, ``label_controlled``, is reported beside the reference label).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from headsieve.roles.sieve import DEFAULT_OPTIONS, Batch, SentenceFacts, score_batch
from headsieve.roles.registry import containers, role_names
from headsieve.roles.tests import role_tests
from headsieve.tokens import CLS, REGULAR, SEP


#: piece-length bins of the recall table (upper bounds exclusive): N < 10, 10-20, 20-40, > 40 pieces
BINS = ((0, 10, "N<10"), (10, 20, "10-20"), (20, 41, "20-40"), (41, 10**9, ">40"))
KINDS = ("local", "prev", "next", "self", "cls", "sep", "block", "other_segment", "syntactic", "uniform", "noise")
STRENGTHS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RELATIONS = ("nsubj", "obj", "amod", "det", "case", "advmod")


@dataclass(frozen=True)
class Head:
    """One planted head: components ((kind, strength), ...) with Dirichlet noise for the rest."""

    components: tuple

    @property
    def name(self) -> str:
        return "+".join(f"{k}@{s:g}" for k, s in self.components)

    @property
    def kind(self) -> str:
        return "+".join(k for k, _ in self.components)

    @property
    def strength(self) -> float:
        """The smallest share a component puts on its targets (the head's weakest planted role)."""
        return min(s for _, s in self.components)


def planted_roles(kind: str, relations=()) -> set[str]:
    """The labelled roles a component of ``kind`` holds by construction (``relations``: the relation roles
    of the corpus, held by a syntactic component)."""
    if kind in ("uniform", "noise", "other_segment"):
        return set()
    if kind == "syntactic":
        return {"syntactic"} | {r for r in relations if r.startswith("dep:")}
    return {kind}


def expected_labels(head: Head, relations=()) -> set[str]:
    """Planted roles plus the roles that contain them by definition (the registry's nesting)."""
    out: set[str] = set()
    for kind, _ in head.components:
        for role in planted_roles(kind, relations):
            out |= {role} | set(containers(role))
    return out


def default_heads(kinds, strengths=STRENGTHS, mixtures=(), replicates: int = 1) -> list[Head]:
    heads = []
    for _ in range(replicates):
        for kind in kinds:
            if kind in ("uniform", "noise"):
                heads.append(Head(((kind, 1.0),)))
                continue
            heads += [Head(((kind, s),)) for s in strengths]
        heads += [Head(tuple(m)) for m in mixtures]
    return heads


# ------------------------------------------------------------------ planted attention


def kind_targets(kind: str, row: dict, window: int) -> np.ndarray:
    """[N, N] bool target sets of a planted kind for one tokens row (empty rows: no target)."""
    n = row["n_pieces"]
    special = np.asarray(row["piece_special"])
    segment = np.asarray(row["piece_segment"])
    idx = np.arange(n)
    regular = special == REGULAR
    offset = idx[None, :] - idx[:, None]
    if kind == "local":
        return np.abs(offset) <= window
    if kind in ("prev", "next", "self"):
        return offset == {"prev": -1, "next": 1, "self": 0}[kind]
    if kind == "cls":
        return np.broadcast_to(special == CLS, (n, n))
    if kind == "sep":
        return np.broadcast_to(special == SEP, (n, n))
    if kind in ("block", "other_segment"):
        if len(np.unique(segment[regular])) < 2:
            return np.zeros((n, n), dtype=bool)
        same = segment[:, None] == segment[None, :]
        return (same if kind == "block" else ~same) & regular[:, None] & regular[None, :]
    if kind == "syntactic":
        S = np.zeros((n, n), dtype=bool)
        token = np.asarray(row["piece_token"])
        for w, h in enumerate(row["word_head"] or []):
            if h == 0 or not (row["word_kept"][w] and row["word_kept"][h - 1]):
                continue
            if row["word_token"][w] == row["word_token"][h - 1]:
                continue
            S[token == row["word_token"][w]] |= (token == row["word_token"][h - 1])[None, :]
        return S
    if kind in ("uniform", "noise"):
        return np.zeros((n, n), dtype=bool)
    raise ValueError(kind)


def planted_attention(rng, heads: list[Head], row: dict, window: int = 2) -> np.ndarray:
    """[1, X, N, N] float32 attention of the planted heads for one tokens row."""
    n = row["n_pieces"]
    kinds = sorted({k for h in heads for k, _ in h.components})
    P = {}
    for kind in kinds:
        S = kind_targets(kind, row, window).astype(np.float64)
        size = S.sum(1, keepdims=True)
        P[kind] = (np.divide(S, size, out=np.zeros_like(S), where=size > 0), size[:, 0] > 0)
    noise = rng.standard_exponential((len(heads), n, n))
    noise /= noise.sum(-1, keepdims=True)  # Dirichlet(1) rows
    return mix_planted(heads, P, noise, np.full((n, n), 1.0 / n))


def mix_planted(heads, targets: dict, noise: np.ndarray, uniform: np.ndarray, null_kinds=("noise",)) -> np.ndarray:
    """Attention ``[1, heads, n, n]`` (float32) of planted heads: each component of a head puts its strength on
    its kind's normalised target rows (``targets[kind] = (rows, has_targets)``), the rest of each row follows the
    head's ``noise`` rows; a ``uniform`` head is the ``uniform`` matrix; ``null_kinds`` plant nothing."""
    A = np.empty(noise.shape)
    for x, head in enumerate(heads):
        if head.components[0][0] == "uniform":
            A[x] = uniform
            continue
        planted, rest = np.zeros(uniform.shape), np.ones(uniform.shape[0])
        for kind, strength in head.components:
            if kind in null_kinds:
                continue
            target, has = targets[kind]
            planted += strength * target
            rest -= strength * has
        A[x] = planted + np.clip(rest, 0, None)[:, None] * noise[x]
    return A[None].astype(np.float32)


def random_tree(rng, n: int, min_distance: int = 3) -> np.ndarray:
    """The 1-based heads of a random tree over ``n`` words (0: the root), arcs >= ``min_distance`` words where
    possible: words join in random order, each under a random word already placed."""
    order = rng.permutation(n)
    heads = np.zeros(n, dtype=np.int64)
    placed = [order[0]]
    for w in order[1:]:
        far = [p for p in placed if abs(p - w) >= min_distance]
        heads[w] = rng.choice(far if far else placed) + 1
        placed.append(w)
    return heads


def with_tree(rng, row: dict, min_distance: int = 3) -> dict:
    """A copy of a tokens row with a random tree over its words (arcs >= ``min_distance`` words where
    possible) and random relations from :data:`RELATIONS`."""
    heads = random_tree(rng, len(row["word_token"]), min_distance)
    out = dict(row)
    out["word_head"] = heads.tolist()
    out["word_deprel"] = [RELATIONS[int(rng.integers(len(RELATIONS)))] if h else "root" for h in heads]
    return out


# ------------------------------------------------------------------ scoring and tests


def length_bin(n: np.ndarray) -> np.ndarray:
    n = np.asarray(n)
    out = np.empty(len(n), dtype=object)
    for low, high, name in BINS:
        out[(n >= low) & (n < high)] = name
    return out


def planted_scores(rows: list[dict], heads: list[Head], options: dict | None = None, seed: int = 0, batch: int = 16):
    """Long score table (corpus-free): sentence_index, n_pieces, layer 0, head, role, score, n_queries,
    n_undefined, form (and ``control``: the positional control of the syntactic roles)."""
    from headsieve.roles.controls import score_controls

    opts = dict(DEFAULT_OPTIONS, **(options or {}))
    rng = np.random.default_rng(seed)
    parts = []
    X = len(heads)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        arrays = [planted_attention(rng, heads, r, opts["local_window"]) for r in chunk]
        view = Batch(arrays, [SentenceFacts.from_row(r) for r in chunk])
        controls = score_controls(view, opts)
        for b, role, scores, nq, nu, form in score_batch(view, opts, detail=True):
            control = controls.get((b, role), np.full(X, np.nan))
            parts.append(
                pd.DataFrame(
                    {
                        "sentence_index": chunk[b]["sentence_index"],
                        "n_pieces": chunk[b]["n_pieces"],
                        "layer": 0,
                        "head": np.arange(X),
                        "role": role,
                        "score": np.asarray(scores, dtype=float),
                        "control": np.asarray(control, dtype=float),
                        "n_queries": nq,
                        "n_undefined": nu,
                        "form": form,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def planted_tests(scores: pd.DataFrame, alpha: float = 0.05, correction: str = "none", by_bin: bool = False):
    """role_tests over the planted scores (one family per corpus, or per corpus and length bin), with the
    positional control's ``label_controlled`` for the syntactic roles."""
    from headsieve.roles.controls import add_controls

    frame = scores.copy()
    keys = ["corpus"]
    if by_bin:
        frame["bin"] = length_bin(frame["n_pieces"].to_numpy())
        keys.append("bin")
    tests = role_tests(frame, alpha=alpha, correction=correction, keys=tuple(keys))
    return add_controls(tests, frame, alpha, correction, tuple(keys))


def _head_frame(heads: list[Head], relations) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "head": np.arange(len(heads)),
            "planted": [h.kind for h in heads],
            "strength": [h.strength for h in heads],
            "head_name": [h.name for h in heads],
            "expected": [sorted(expected_labels(h, relations)) for h in heads],
        }
    )


def separation_tables(tests: pd.DataFrame, heads: list[Head]) -> pd.DataFrame:
    """Tidy matrix: corpus, planted, strength, role, n_heads, tested (heads with a test), label_rate,
    controlled_rate (syntactic roles: the positional control's label), expected (the role is the planted
    one or contains it)."""
    t = tests[tests["n"] >= 2].copy()
    t["role"] = t["role"].astype(str)
    relations = sorted(set(t["role"]) - {"syntactic"})
    hf = _head_frame(heads, relations)
    t = t.merge(hf, on="head")
    t["expected_role"] = [r in e for r, e in zip(t["role"], t["expected"])]
    g = t.groupby(["corpus", "planted", "strength", "role"], observed=True)
    out = g.agg(
        tested=("label", "size"),
        label_rate=("label", "mean"),
        controlled_rate=("label_controlled", "mean"),
        expected=("expected_role", "first"),
    ).reset_index()
    out.loc[~out["role"].str.startswith("dep:") & (out["role"] != "syntactic"), "controlled_rate"] = np.nan
    return out


def recall_by_bin(tests_by_bin: pd.DataFrame, heads: list[Head], min_inputs: int = 20) -> pd.DataFrame:
    """Recall of each planted role per length bin: corpus, bin, planted, strength, role, heads, found,
    recall, over the (head, planted role) tests with at least ``min_inputs`` inputs where it is defined."""
    t = tests_by_bin.copy()
    t["role"] = t["role"].astype(str)
    hf = _head_frame(heads, ())
    t = t.merge(hf, on="head")
    rows = []
    for r in t.itertuples():
        planted = {role for kind, _ in heads[r.head].components for role in planted_roles(kind, [r.role])}
        if r.role in planted and r.n >= min_inputs:
            rows.append((r.corpus, r.bin, r.planted, r.strength, r.role, bool(r.label)))
    frame = pd.DataFrame(rows, columns=["corpus", "bin", "planted", "strength", "role", "label"])
    g = frame.groupby(["corpus", "bin", "planted", "strength", "role"], observed=True)["label"]
    return g.agg(heads="size", found="sum", recall="mean").reset_index()


# ------------------------------------------------------------------ the real corpora


def real_rows(data_dir, corpus: str, max_length: int = 128) -> list[dict]:
    """Tokens rows of a real corpus as the project tokenizes it with the minilm tokenizer: ``ewt`` (UD EWT
    dev, gold trees), ``mrpc`` (MRPC dev pairs), ``qnli`` (QNLI dev pairs)."""
    from headsieve.io.conllu import read_conllu
    from headsieve.io.glue import read_glue, task_spec
    from headsieve.models.load import load_tokenizer
    from headsieve.tokens import encode_examples, encode_sentences

    data_dir = Path(data_dir)
    tokenizer = load_tokenizer("minilm", {"source": "minilm"})
    if corpus == "ewt":
        rows, _ = encode_sentences(tokenizer, read_conllu(data_dir / "ud/UD_English-EWT/en_ewt-ud-dev.conllu"), max_length)
        rows = [r for r in rows if not r["truncated"]]
    else:
        path = data_dir / {"mrpc": "glue/MRPC/dev.tsv", "qnli": "glue/QNLI/dev.tsv"}[corpus]
        rows, _ = encode_examples(tokenizer, read_glue(path, task_spec(corpus)), max_length)
    for k, r in enumerate(rows):
        r["sentence_index"] = k
    return rows


def sample_rows(rng, rows: list[dict], n: int, per_bin: int = 0) -> tuple[list[dict], list[dict]]:
    """(``n`` rows drawn at random: the corpus's own length distribution, up to ``per_bin`` more rows from
    each length bin, so that every bin the corpus has can be tested)."""
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    extra: list[int] = []
    if per_bin:
        bins = length_bin(np.array([r["n_pieces"] for r in rows]))
        for _, _, name in BINS:
            pool = np.setdiff1d(np.flatnonzero(bins == name), pick)
            extra += list(rng.choice(pool, size=min(per_bin, len(pool)), replace=False))
    return [rows[k] for k in sorted(pick)], [rows[k] for k in sorted(extra)]


CORPUS_KINDS = {
    "ewt": ("local", "prev", "next", "self", "cls", "sep", "syntactic", "uniform", "noise"),
    "mrpc": ("local", "prev", "next", "self", "cls", "sep", "block", "other_segment", "uniform", "noise"),
    "qnli": ("local", "prev", "next", "self", "cls", "sep", "block", "other_segment", "uniform", "noise"),
}
CORPUS_MIXTURES = {
    "ewt": ((("local", 0.45), ("cls", 0.45)), (("next", 0.5), ("sep", 0.4)), (("syntactic", 0.5), ("cls", 0.4))),
    "mrpc": ((("local", 0.45), ("cls", 0.45)), (("block", 0.5), ("sep", 0.4)), (("prev", 0.45), ("block", 0.45))),
    "qnli": ((("local", 0.45), ("cls", 0.45)), (("block", 0.5), ("sep", 0.4)), (("self", 0.45), ("other_segment", 0.45))),
}


def run_corpus(rows: list[dict], corpus: str, n: int, per_bin: int, seed: int, options=None, replicates: int = 2):
    """(heads, tests on the corpus's length distribution, tests per length bin) for one corpus's rows."""
    rng = np.random.default_rng(seed)
    natural, extra = sample_rows(rng, rows, n, per_bin)
    if corpus == "ewt":  # random trees, arcs >= 3 words where possible; ewt_gold keeps the gold trees
        natural = [with_tree(rng, r) for r in natural]
        extra = [with_tree(rng, r) for r in extra]
    kinds = corpus.replace("_gold", "")
    heads = default_heads(CORPUS_KINDS[kinds], mixtures=CORPUS_MIXTURES[kinds], replicates=replicates)
    scores = planted_scores(natural + extra, heads, options, seed=seed)
    scores.insert(0, "corpus", corpus)
    in_natural = scores["sentence_index"].isin({r["sentence_index"] for r in natural})
    tests = planted_tests(scores[in_natural])
    tests_by_bin = planted_tests(scores, by_bin=True)
    return heads, tests, tests_by_bin


#: columns of the matrix as shown: the encoder roles in the registry's display order, pooled relation roles last
MATRIX_ORDER = role_names("bidirectional") + ("dep:*",)


def shown(matrix: pd.DataFrame, min_strength: float = 0.5) -> pd.DataFrame:
    """The rows of single-role heads with >= ``min_strength`` on their targets and of every mixture of two
    roles (each component 40-50% of the row), relation roles pooled as ``dep:*``."""
    keep = (matrix["strength"] >= min_strength) | matrix["planted"].str.contains("+", regex=False)
    strong = matrix[keep]
    return strong.assign(role=strong["role"].where(~strong["role"].str.startswith("dep:"), "dep:*"))


def matrix_for_figure(matrix: pd.DataFrame, min_strength: float = 0.5) -> pd.DataFrame:
    """Mean label rate per planted kind and tested role over corpora (see :func:`shown`)."""
    strong = shown(matrix, min_strength)
    role = strong["role"]
    table = strong.assign(role=role).groupby(["planted", "role"], observed=True)["label_rate"].mean().unstack("role")
    cols = [c for c in MATRIX_ORDER if c in table.columns] + sorted(c for c in table.columns if c not in MATRIX_ORDER)
    return table[cols]


def markdown_summary(matrix: pd.DataFrame, recall: pd.DataFrame) -> str:
    """Label rates per planted kind (single roles at >= 50%, mixtures) and tested role, the smallest recall
    per bin, and the syntactic labels of positional heads on gold trees (reference and controlled)."""
    synthetic = matrix[matrix["corpus"] != "ewt_gold"]
    table = matrix_for_figure(synthetic)
    lines = [
        "Label rate of planted heads (rows) per tested role (columns), EWT (random trees), MRPC and QNLI;",
        "single-role heads with >= 50% of each row on their targets, mixtures of two roles at 40-50% each;",
        "'-': the role is not tested there (no pairs, or no tree):",
        "",
    ]
    cols = list(table.columns)
    lines.append("| planted | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for planted, row in table.iterrows():
        lines.append(f"| {planted} | " + " | ".join("-" if np.isnan(v) else f"{v:.2f}" for v in row) + " |")
    gold = matrix[(matrix["corpus"] == "ewt_gold") & (matrix["strength"] >= 0.5)]
    gold = gold[gold["role"].str.startswith("dep:") | (gold["role"] == "syntactic")]
    if len(gold):
        lines += [
            "",
            "EWT gold trees (most arcs span 1-2 words): label rate of the union role `syntactic` and of the",
            "relation roles `dep:*` (mean over relations), reference label against the positional control's:",
            "",
            "| planted | syntactic | syntactic, controlled | dep:* | dep:*, controlled |",
            "|---|---|---|---|---|",
        ]
        for planted, g in gold.groupby("planted", observed=True):
            union, rel = g[g["role"] == "syntactic"], g[g["role"] != "syntactic"]
            cells = [x[c].mean() for x in (union, rel) for c in ("label_rate", "controlled_rate")]
            lines.append(f"| {planted} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    lines += ["", "Smallest recall per corpus and length bin (planted role, strength >= 0.5):", ""]
    r = recall[recall["strength"] >= 0.5].groupby(["corpus", "bin"], observed=True)
    summary = r.agg(heads=("heads", "sum"), recall=("recall", "min")).reset_index()
    order = {name: k for k, (_, _, name) in enumerate(BINS)}
    summary = summary.sort_values(["corpus", "bin"], key=lambda c: c.map(order) if c.name == "bin" else c)
    lines.append("| corpus | bin | tests | min recall |")
    lines.append("|---|---|---|---|")
    for row in summary.itertuples():
        lines.append(f"| {row.corpus} | {row.bin} | {row.heads} | {row.recall:.2f} |")
    return "\n".join(lines) + "\n"

