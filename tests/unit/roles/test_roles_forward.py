"""Causal role scores in the forward pass (headsieve.roles.forward, issue 17 item 3): the stored-attention path
and the chunked path (queries and keys captured per layer, role masses in query chunks) give the same table on
tiny random GPT-2, Llama-GQA and Qwen2 models, on text, repeated and needle inputs; planted truth: heads with
zero query weights attend uniformly over the visible keys, so every role's mass score is the mean uniform share
of its scored queries, on both paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import prune_heads
from headsieve.roles.causal_inputs import needle_input, repeated_facts
from headsieve.roles.causal_score import CAUSAL_OPTIONS, causal_target_rows
from headsieve.roles.causal import CausalFacts
from headsieve.roles.forward import COLUMNS, causal_role_scores

from support.decoder import HEADS, KV_HEADS, LAYERS, VOCAB, tiny_model

TOL = 1e-5
FAMILIES = ("gpt2", "llama", "qwen2")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def text_inputs(data, n: int = 4) -> list:
    """EWT dev sentences (one position per word, gold trees); token ids folded into the tiny vocabulary (the
    facts keep the word identities, so duplicates are the sentence's repeated words)."""
    from headsieve.roles.causal_separation import ewt_facts

    pool = [f for f in ewt_facts(data) if 8 <= f.n_pieces <= 30]
    picked = [pool[k] for k in np.random.default_rng(0).choice(len(pool), size=n, replace=False)]
    return [(3 + f.token % (VOCAB - 3), f) for f in picked]


def repeated_inputs(n: int = 3) -> list:
    return [(f.token, f) for f in (repeated_facts(s, 7 + 3 * s, VOCAB) for s in range(n))]


def needle_inputs(n: int = 3) -> list:
    out = []
    for s in range(n):
        needle = needle_input(s, 14, 4, VOCAB)
        facts = CausalFacts(token=needle.tokens, delimiter=np.zeros(len(needle.tokens), dtype=bool))
        out.append((needle.tokens, facts))
    return out


def inputs_of(kind: str, data) -> list:
    return {"text": lambda: text_inputs(data), "repeated": repeated_inputs, "needle": needle_inputs}[kind]()


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) == list(COLUMNS)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=TOL, equal_nan=True)


@pytest.mark.parametrize("kind", ["text", "repeated", "needle"])
@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_path_equals_stored_path(family, kind, data):
    model = tiny_model(family)
    inputs = inputs_of(kind, data)
    stored = causal_role_scores(model, inputs)
    for chunk, batch_size in ((1, 1), (5, 1), (64, 2)):
        assert_same_table(stored, causal_role_scores(model, inputs, chunk=chunk, batch_size=batch_size))
    assert model.config._attn_implementation == "eager"  # the capture is undone


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_form_on_both_paths(family):
    model = tiny_model(family)
    inputs = repeated_inputs()
    options = {"score": "ratio"}
    stored = causal_role_scores(model, inputs, options)
    assert (stored["form"] == "ratio").all()
    assert_same_table(stored, causal_role_scores(model, inputs, options, chunk=3))


def test_batches_equal_single_inputs():
    """Right-padded batches (inputs of different lengths) give each input's own scores."""
    model = tiny_model("llama")
    inputs = repeated_inputs(4)
    one = causal_role_scores(model, inputs)
    assert_same_table(one, causal_role_scores(model, inputs, batch_size=3))


def test_table_rows_and_groups():
    model = tiny_model("qwen2")
    inputs = repeated_inputs(2)
    table = causal_role_scores(model, inputs, chunk=4)
    roles = set(table["role"])
    assert roles == {"causal:prev", "causal:local", "causal:sink", "causal:duplicate", "causal:induction"}
    per = table.groupby(["input", "role"]).size()
    assert (per == LAYERS * HEADS).all()
    assert (table["kv_group"] == table["head"] // (HEADS // KV_HEADS)).all()
    for i, (ids, facts) in enumerate(inputs):
        rows = table[table["input"] == i]
        assert (rows["n_pieces"] == len(ids)).all()
        assert ((rows["n_queries"] + rows["n_undefined"]) == len(ids)).all()


def uniform_model(family: str):
    """A tiny model whose query weights (and biases) are zero: every logit 0, so every head attends
    uniformly to the keys its query can see (rotary embedding of a zero query is zero)."""
    model = tiny_model(family)
    with torch.no_grad():
        for layer in range(LAYERS):
            if family == "gpt2":
                attn = model.transformer.h[layer].attn
                attn.c_attn.weight[:, : attn.split_size] = 0
                attn.c_attn.bias[: attn.split_size] = 0
            else:
                q = model.model.layers[layer].self_attn.q_proj
                q.weight.zero_()
                if q.bias is not None:
                    q.bias.zero_()
    return model


def uniform_truth(facts: CausalFacts, options: dict) -> dict[str, tuple[float, int]]:
    """The mass score of a uniform causal head and its scored queries: the mean of |S_q| / (q + 1) over the
    queries with targets whose share is at most the cap (computed from the target sets alone)."""
    out = {}
    for role, S in causal_target_rows(facts, options).items():
        size = S.sum(1)
        share = size / np.arange(1, len(size) + 1)
        scored = (size > 0) & (share <= options["max_uniform_share"] + 1e-9)
        if size.any():
            out[role] = (float(share[scored].mean()) if scored.any() else np.nan, int(scored.sum()))
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_uniform_heads_score_the_uniform_share(family, data):
    model = uniform_model(family)
    inputs = repeated_inputs() + text_inputs(data, 2)
    options = dict(CAUSAL_OPTIONS)
    for chunk in (None, 4):
        table = causal_role_scores(model, inputs, chunk=chunk)
        for i, (_, facts) in enumerate(inputs):
            truth = uniform_truth(facts, options)
            rows = table[table["input"] == i]
            assert set(rows["role"]) == set(truth)
            for role, (score, n) in truth.items():
                got = rows[rows["role"] == role]
                assert len(got) == LAYERS * HEADS and (got["n_queries"] == n).all(), (chunk, role)
                np.testing.assert_allclose(got["score"], score, atol=1e-6, equal_nan=True, err_msg=f"{chunk} {role}")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pruned_model_scores_its_remaining_heads(family):
    """Layer 0 loses head 1 (a ragged key-value group for Llama), layer 1 loses key-value group 1 (heads 2, 3),
    layer 2 every head: both paths agree, with rows for the remaining heads only (original indices)."""
    model = tiny_model(family)
    prune_heads(model, [(0, 1), (1, 2), (1, 3)] + [(2, h) for h in range(HEADS)])
    inputs = repeated_inputs(2)
    stored = causal_role_scores(model, inputs)
    assert_same_table(stored, causal_role_scores(model, inputs, chunk=3))
    heads = stored.groupby("layer")["head"].unique()
    assert sorted(heads[0]) == [0, 2, 3] and sorted(heads[1]) == [0, 1] and 2 not in heads.index


def test_bad_inputs_are_one_line_errors():
    model = tiny_model("gpt2")
    facts = repeated_facts(0, 5, VOCAB)
    with pytest.raises(HeadsieveError, match="input 0: 10 token ids but facts of 11 positions"):
        causal_role_scores(model, [(facts.token[:10], facts)])
    with pytest.raises(HeadsieveError, match="chunk 0 must be None"):
        causal_role_scores(model, [(facts.token, facts)], chunk=0)
    with pytest.raises(HeadsieveError, match="input 0 is not an"):
        causal_role_scores(model, [facts.token])
    with pytest.raises(HeadsieveError, match="score form"):
        causal_role_scores(model, [(facts.token, facts)], {"score": "entropy"})
    long = repeated_facts(0, 40, VOCAB)  # 81 tokens, the table holds 64
    with pytest.raises(HeadsieveError, match="input of 81 tokens does not fit the model's position table of 64"):
        causal_role_scores(model, [(long.token, long)], chunk=8)


def test_encoder_is_refused(tiny_bert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_bert), attn_implementation="eager")
    facts = repeated_facts(0, 3, 50)
    with pytest.raises(HeadsieveError, match="need a decoder-only language model"):
        causal_role_scores(model, [(facts.token, facts)], chunk=2)


def test_sliding_window_longer_inputs_refused_on_the_chunked_path():
    model = tiny_model("mistral")
    model.config.sliding_window = 8
    facts = repeated_facts(0, 6, VOCAB)  # 13 tokens
    with pytest.raises(HeadsieveError, match="exceeds the model's sliding attention window 8"):
        causal_role_scores(model, [(facts.token, facts)], chunk=4)


def largest_allocation(fn) -> int:
    """The largest CPU memory one torch operation allocates while ``fn`` runs (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(event.cpu_memory_usage for event in prof.events())


def test_chunked_path_allocates_no_attention_matrix():
    """The stored path allocates at least one [heads, T, T] float32 (the test can see it); no operation of the
    chunked path allocates more than the chunk's rows (heads or roles x chunk x T, in float64 at most)."""
    from headsieve.roles.causal_score import CAUSAL_ROLES

    model = tiny_model("llama")
    facts = repeated_facts(0, 31, VOCAB)
    T, chunk = facts.n_pieces, 4
    matrix = HEADS * T * T * 4
    inputs = [(facts.token, facts)]
    assert largest_allocation(lambda: causal_role_scores(model, inputs)) >= matrix
    chunked = largest_allocation(lambda: causal_role_scores(model, inputs, chunk=chunk))
    assert chunked <= max(HEADS, len(CAUSAL_ROLES)) * chunk * T * 8 < matrix
