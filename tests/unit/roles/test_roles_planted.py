"""Statistics against planted truth.

* Synthetic attention in the dump format, where chosen heads attend to neighbours, to the next token, to
  [CLS], to [SEP], along dependency arcs or within their own segment, gets exactly those labels (and the
  roles that contain them by definition, from the registry), and nothing else, through the real
  score -> test code path, with the default options (mass score, block contrast).
* Attention with no role (Dirichlet rows) is labelled at a per-test rate <= alpha at the null boundary,
  and with Holm at a family-wise rate <= alpha, over repeated draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from headsieve.io.atomic import write_table
from headsieve.io.shards import ShardWriter
from headsieve.roles.score import score_dump
from headsieve.roles.sieve import Batch, SentenceFacts, score_batch
from headsieve.roles.registry import containers
from headsieve.roles.tests import role_tests
from headsieve.tokens import records_table

from support.synthetic import dirichlet_attention, pair_row, planted_rows, sentence_row

L, H = 2, 6


def complete(row: dict) -> dict:
    """Fill the tokens.parquet columns a synthetic row does not need for scoring."""
    n, words = row["n_pieces"], len(row["word_token"])
    return {
        "text": "synthetic",
        "text_b": None,
        "label": None,
        "words": [f"w{w}" for w in range(words)],
        "word_segment": [0] * words,
        "pieces": [f"p{i}" for i in range(n)],
        "token_type_ids": [0] * n,
        "truncated": False,
        "n_words_lost": 0,
        "n_relations_lost": 0,
        **row,
    }


def write_corpus(folder, rows, planted: dict, noise: float, seed: int):
    """tokens.parquet + a dump in which heads ``planted[(layer, head)] = kind`` hold a role, others none."""
    rng = np.random.default_rng(seed)
    write_table(records_table([complete(r) for r in rows], "synthetic", "planted"), folder / "tokens.parquet")
    writer = ShardWriter(folder / "attention", "synthetic", "planted", shard_bytes=20_000)
    for row in rows:
        A = dirichlet_attention(rng, L, H, row["n_pieces"])
        for (layer, head), kind in planted.items():
            A[layer, head] = (1 - noise) * planted_rows(kind, row) + noise * A[layer, head]
        writer.add(row["sentence_index"], row["sentence_id"], A, row["input_ids"])
    writer.close()


def labels_by_head(folder, options=None, **test_options) -> dict:
    scores, _ = score_dump(
        folder / "tokens.parquet", folder / "attention", "synthetic", "planted", options, progress=False
    )
    tests = role_tests(scores.to_pandas(), **test_options)
    labelled = tests[tests.label]
    return {
        (int(layer), int(head)): set(group.role.astype(str))
        for (layer, head), group in labelled.groupby(["layer", "head"], observed=True)
    }


def with_containers(*roles) -> set:
    return set(roles).union(*(containers(r) for r in roles))


def test_planted_roles_on_trees(tmp_path):
    # sentences of 20-31 pieces: every query's local window is scorable (uniform share 5/N <= 0.25)
    rng = np.random.default_rng(0)
    rows = [
        sentence_row(rng, int(rng.integers(18, 30)), max_pieces=1, mwt=False, lost=False, min_distance=3, index=k)
        for k in range(40)
    ]
    planted = {(0, 0): "local", (0, 1): "cls", (1, 2): "sep", (1, 3): "syntactic", (0, 2): "next"}
    write_corpus(tmp_path, rows, planted, noise=0.15, seed=1)
    got = labels_by_head(tmp_path)
    relations = {f"dep:{r}" for row in rows for r, h in zip(row["word_deprel"], row["word_head"]) if h}
    assert got == {
        (0, 0): {"local"},
        (0, 1): with_containers("cls"),  # delimiter = [CLS] and [SEP]: contains cls by definition
        (1, 2): with_containers("sep"),
        (1, 3): with_containers(*relations) | {"syntactic"},
        (0, 2): with_containers("next"),  # next-token heads are local heads too
    }
    assert with_containers("next") == {"next", "local"}


def test_planted_block_on_pairs(tmp_path):
    rng = np.random.default_rng(2)
    rows = [pair_row(rng, int(rng.integers(14, 22)), int(rng.integers(14, 22)), index=k) for k in range(40)]
    planted = {(0, 4): "block", (1, 0): "cls", (0, 1): "local", (0, 2): "self", (1, 1): "other_segment"}
    write_corpus(tmp_path, rows, planted, noise=0.15, seed=3)
    got = labels_by_head(tmp_path)
    assert got == {
        (0, 4): {"block"},
        (1, 0): with_containers("cls"),
        (0, 1): {"local"},
        (0, 2): with_containers("self"),
    }  # neither the local, the self nor the other-segment head is a block head
    # the reference ratio: a perfect block head's plain ratio is N/|segment| (about 2), unreachable at tau 3
    reference = labels_by_head(tmp_path, {"score": "ratio", "block_weighting": "plain"}, tau=3.0)
    assert (0, 4) not in reference


def null_draw(rng, n_sentences: int, options: dict) -> pd.DataFrame:
    """Scores of Dirichlet attention (no role) on random trees, through the real batch scorer."""
    rows = [sentence_row(rng, int(rng.integers(5, 12)), index=k) for k in range(n_sentences)]
    arrays = [dirichlet_attention(rng, 2, 2, r["n_pieces"]) for r in rows]
    out = score_batch(Batch(arrays, [SentenceFacts.from_row(r) for r in rows]), options)
    return pd.DataFrame(
        [
            {"model": "m", "corpus": "c", "layer": x // 2, "head": x % 2, "role": role, "score": float(s[x])}
            for b, role, s, _ in out
            for x in range(4)
        ]
    )


def test_no_role_false_positive_rate():
    """At the null boundary (tau = 1: Dirichlet rows give an expected reference ratio of exactly 1 for every
    role scored with means; the t test is the same for every score form), the rejection rate must not exceed alpha: per test without correction, per
    family (any label in a draw) with Holm."""
    alpha, draws = 0.05, 120
    rng = np.random.default_rng(42)
    options = {"score": "ratio", "relations": ["nsubj", "obj", "amod", "det"], "union": ["nsubj", "obj"]}
    per_test, per_family = [], []
    for _ in range(draws):
        scores = null_draw(rng, 25, options)
        plain = role_tests(scores, tau=1.0, alpha=alpha, correction="none", tau_by_role={})
        holm = role_tests(scores, tau=1.0, alpha=alpha, correction="holm", tau_by_role={})
        per_test.append(plain.label.mean())
        per_family.append(holm.label.any())
    rate = float(np.mean(per_test))
    se = float(np.std(per_test, ddof=1) / np.sqrt(draws))
    assert rate <= alpha + 3 * se, rate
    assert rate >= alpha / 5, rate  # calibrated, not trivially silent: p values do reach alpha
    fwer = float(np.mean(per_family))
    assert fwer <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / draws), fwer


def test_detects_a_small_true_effect():
    """Power: a mean slightly above tau is found (the test is not just conservative)."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"model": "m", "corpus": "c", "layer": 0, "head": 0, "role": "local", "score": rng.normal(3.3, 0.5, 60)}
    )
    assert role_tests(frame, tau=3.0).label.item()
    frame["score"] = rng.normal(2.9, 0.5, 60)
    assert not role_tests(frame, tau=3.0).label.item()


def test_requested_relation_absent_is_an_error(tmp_path):
    from headsieve.errors import HeadsieveError

    rng = np.random.default_rng(9)
    rows = [sentence_row(rng, 10, index=k) for k in range(5)]
    write_corpus(tmp_path, rows, {}, noise=1.0, seed=1)
    with pytest.raises(HeadsieveError, match=r"no sentence has the relation\(s\) xcomp \(config key roles.relations"):
        score_dump(
            tmp_path / "tokens.parquet", tmp_path / "attention", "synthetic", "planted", {"relations": ["nsubj", "xcomp"]}
        )


def test_short_inputs_are_left_out_and_counted():
    """Mass score: a 6-piece sentence has no query where local is defined (uniform share >= 3/6 > 0.25): its
    score is NaN, it does not enter the test, and the test row and the summary line count it."""
    from headsieve.roles.tests import left_out_lines

    rng = np.random.default_rng(4)
    rows = [sentence_row(rng, 20, max_pieces=1, mwt=False, lost=False, index=k) for k in range(6)]
    rows += [sentence_row(rng, 4, max_pieces=1, mwt=False, lost=False, index=6 + k) for k in range(3)]
    arrays = [dirichlet_attention(rng, 1, 1, r["n_pieces"]) for r in rows]
    out = score_batch(Batch(arrays, [SentenceFacts.from_row(r) for r in rows]), {}, detail=True)
    local = {b: (s[0], nq, nu) for b, role, s, nq, nu, _ in out if role == "local"}
    for b in range(6, 9):
        score, nq, nu = local[b]
        assert np.isnan(score) and nq == 0 and nu == rows[b]["n_pieces"]
    frame = pd.DataFrame(
        [{"model": "m", "corpus": "c", "layer": 0, "head": 0, "role": role, "score": float(s[0]), "form": form}
         for b, role, s, _, _, form in out]
    )  # fmt: skip
    tests = role_tests(frame)
    row = tests[tests.role == "local"].iloc[0]
    assert (row.n, row.n_left_out) == (6, 3)
    assert any("local 3 of 9" in line for line in left_out_lines(tests))
