"""Compensation measures: what changes in the remaining heads, and whether the change is spread evenly."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from headsieve.models.heads import prune_heads
from headsieve.pruning.compensation import compare_heads, gini, head_activity, spread_summary


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
        initializer_range=0.3, attn_implementation="eager",
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def batches():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (6, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[3:, 6:] = 0  # some padding
    return [{"input_ids": ids[:3], "attention_mask": mask[:3]}, {"input_ids": ids[3:], "attention_mask": mask[3:]}]


def test_pruning_changes_only_layers_above(model):
    pruned = copy.deepcopy(model)
    prune_heads(pruned, {1: [0, 2]})
    heads = compare_heads(head_activity(model, batches()), head_activity(pruned, batches()))
    assert heads.pruned.sum() == 2 and heads[heads.pruned].layer.eq(1).all()
    alive = heads[~heads.pruned]
    below = alive[alive.layer <= 1]  # layer 1's own remaining heads see the same input as before
    above = alive[alive.layer > 1]
    assert np.allclose(below.jsd, 0, atol=1e-6) and np.allclose(below.norm_change, 0, atol=1e-5)
    assert (above.jsd > 1e-5).all() and (above.norm_change.abs() > 1e-5).all()
    assert heads[heads.pruned].jsd.isna().all()


def test_identical_models_change_nothing(model):
    a = head_activity(model, batches())
    heads = compare_heads(a, head_activity(copy.deepcopy(model), batches()))
    assert np.allclose(heads.jsd, 0, atol=1e-7) and np.allclose(heads.norm_change, 0)
    assert len(a["attentions"]) == 6 and a["attentions"][4].shape == (4, 4, 6, 6)  # padding removed


def test_gini():
    assert gini(np.ones(10)) == pytest.approx(0)
    assert gini(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)
    assert 0 < gini(np.arange(1, 11)) < 0.5


def frame(change_in_pruned_layers: float, rng):
    layer, head = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pruned = (layer == 2) & (head < 4)
    jsd = rng.uniform(0.9, 1.1, size=layer.shape)
    jsd[layer == 2] *= change_in_pruned_layers
    jsd[pruned] = np.nan
    return pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "pruned": pruned.ravel(), "jsd": jsd.ravel()})


def test_spread_summary_detects_planted_concentration():
    rng = np.random.default_rng(0)
    even = spread_summary(frame(1.0, rng))
    concentrated = spread_summary(frame(20.0, rng))
    assert even["heads"] == 44 and even["heads_share_in_pruned_layers"] == pytest.approx(4 / 44)
    assert even["p_concentrated"] > 0.05 and even["gini"] < 0.1
    assert concentrated["p_concentrated"] < 0.01 and concentrated["share_in_pruned_layers"] > 0.5
    assert concentrated["gini"] > even["gini"]
    assert even["p_layers_differ"] > 0.01 and concentrated["p_layers_differ"] < 0.01


def test_spread_summary_relates_change_to_pruned_share():
    """Random pruning hits every layer; the change grows with the share of a layer's heads pruned."""
    rng = np.random.default_rng(3)
    layer, head = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pruned = head <= layer  # layer k lost k + 1 heads
    jsd = (1 + 3 * layer) * rng.uniform(0.9, 1.1, size=layer.shape)
    jsd[pruned] = np.nan
    heads = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "pruned": pruned.ravel(), "jsd": jsd.ravel()})
    summary = spread_summary(heads)
    assert np.isnan(summary["p_concentrated"])  # every layer lost heads: no contrast left for that test
    assert summary["rho_pruned_share"] > 0.9 and summary["p_rho"] < 0.05
