"""Planted truth for the causal roles: planted causal heads, scored and tested by the real code.

A planted head is a mixture of components ``(kind, strength)`` (:class:`headsieve.roles.separation.Head`)
plus Dirichlet(1) noise over the visible keys carrying the rest of each row: in every row where the role
``kind`` (a causal role of the registry) has visible targets, ``strength`` of the row is spread evenly over
them (a row with none gives that share to the noise).  ``uniform`` heads put ``1 / (q + 1)`` on every
visible key; ``noise`` heads are Dirichlet rows over the visible keys.  The labels a head should get are its
planted roles plus the roles that contain them by definition (the registry's nesting,
:func:`headsieve.roles.separation.expected_labels`).

Inputs: ``text`` (UD EWT dev sentences, one position per word, random trees whose arcs span >= 3 words
where the sentence allows, so that the syntactic roles are not restated by position; delimiters: PUNCT
words) scored on every causal role but the copy family; ``repeated`` (a random sequence repeated twice
after a BOS, :func:`headsieve.roles.causal_inputs.repeated_facts`) scored on every causal role (those with
no target there, the delimiter and syntactic roles, give no score).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.roles.causal import CausalFacts
from headsieve.roles.causal_inputs import repeated_facts, text_facts
from headsieve.roles.causal_score import CAUSAL_OPTIONS, CAUSAL_ROLES, causal_target_rows, check_causal, score_causal
from headsieve.roles.registry import ROLES
from headsieve.roles.separation import Head, default_heads, mix_planted, random_tree
from headsieve.roles.sieve import Batch
from headsieve.roles.tests import role_tests

#: the null heads: uniform over the visible keys, Dirichlet rows
NULL_KINDS = ("uniform", "noise")
#: roles scored on text (the copy family is planted and scored on repeated sequences)
TEXT_ROLES = tuple(r for r in CAUSAL_ROLES if ROLES[r].family != "copy")
#: mixtures of two roles (40-50% each) per input kind
MIXTURES = {
    "text": ((("causal:prev", 0.45), ("causal:sink", 0.45)), (("causal:head", 0.5), ("causal:delimiter", 0.4))),
    "repeated": ((("causal:induction", 0.5), ("causal:sink", 0.4)), (("causal:duplicate", 0.45), ("causal:prev", 0.45))),
}


def causal_heads(kinds, replicates: int = 1, mixtures=()) -> list[Head]:
    """Single-role heads of ``kinds`` at 40-90% plus the null heads and ``mixtures``."""
    return default_heads(tuple(kinds) + NULL_KINDS, mixtures=mixtures, replicates=replicates)


def planted_causal_attention(rng, heads: list[Head], facts: CausalFacts, options: dict | None = None) -> np.ndarray:
    """[1, X, T, T] float32 causal attention of the planted heads for one sequence."""
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    n = facts.n_pieces
    visible = np.tril(np.ones((n, n)))
    kinds = sorted({k for h in heads for k, _ in h.components} - set(NULL_KINDS))
    rows = causal_target_rows(facts, opts, roles=kinds) if kinds else {}
    P = {}
    for kind, S in rows.items():
        size = S.sum(1, keepdims=True).astype(float)
        P[kind] = (np.divide(S, size, out=np.zeros(S.shape), where=size > 0), size[:, 0] > 0)
    noise = rng.standard_exponential((len(heads), n, n)) * visible
    noise /= noise.sum(-1, keepdims=True)  # Dirichlet(1) over the visible keys
    return mix_planted(heads, P, noise, visible / visible.sum(1, keepdims=True), NULL_KINDS)


def planted_causal_scores(facts: list[CausalFacts], heads: list[Head], options: dict | None = None, seed: int = 0, batch: int = 16):
    """Long score table: sentence_index, n_pieces, layer 0, head, role, score, n_queries, n_undefined, form."""
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, len(facts), batch):
        chunk = facts[start : start + batch]
        view = Batch([planted_causal_attention(rng, heads, f, opts) for f in chunk], chunk)
        view.check([f"planted input {start + b}" for b in range(len(chunk))])
        check_causal(view, [f"planted input {start + b}" for b in range(len(chunk))])
        for b, role, scores, nq, nu, form in score_causal(view, opts, detail=True):
            parts.append(
                pd.DataFrame(
                    {
                        "sentence_index": start + b,
                        "n_pieces": chunk[b].n_pieces,
                        "layer": 0,
                        "head": np.arange(len(heads)),
                        "role": role,
                        "score": np.asarray(scores, dtype=float),
                        "n_queries": nq,
                        "n_undefined": nu,
                        "form": form,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def random_tree_facts(rng, facts: CausalFacts, min_distance: int = 3) -> CausalFacts:
    """A copy of word-level facts with a random tree (arcs >= ``min_distance`` words where possible)."""
    heads = random_tree(rng, len(facts.word_head), min_distance)
    return CausalFacts(facts.token, facts.delimiter, facts.piece_word, heads)


def ewt_facts(data_dir, min_words: int = 2) -> list[CausalFacts]:
    """Causal facts of the UD EWT dev sentences (one position per word, gold trees)."""
    from pathlib import Path

    from headsieve.io.conllu import read_conllu

    sentences = read_conllu(Path(data_dir) / "ud/UD_English-EWT/en_ewt-ud-dev.conllu")
    return [text_facts(s.words, s.upos, s.heads) for s in sentences if len(s.words) >= min_words]


def causal_inputs(kind: str, seed: int, n: int, data_dir=None, length_range=(8, 40), vocab_size: int = 5000):
    """``n`` inputs of ``kind``: ``text`` (EWT dev sentences drawn at random, random trees) or ``repeated``
    (sequence lengths drawn from ``length_range``)."""
    rng = np.random.default_rng(seed)
    if kind == "text":
        pool = ewt_facts(data_dir)
        pick = np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
        return [random_tree_facts(rng, pool[k]) for k in pick]
    if kind == "repeated":
        lengths = rng.integers(length_range[0], length_range[1] + 1, size=n)
        return [repeated_facts(seed * 100_003 + k, int(L), vocab_size) for k, L in enumerate(lengths)]
    raise ValueError(kind)


def causal_planted_tests(kind: str, facts: list[CausalFacts], heads: list[Head], seed: int = 0, options=None,
                         alpha: float = 0.05, correction: str = "bh") -> pd.DataFrame:  # fmt: skip
    """role_tests over the planted scores of one input kind (one family; ``corpus`` = ``kind``)."""
    roles = TEXT_ROLES if kind == "text" else CAUSAL_ROLES
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    opts["roles"] = list(roles)
    scores = planted_causal_scores(facts, heads, opts, seed=seed)
    scores.insert(0, "corpus", kind)
    return role_tests(scores, alpha=alpha, correction=correction, keys=("corpus",))
