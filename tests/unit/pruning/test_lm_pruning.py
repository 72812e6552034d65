"""Pruning decoder-only LMs (issue 17): role strategies on causal labels (short names, key-value group
labels), language-model importance for the importance strategy, and the paired comparisons of the curves
checked against planted differences."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from support.decoder import VOCAB, tiny_model

from headsieve.errors import HeadsieveError
from headsieve.models.heads import head_space, prune_heads
from headsieve.pruning.lm import lm_comparisons, lm_curves, lm_importance
from headsieve.pruning.strategies import query_head_labels, select_heads

def decoder_space():
    return head_space(tiny_model("llama"))  # 3 layers x 4 query heads, 2 key-value heads


def causal_labels(labelled: dict) -> pd.DataFrame:
    """A role-test table of the tiny Llama: ``labelled[role]`` = [(layer, head, mean)] labelled heads."""
    rows = []
    for role in ("causal:induction", "causal:sink", "causal:prev"):
        marked = {(l, h): m for l, h, m in labelled.get(role, [])}
        for layer in range(3):
            for head in range(4):
                rows.append({"layer": layer, "head": head, "role": role, "label": (layer, head) in marked,
                             "mean": marked.get((layer, head), 0.1)})  # fmt: skip
    return pd.DataFrame(rows)


def test_role_strategies_read_causal_labels():
    space = decoder_space()
    labels = causal_labels({"causal:induction": [(1, 2, 0.9), (2, 0, 0.7)], "causal:sink": [(0, 1, 0.8)]})
    n = 2 / 12
    full = select_heads("prune_role:causal:induction", space, n, 0, labels=labels)
    assert full == [("decoder", 1, 2), ("decoder", 2, 0)]
    assert select_heads("prune_role:induction", space, n, 0, labels=labels) == full  # the short name
    spared = select_heads("spare_role:sink", space, 0.5, 3, labels=labels)
    assert len(spared) == 6 and ("decoder", 0, 1) not in spared
    assert len(select_heads("prune_role:prev", space, n, 5, labels=labels)) == 2  # none labelled: random heads
    with pytest.raises(HeadsieveError, match="role 'retrieval' is not in the role labels table"):
        select_heads("prune_role:retrieval", space, n, 0, labels=labels)


def test_group_labels_prune_whole_groups():
    """Labels per key-value group (roles.kv_groups) become labels of each of the group's query heads."""
    space = decoder_space()
    heads = causal_labels({"causal:induction": [(1, 2, 0.9), (1, 3, 0.9)]})
    groups = heads.assign(kv_group=heads["head"] // 2).groupby(["layer", "kv_group", "role"], as_index=False).agg(
        label=("label", "all"), mean=("mean", "mean"))  # fmt: skip
    expanded = query_head_labels(groups, space)
    assert len(expanded) == len(heads) and set(expanded.loc[expanded["label"], "head"]) == {2, 3}
    chosen = select_heads("prune_role:induction", space, 2 / 12, 0, labels=groups)
    assert chosen == [("decoder", 1, 2), ("decoder", 1, 3)]
    pruned = tiny_model("llama")
    prune_heads(pruned, chosen)
    assert pruned.model.layers[1].self_attn.k_proj.out_features == 8  # the group's keys went with it (head dim 8)


def test_importance_strategy_on_lm_importance():
    model = tiny_model("llama")
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, VOCAB, size=10) for _ in range(6)]
    importance = lm_importance(model, seqs, batch_size=3)
    assert set(importance) == {"decoder"} and importance["decoder"].shape == (3, 4)
    assert (importance["decoder"] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(importance["decoder"], axis=1), 1.0)
    flat = importance["decoder"].reshape(-1)
    chosen = select_heads("importance", head_space(model), 3 / 12, 0, importance=importance)
    assert sorted(l * 4 + h for _, l, h in chosen) == sorted(np.argsort(flat)[:3])
    pruned = copy.deepcopy(model)
    prune_heads(pruned, [("decoder", 0, 1)])
    raw = lm_importance(pruned, seqs, normalise=False)["decoder"]
    assert raw[0, 1] == 0 and (np.delete(raw.reshape(-1), 1) > 0).all()


def planted_evaluations(seeds: int = 6, effect: float = 1.0) -> pd.DataFrame:
    """copy_nll: prune_role:induction is ``effect`` above random at every fraction, top equals random up to
    noise; perplexity: no planted difference."""
    rng = np.random.default_rng(0)
    rows = []
    for metric in ("copy_nll", "perplexity"):
        for fraction in (0.0, 0.25, 0.5):
            for seed in range(seeds):
                base = 2.0 + fraction + rng.normal(0, 0.3)
                for strategy in ("random", "prune_role:induction", "top"):
                    shift = effect if (strategy == "prune_role:induction" and metric == "copy_nll" and fraction) else 0
                    rows.append({"strategy": strategy, "fraction": fraction, "seed": seed, "metric": metric,
                                 "value": base + shift + rng.normal(0, 0.05), "model": "tiny"})  # fmt: skip
    return pd.DataFrame(rows)


def test_comparisons_find_the_planted_difference():
    table = lm_comparisons(planted_evaluations(), keys=("model",))
    assert len(table) == 2 * 2 * 2  # metrics x fractions > 0 x strategies against random
    assert list(table.columns[:5]) == ["model", "metric", "fraction", "strategy", "against"]
    hit = table[(table["metric"] == "copy_nll") & (table["strategy"] == "prune_role:induction")]
    assert (hit["ci_low"] < 1.0).all() and (hit["ci_high"] > 1.0).all() and (hit["p_adj"] < 0.01).all()
    null = table.drop(hit.index)
    assert (null["p_adj"] > 0.05).all() and (null["ci_low"] < 0).all() and (null["ci_high"] > 0).all()
    assert (table["seeds"] == 6).all() and (table["against"] == "random").all() and (table["mdd"] > 0).all()
    np.testing.assert_allclose(table["p_adj"], multipletests(table["p"], method="holm")[1])  # one family


def test_comparisons_need_the_columns():
    with pytest.raises(HeadsieveError, match="lack column.s. value"):
        lm_comparisons(planted_evaluations().drop(columns="value"))


def test_curves_over_seeds():
    evaluations = planted_evaluations()
    curves = lm_curves(evaluations, keys=("model",))
    assert list(curves.columns[:4]) == ["model", "metric", "strategy", "fraction"]
    zero = curves[curves["fraction"] == 0]
    assert set(zero["strategy"]) == {"none"} and len(zero) == 2  # the unpruned model once per metric
    row = curves[(curves["metric"] == "copy_nll") & (curves["strategy"] == "top") & (curves["fraction"] == 0.5)].iloc[0]
    values = evaluations[(evaluations["metric"] == "copy_nll") & (evaluations["strategy"] == "top")
                         & (evaluations["fraction"] == 0.5)]["value"]  # fmt: skip
    assert row["seeds"] == 6 and row["mean"] == pytest.approx(values.mean()) and row["sd"] == pytest.approx(values.std())
    assert row["ci_low"] < row["mean"] < row["ci_high"]
