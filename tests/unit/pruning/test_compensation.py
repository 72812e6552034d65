"""Compensation measures: what changes in the remaining heads, and whether the change is spread evenly."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from headsieve.models.heads import prune_heads
from headsieve.pruning.compensation import compare_heads, gini, head_activity, importance_shift, spread_summary
from headsieve.pruning.importance import normalise_by_layer


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
    """"Nothing changed" is exactly zero for every measure (not only close to it)."""
    a = head_activity(model, batches())
    importance = np.random.default_rng(0).random((4, 4))
    heads = compare_heads(a, head_activity(copy.deepcopy(model), batches()), importance, importance.copy())
    for measure in ("jsd", "norm_change", "importance_change"):
        assert (heads[measure].to_numpy() == 0).all(), measure
    assert len(a["attentions"]) == 6 and a["attentions"][4].shape == (4, 4, 6, 6)  # padding removed
    summary = spread_summary(heads, "importance_change")
    assert summary["mean_change"] == 0 and summary["gini"] == 0 and np.isnan(summary["p_layers_differ"])


def activity(norm: np.ndarray) -> dict:
    """A head-activity record without attention rows (only the norms: NaN where a head is pruned)."""
    return {"attentions": [], "norm": norm}


def test_removing_heads_alone_moves_no_importance():
    """The issue's example: raw importance all ones, half of layer 0 pruned.  Normalising each model over its
    own remaining heads showed +0.12 in layer 0; over the same heads it is 0 everywhere, whether the inputs are
    raw gradients or rows already normalised per layer (as head_importance returns them)."""
    ones = np.ones((3, 8))
    pruned_norm = np.ones((3, 8))
    pruned_norm[0, :4] = np.nan
    raw_pruned = ones.copy()
    raw_pruned[0, :4] = 0  # pruned heads get importance 0
    old = normalise_by_layer(raw_pruned) - normalise_by_layer(ones)  # the biased measure, for contrast
    assert old[0, 4:].min() > 0.1 and np.allclose(old[1:], 0)
    for ref, pruned in ((ones, raw_pruned), (normalise_by_layer(ones), normalise_by_layer(raw_pruned))):
        heads = compare_heads(activity(np.ones((3, 8))), activity(pruned_norm), ref, pruned)
        alive = heads[~heads.pruned]
        assert np.allclose(alive.importance_change, 0, atol=1e-12) and heads[heads.pruned].importance_change.isna().all()
    assert (importance_shift(ones, raw_pruned, ~np.isnan(pruned_norm))[~np.isnan(pruned_norm)] == 0).all()


def test_planted_importance_change_in_one_layer_is_found():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.5, 1.5, size=(6, 8))
    alive = np.ones((6, 8), bool)
    alive[0, :3] = alive[1, 5:] = False  # heads pruned in layers 0 and 1
    pruned = np.where(alive, ref * 7.0, 0.0)  # every layer rescaled: no redistribution
    pruned[4, 2] *= 3  # the planted change: one head of layer 4 takes a larger share of its layer
    change = importance_shift(ref, pruned, alive)
    assert np.allclose(change[[0, 1, 2, 3, 5]][alive[[0, 1, 2, 3, 5]]], 0, atol=1e-12)
    assert change[4, 2] > 0.2 and (change[4, np.arange(8) != 2] < 0).all()
    norm = np.where(alive, 1.0, np.nan)
    heads = compare_heads(activity(np.ones((6, 8))), activity(norm), ref, pruned)
    summary = spread_summary(heads, "importance_change")
    assert summary["p_layers_differ"] < 0.01  # where the change falls: one layer, not spread
    assert summary["share_in_pruned_layers"] < 1e-9 and summary["p_concentrated"] > 0.5


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
    """Random pruning hits every layer; the change grows with the share of a layer's heads pruned: found by
    the permutation test over heads (48 - 21 heads), not by a correlation over 6 layer means."""
    rng = np.random.default_rng(3)
    layer, head = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pruned = head <= layer  # layer k lost k + 1 heads
    jsd = (1 + 3 * layer) * rng.uniform(0.9, 1.1, size=layer.shape)
    jsd[pruned] = np.nan
    heads = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "pruned": pruned.ravel(), "jsd": jsd.ravel()})
    summary = spread_summary(heads)
    assert np.isnan(summary["p_concentrated"])  # every layer lost heads: no contrast left for that test
    assert summary["r_pruned_share"] > 0.8 and summary["p_pruned_share"] < 0.01
    assert summary["permutations"] == 2000


def test_spread_tests_hold_their_level_under_the_null():
    """Changes drawn alike for every remaining head (the null): each permutation test rejects at 0.05 in at
    most 5% of 300 data sets, up to 3 binomial standard errors (0.088); and it is not a test that never
    rejects (at least 1%)."""
    rng = np.random.default_rng(7)
    layer, head = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pruned = ((layer == 1) & (head < 6)) | ((layer == 4) & (head < 2))
    rejections = {"p_layers_differ": 0, "p_concentrated": 0, "p_pruned_share": 0}
    runs = 300
    for k in range(runs):
        jsd = rng.gamma(2.0, 1.0, size=layer.shape)
        jsd[pruned] = np.nan
        frame_ = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "pruned": pruned.ravel(), "jsd": jsd.ravel()})
        summary = spread_summary(frame_, permutations=400, seed=k)
        for key in rejections:
            rejections[key] += summary[key] < 0.05
    for key, count in rejections.items():
        assert 0.01 <= count / runs <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / runs), (key, count)


def test_spread_summary_is_deterministic():
    rng = np.random.default_rng(0)
    f = frame(3.0, rng)
    assert spread_summary(f, seed=4) == spread_summary(f, seed=4)
