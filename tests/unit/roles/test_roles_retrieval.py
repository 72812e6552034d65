"""The retrieval role of decoder heads (Wu et al. 2024) and results per key-value group (issue 17).

Planted truth: on needle inputs (marker before the needle), planted causal heads - retrieval heads putting
40-90% of the copy queries' rows on the needle token being copied, previous-token and sink heads, uniform and
Dirichlet heads - under a model that copies the needle right.  Asserted: the top-1 score (Wu et al.) and the
attention-mass score label the retrieval heads and no other.  Key-value groups: group scores are the means of
their query heads, planted groups are found, and with one head per group the group tests are the head tests.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from support.decoder import VOCAB, tiny_model

from headsieve.models.heads import prune_heads, self_attention_probabilities
from headsieve.roles.causal import CausalFacts
from headsieve.roles.causal_inputs import needle_facts, needle_input
from headsieve.roles.causal_score import causal_target_rows, score_causal
from headsieve.roles.causal_separation import NULL_KINDS, causal_heads, planted_causal_attention
from headsieve.roles.kv_groups import kv_group_scores, kv_group_tests
from headsieve.roles.registry import ROLES, default_tau
from headsieve.roles.retrieval import (
    FORM,
    ROLE,
    copy_hits,
    copy_top_keys,
    retrieval_scores,
    retrieval_tests,
    score_rows,
    score_table,
)
from headsieve.roles.sieve import Batch
from headsieve.roles.tests import role_tests

V = 400


def needles(n: int, seed: int = 0, context: int = 40, length: int = 6):
    return [needle_input(seed * 1000 + k, context, length, V, lead_marker=True) for k in range(n)]


def test_retrieval_rows_are_the_copy_map():
    x = needles(1)[0]
    facts = needle_facts(x)
    S = causal_target_rows(facts, roles=[ROLE])[ROLE]
    assert S.sum() == x.needle_length
    for q, k in zip(x.copy_query, x.copy_source):
        assert list(np.flatnonzero(S[q])) == [k] and x.tokens[k] == x.tokens[q + 1]
    T = len(x.tokens)
    assert (causal_target_rows(facts, q0=T - 4, q1=T, roles=[ROLE])[ROLE] == S[T - 4 :]).all()
    plain = causal_target_rows(CausalFacts(x.tokens, facts.delimiter), roles=[ROLE])
    assert not plain[ROLE].any()  # facts without a copy map: no target
    assert ROLES[ROLE].family == "copy" and default_tau(ROLE, FORM) == 0.1


def test_copy_hits_follow_wu_et_al():
    """A hit needs the emitted token in the needle and the head's top key at that token's needle position."""
    x = needles(1, context=10, length=3)[0]
    T = len(x.tokens)
    A = np.tril(np.ones((3, T, T)))
    A /= A.sum(-1, keepdims=True)
    for k, (q, src) in enumerate(zip(x.copy_query, x.copy_source)):
        A[0, q] = 0.0
        A[0, q, src] = 1.0  # head 0: the copied token
        A[1, q] = 0.0
        A[1, q, x.needle_start + (k + 1) % 3] = 1.0  # head 1: another needle token
    right = np.r_[x.tokens[1:], 0]  # a model that emits the right next token everywhere
    hits = copy_hits(A, right, x)
    assert hits[0].all() and not hits[1].any() and not hits[2].any()  # head 2 uniform: top key 0 (bos)
    wrong = right.copy()
    wrong[x.copy_query] = x.tokens[x.needle_start + (np.arange(3) + 1) % 3]  # emits another needle token
    hits = copy_hits(A, wrong, x)
    assert hits[1].all() and not hits[0].any()  # the head that attends to the emitted needle token
    off = right.copy()
    off[x.copy_query] = 1  # emits the marker: not a needle token
    assert not copy_hits(A, off, x).any()
    assert score_rows(A, right, x)["chance"] == pytest.approx(np.mean(1.0 / (x.copy_query + 1)))


@pytest.fixture(scope="module")
def planted():
    heads = causal_heads(("causal:retrieval", "causal:prev", "causal:sink"))
    inputs = needles(30, seed=1)
    rng = np.random.default_rng(1)
    attention = [planted_causal_attention(rng, heads, needle_facts(x), {"roles": [ROLE]}) for x in inputs]
    return heads, inputs, attention


def test_planted_retrieval_heads_are_found_top1(planted):
    heads, inputs, attention = planted
    rows = []
    for x, A in zip(inputs, attention):
        emitted = np.r_[x.tokens[1:], 0]  # a model that copies the needle right
        rows.append(score_rows(A[0], emitted, x))
    table = score_table(rows, np.zeros(len(heads), dtype=np.int64), np.arange(len(heads)), 1).assign(corpus="needle")
    tests = retrieval_tests(table, keys=("corpus",))
    for x, head in enumerate(heads):
        t = tests[tests["head"] == x].iloc[0]
        if head.kind == ROLE and head.strength >= 0.5:  # top key always the copied token: score 1 everywhere
            assert t["label"] and t["mean"] == 1.0 and t["test"] == "sign", head.name
        elif head.kind != ROLE:
            assert not t["label"] and t["mean"] < 0.1, head.name
    assert (tests["tau"] == 0.1).all()
    plain = role_tests(table, keys=("corpus",))  # the t test alone leaves the constant samples untested
    assert not plain.loc[tests["test"] == "sign", "label"].any()


def test_planted_retrieval_heads_are_found_by_mass(planted):
    heads, inputs, attention = planted
    parts = []
    batch = Batch([A for A in attention], [needle_facts(x) for x in inputs])
    for b, role, scores, nq in score_causal(batch, {"roles": [ROLE]}):
        parts.append(pd.DataFrame({"corpus": "needle", "sentence_index": b, "layer": 0, "head": np.arange(len(heads)),
                                   "role": role, "score": scores, "form": "mass"}))  # fmt: skip
    tests = role_tests(pd.concat(parts), keys=("corpus",))
    for x, head in enumerate(heads):
        label = bool(tests.loc[tests["head"] == x, "label"].iloc[0])
        if head.kind in NULL_KINDS or head.kind != ROLE:
            assert not label, head.name
        elif head.strength >= 0.5:
            assert label, head.name


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_retrieval_scores_of_a_model(model_type):
    """The table of a tiny model, checked against its attention and logits; a pruned model has no rows for
    its pruned heads."""
    import torch

    model = tiny_model(model_type)
    inputs = [needle_input(s, 12, 3, VOCAB, lead_marker=True) for s in range(3)]
    table = retrieval_scores(model, inputs)
    X = 3 * 4
    assert len(table) == 3 * X and set(table["role"]) == {ROLE} and set(table["form"]) == {FORM}
    group = 1 if model_type == "gpt2" else 2
    assert (table["kv_group"] == table["head"] // group).all() and table["score"].between(0, 1).all()
    x = inputs[1]
    ids = torch.tensor(x.tokens)[None]
    A = torch.cat(self_attention_probabilities(model, {"input_ids": ids}), 1)[0].numpy()
    with torch.no_grad():
        emitted = model(input_ids=ids).logits[0].argmax(-1).numpy()
    np.testing.assert_allclose(table.loc[table["input"] == 1, "score"], copy_hits(A, emitted, x).mean(1))
    pruned = copy.deepcopy(model)
    prune_heads(pruned, [("decoder", 1, 0), ("decoder", 1, 1)])
    rows = retrieval_scores(pruned, inputs)
    assert len(rows) == 3 * (X - 2) and not ((rows["layer"] == 1) & (rows["head"] < 2)).any()


# ------------------------------------------------------------------ key-value groups


def group_table(seed: int = 0, n: int = 25) -> pd.DataFrame:
    """2 layers x 4 query heads in groups of 2: layer 0 group 0 both heads strong, layer 1 group 1 one
    strong head and one null head, every other head null (mass scores around 0.2)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for layer in range(2):
            for head in range(4):
                strong = (layer, head) in ((0, 0), (0, 1), (1, 2))
                score = rng.normal(0.8 if strong else 0.2, 0.05)
                rows.append({"model": "m", "input": i, "layer": layer, "head": head, "role": "causal:induction",
                             "score": score, "form": "mass"})  # fmt: skip
    return pd.DataFrame(rows)


def test_group_scores_are_the_mean_of_their_heads():
    scores = group_table()
    groups = kv_group_scores(scores, group_size=2, keys=("model",))
    assert len(groups) == len(scores) // 2 and (groups["n_heads"] == 2).all()
    one = scores[(scores["input"] == 3) & (scores["layer"] == 1) & (scores["head"] >= 2)]["score"].mean()
    got = groups[(groups["input"] == 3) & (groups["layer"] == 1) & (groups["kv_group"] == 1)]["score"].item()
    assert got == pytest.approx(one)
    scores.loc[0, "score"] = np.nan  # a head without a defined score: the group mean of the others
    first = kv_group_scores(scores, group_size=2).iloc[0]
    assert first["n_heads"] == 1 and first["score"] == pytest.approx(scores.loc[1, "score"])


def test_planted_groups_are_found():
    tests = kv_group_tests(group_table(), group_size=2, keys=("model",))
    labelled = {(int(r.layer), int(r.kv_group)) for r in tests.itertuples() if r.label}
    assert labelled == {(0, 0), (1, 1)}  # (1, 1): mean 0.5 > tau 0.4
    assert "head" not in tests.columns and tests["tau"].eq(default_tau("causal:induction", "mass")).all()
    strict = kv_group_tests(group_table(), group_size=2, keys=("model",), tau_by_role={"causal:induction": 0.6})
    assert {(int(r.layer), int(r.kv_group)) for r in strict.itertuples() if r.label} == {(0, 0)}


def test_groups_of_one_are_the_head_tests():
    scores = group_table(3)
    heads = role_tests(scores.rename(columns={"input": "sentence_index"}), keys=("model",))
    groups = kv_group_tests(scores, group_size=1, keys=("model",))
    np.testing.assert_allclose(groups["p_adj"], heads["p_adj"])
    assert (groups["kv_group"].to_numpy() == heads["head"].to_numpy()).all()
    without_keys = kv_group_tests(scores.drop(columns="model"), group_size=1)
    np.testing.assert_allclose(without_keys["p_adj"], heads["p_adj"])


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_captured_path_equals_the_stored_path(model_type):
    """Top keys from the captured queries and keys (copy rows only, in chunks) and the LM head at the copy
    queries give the table of the eager output_attentions path; also on a pruned model (a whole group gone)."""
    model = tiny_model(model_type)
    inputs = [needle_input(s, 14, 4, VOCAB, lead_marker=True) for s in range(3)]
    pruned = copy.deepcopy(model)
    prune_heads(pruned, [("decoder", 0, 0), ("decoder", 0, 1), ("decoder", 2, 3)])
    for m, X in ((model, 12), (pruned, 9)):
        for x in inputs:
            top, emitted = copy_top_keys(m, x)
            assert top.shape == (X, 4) and len(set(top.reshape(-1))) > 4  # the heads attend to various keys
            for chunk in (1, 3):
                top_c, emitted_c = copy_top_keys(m, x, chunk=chunk)
                assert (top_c == top).all() and (emitted_c == emitted).all()
    stored = retrieval_scores(model, inputs)
    pd.testing.assert_frame_equal(retrieval_scores(model, inputs, chunk=2), stored)
    pd.testing.assert_frame_equal(retrieval_scores(pruned, inputs, chunk=2), retrieval_scores(pruned, inputs))
    with pytest.raises(Exception, match="chunk 0 must be None"):
        retrieval_scores(model, inputs, chunk=0)
