"""Decoder-only language models in the head space (headsieve.models.families.gpt2 / .llama through
headsieve.models.heads): the single kind ``decoder``, gates, GQA-aware physical pruning (query heads inside
key-value groups, whole groups), masking == pruning in logits and in cached greedy generation, save/load,
cumulative pruning, attention probabilities and gate importance.

Tiny random-initialised models from ``support.decoder``: GPT-2 (4 heads) and Llama, Qwen2, Mistral with 4
query heads sharing 2 key-value heads (query heads 0, 1 read key-value head 0; 2, 3 read 1); 3 layers.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

from headsieve.errors import HeadsieveError
from headsieve.models import heads as H
from headsieve.models.families import supported_types
from headsieve.models.families.llama import ExpandedHeads
from headsieve.models.headspace import HeadSpace
from headsieve.models.surgery import count_parameters
from headsieve.pruning.importance import gate_importance

from support.decoder import DECODERS, HEADS, HIDDEN, KV_HEADS, LAYERS, greedy, logits, tiny_batch, tiny_model

TOL = 1e-5
HEAD_DIM = HIDDEN // HEADS
GQA = tuple(t for t in DECODERS if t != "gpt2")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


#: head sets (layer, head): a whole key-value group (layer 0: 0, 1), a ragged group (layer 1: head 2 of 2, 3),
#: a whole layer (layer 2); one query head; one head from each group of every layer (groups stay even)
HEAD_SETS = {
    "group_ragged_layer": [(0, 0), (0, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)],
    "one_head": [(1, 3)],
    "one_per_group": [(layer, h) for layer in range(LAYERS) for h in (0, 3)],
    "ragged_everywhere": [(0, 1), (1, 0), (2, 3), (2, 2), (2, 1)],
}


def kv_width(module) -> int:
    return module.weight.shape[0]


# ------------------------------------------------------------------------------------------- head space


@pytest.mark.parametrize("model_type", DECODERS)
def test_head_space_is_one_decoder_kind_with_kv_heads(model_type):
    model = tiny_model(model_type)
    space = H.head_space(model)
    kv = HEADS if model_type == "gpt2" else KV_HEADS
    assert space == HeadSpace.from_shapes({"decoder": (LAYERS, HEADS)}, {"decoder": kv})
    assert space.single.kind == "decoder" and space.single.group_size == HEADS // kv
    assert space == H.config_space(model.config)
    assert H.head_counts(model) == {"decoder": [HEADS] * LAYERS}
    groups = {g: [h for h in range(HEADS) if h // (HEADS // kv) == g] for g in range(kv)}
    assert H.kv_head_map(model) == {("decoder", layer): groups for layer in range(LAYERS)}
    gates = H.make_gates(model, [(1, 2)])
    assert list(gates) == ["decoder"] and gates["decoder"].shape == (LAYERS, HEADS)
    assert gates["decoder"][1, 2] == 0 and gates["decoder"].sum() == LAYERS * HEADS - 1


def test_every_decoder_type_is_registered():
    assert set(DECODERS) <= set(supported_types())


def test_unsupported_type_is_a_one_line_error():
    config = transformers.GPTNeoConfig(
        vocab_size=50, hidden_size=8, num_layers=2, num_heads=2, attention_types=[[["global"], 2]],
        max_position_embeddings=16,
    )  # fmt: skip
    model = transformers.GPTNeoForCausalLM(config)
    for call in (H.head_space, H.make_gates, lambda m: H.prune_heads(m, [(0, 0)])):
        with pytest.raises(HeadsieveError, match="model type 'gpt_neo' cannot be head-masked or pruned") as err:
            call(model)
        assert "\n" not in str(err.value) and all(t in str(err.value) for t in DECODERS)


# ---------------------------------------------------------------------------------- masking == pruning


def assert_mask_equals_prune(model, heads):
    """Gates off at ``heads`` == those heads pruned: logits within TOL, and greedy generation with the KV
    cache (same ids, per-step logits within TOL).  Returns the pruned copy."""
    gates = H.make_gates(model, heads)
    masked = logits(model, gates=gates)
    assert not torch.allclose(masked, logits(model), atol=1e-3)  # the heads mattered
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
    assert (logits(pruned) - masked).abs().max() <= TOL
    ids, steps = greedy(pruned)
    masked_ids, masked_steps = greedy(model, gates=gates)
    assert torch.equal(ids, masked_ids)
    assert (steps - masked_steps).abs().max() <= TOL
    no_cache_ids, no_cache_steps = greedy(pruned, use_cache=False)
    assert torch.equal(no_cache_ids, ids)  # the pruned model's cache agrees with recomputation
    assert (no_cache_steps - steps).abs().max() <= TOL
    return pruned


@pytest.mark.parametrize("model_type", DECODERS)
@pytest.mark.parametrize("case", list(HEAD_SETS))
def test_masking_equals_pruning(model_type, case):
    model = tiny_model(model_type)
    heads = HEAD_SETS[case]
    pruned = assert_mask_equals_prune(model, heads)
    expected = H.normalise_heads(model, heads)
    assert H.pruned_heads(pruned) == expected
    assert H.head_counts(pruned) == {"decoder": [HEADS - len(expected.get(("decoder", l), [])) for l in range(LAYERS)]}


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_masking_equals_pruning_under_sdpa(model_type):
    model = tiny_model(model_type, attn="sdpa")
    assert_mask_equals_prune(model, HEAD_SETS["group_ragged_layer"])


# ------------------------------------------------------------------------------------ key-value groups


@pytest.mark.parametrize("model_type", GQA)
def test_group_goes_with_its_last_query_head(model_type):
    model = tiny_model(model_type)
    before = count_parameters(model)
    H.prune_heads(model, HEAD_SETS["group_ragged_layer"])
    sites = {site.layer: site for site in H.attention_sites(model)}
    # layer 0: group 0 gone whole: q/o lose two heads, k/v one key-value head; even groups, stock repeat
    assert sites[0].query.out_features == sites[0].output.in_features == 2 * HEAD_DIM
    assert kv_width(sites[0].key) == kv_width(sites[0].value) == 1 * HEAD_DIM
    assert sites[0].attention.num_key_value_groups == 2 and not isinstance(sites[0].key, ExpandedHeads)
    # layer 1: head 2 of group 1 gone, the group's k/v stay; groups of 2 and 1 query heads: expanded k/v
    assert sites[1].query.out_features == 3 * HEAD_DIM and kv_width(sites[1].key) == 2 * HEAD_DIM
    assert sites[1].attention.num_key_value_groups == 1
    assert sites[1].key.headsieve_expand == sites[1].value.headsieve_expand == [0, 0, 1]
    # layer 2: nothing left
    assert sites[2].query.out_features == kv_width(sites[2].key) == sites[2].output.in_features == 0
    assert H.kv_head_map(model) == {("decoder", 0): {1: [2, 3]}, ("decoder", 1): {0: [0, 1], 1: [3]},
                                    ("decoder", 2): {}}  # fmt: skip
    bias = int(sites[0].query.bias is not None)
    q_rows = 2 + 1 + 4  # query (and output) heads removed
    kv_rows = 1 + 0 + 2  # key-value heads removed
    removed = q_rows * HEAD_DIM * (2 * HIDDEN + bias) + kv_rows * 2 * HEAD_DIM * (HIDDEN + bias)
    assert before - count_parameters(model) == removed


def test_groups_become_even_again_after_more_pruning():
    model = tiny_model("llama")
    H.prune_heads(model, [(1, 2)])  # groups of 2 and 1: expanded
    key = H.attention_sites(model)[1].key
    assert key.headsieve_expand == [0, 0, 1]
    once = copy.deepcopy(model)
    H.prune_heads(model, [(1, 3)])  # group 1 gone whole: one group of 2
    site = H.attention_sites(model)[1]
    assert site.key.headsieve_expand is None and site.attention.num_key_value_groups == 2
    assert kv_width(site.key) == HEAD_DIM
    H.prune_heads(once, [(1, 0)])  # groups of 1 and 1: even again, no expansion
    site = H.attention_sites(once)[1]
    assert site.key.headsieve_expand is None and site.attention.num_key_value_groups == 1
    fresh = tiny_model("llama")
    for pruned, heads in ((model, [(1, 2), (1, 3)]), (once, [(1, 2), (1, 0)])):
        assert (logits(pruned) - logits(fresh, gates=H.make_gates(fresh, heads))).abs().max() <= TOL


def test_ragged_groups_need_the_expansion():
    """Without the per-query-head key-value index, ragged groups would read the wrong key-value head."""
    model = tiny_model("llama")
    heads = [(1, 1)]  # layer 1 left with query heads 0 | 2, 3: groups of 1 and 2
    H.prune_heads(model, heads)
    site = H.attention_sites(model)[1]
    assert site.key.headsieve_expand == [0, 1, 1]
    fresh = tiny_model("llama")
    masked = logits(fresh, gates=H.make_gates(fresh, heads))
    site.key.headsieve_expand = site.value.headsieve_expand = [0, 0, 1]  # a wrong grouping
    assert (logits(model) - masked).abs().max() > 1e-3


# ------------------------------------------------------------------------------------ cumulative, save/load


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_cumulative_pruning_equals_union(model_type):
    model = tiny_model(model_type)
    first, second = HEAD_SETS["one_per_group"], HEAD_SETS["group_ragged_layer"]
    step, once = copy.deepcopy(model), copy.deepcopy(model)
    H.prune_heads(step, first)
    again = H.prune_heads(step, second)
    assert all((l, h) not in first for (_, l), hs in again.items() for h in hs)
    assert H.prune_heads(step, first) == {}
    H.prune_heads(once, first + second)
    assert H.pruned_heads(step) == H.pruned_heads(once) == H.normalise_heads(model, first + second)
    a, b = step.state_dict(), once.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(logits(step), logits(once))
    assert (logits(step) - logits(model, gates=H.make_gates(model, first + second))).abs().max() <= TOL


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_save_and_load_round_trip(model_type, tmp_path):
    model = tiny_model(model_type)
    heads = HEAD_SETS["group_ragged_layer"]
    H.prune_heads(model, heads)
    H.save_pruned(model, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["headsieve_pruned_heads"] == {"0": [0, 1], "1": [2], "2": [0, 1, 2, 3]}  # the one-kind record
    assert not [f for f in tmp_path.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl")]
    loaded = H.load_pruned(str(tmp_path))
    assert type(loaded) is type(model)
    assert H.pruned_heads(loaded) == H.pruned_heads(model) and H.head_counts(loaded) == H.head_counts(model)
    assert H.kv_head_map(loaded) == H.kv_head_map(model)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(logits(loaded), logits(model))
    assert torch.equal(greedy(loaded)[0], greedy(model)[0])
    H.prune_heads(loaded, [(0, 3)])  # pruning goes on from the loaded record
    assert H.pruned_heads(loaded)[("decoder", 0)] == [0, 1, 3]


def stock_logits(folder) -> torch.Tensor:
    stock = transformers.AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    return logits(stock)


@pytest.mark.parametrize("model_type", GQA)
@pytest.mark.parametrize("kept", [(2, 3), (1, 3)])  # group 0 gone in every layer; one head of each group left
def test_even_pruning_saves_for_stock_transformers(model_type, kept, tmp_path):
    model = tiny_model(model_type)
    H.prune_heads(model, [(layer, h) for layer in range(LAYERS) for h in range(HEADS) if h not in kept])
    assert H.stock_shape(model) == (2, 1 if kept == (2, 3) else 2)
    H.save_pruned(model, str(tmp_path / "pruned"))  # the unpruned shape and the record: stock transformers refuses
    with pytest.raises(RuntimeError, match="mismatched_sizes"):
        stock_logits(tmp_path / "pruned")
    H.save_stock(model, str(tmp_path / "stock"))
    saved = json.loads((tmp_path / "stock" / "config.json").read_text())
    assert saved["num_attention_heads"] == 2 and saved["head_dim"] == HEAD_DIM
    assert "headsieve_pruned_heads" not in saved
    assert "headsieve_pruned_heads" in model.config.to_dict() and model.config.num_attention_heads == HEADS
    assert (stock_logits(tmp_path / "stock") - logits(model)).abs().max() <= TOL
    stock = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "stock"), attn_implementation="eager")
    assert torch.equal(greedy(stock.eval())[0], greedy(model)[0])


@pytest.mark.parametrize("model_type,heads,message", [
    ("llama", [(1, 2)], "uneven sizes"),
    ("llama", [(0, 0), (0, 1)], "different numbers"),
    ("llama", [(0, h) for h in range(HEADS)], "no heads left"),
    ("gpt2", [(0, 0)], "no stock config"),
])  # fmt: skip
def test_stock_export_refuses_shapes_a_config_cannot_state(model_type, heads, message, tmp_path):
    model = tiny_model(model_type)
    H.prune_heads(model, heads)
    with pytest.raises(HeadsieveError, match=message) as err:
        H.save_stock(model, str(tmp_path))
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ attention and importance


@pytest.mark.parametrize("model_type", ["gpt2", "qwen2"])
def test_attention_probabilities_need_eager_attention(model_type):
    model = tiny_model(model_type)
    H.prune_heads(model, [(0, 0), (1, 1), (1, 2)])
    attentions = H.self_attention_probabilities(model, tiny_batch())
    assert [a.shape[1] for a in attentions] == [3, 2, 4]
    for a in attentions:
        assert torch.allclose(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5)
        assert (a.triu(diagonal=1) == 0).all()  # causal: no weight on later keys
    sdpa = tiny_model(model_type, attn="sdpa")
    with pytest.raises(HeadsieveError, match="returns no attention probabilities .*eager") as err:
        H.self_attention_probabilities(sdpa, tiny_batch())
    assert "\n" not in str(err.value)


def lm_batches(n: int = 2):
    for seed in range(n):
        batch = tiny_batch(seed=seed)
        yield {**batch, "labels": batch["input_ids"]}


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_gate_importance_of_the_language_model_loss(model_type):
    model = tiny_model(model_type)
    raw = gate_importance(model, lm_batches(), normalise=False)
    assert list(raw) == ["decoder"] and raw["decoder"].shape == (LAYERS, HEADS)
    assert (raw["decoder"] > 0).all()
    # the first batch's gradient against a central finite difference of the loss in one gate
    batch = next(lm_batches(1))
    one = gate_importance(model, [batch], normalise=False)["decoder"]
    eps, (layer, head) = 1e-2, (1, 2)
    loss = {}
    for sign in (1, -1):
        gates = H.make_gates(model)
        gates["decoder"][layer, head] += sign * eps
        with torch.no_grad(), H.apply_head_gates(model, gates):
            loss[sign] = model(**batch).loss.item()
    assert abs(abs(loss[1] - loss[-1]) / (2 * eps) - one[layer, head]) < 1e-2 * max(1.0, one[layer, head])
    H.prune_heads(model, [(0, 0), (0, 1)])
    pruned = gate_importance(model, lm_batches(), normalise=False)["decoder"]
    assert (pruned[0, :2] == 0).all() and (pruned[0, 2:] > 0).all()


def test_padded_batch_mask_equals_prune():
    """Left padding (as batched generation uses): masked and pruned agree on every position."""
    model = tiny_model("llama")
    batch = tiny_batch(seed=3)
    batch["attention_mask"][1, :4] = 0
    heads = HEAD_SETS["ragged_everywhere"]
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
    masked = logits(model, batch, H.make_gates(model, heads))
    assert (logits(pruned, batch) - masked).abs().max() <= TOL
    assert not torch.allclose(logits(pruned, batch), logits(model, batch), atol=1e-3)


@pytest.mark.parametrize("strategy", ["random", "top", "band:top", "keep_one:1", "importance"])
def test_strategies_of_the_one_registry_prune_decoder_heads(strategy):
    from headsieve.pruning.strategies import select_heads

    model = tiny_model("qwen2")
    importance = gate_importance(model, lm_batches(1))
    heads = select_heads(strategy, H.head_space(model), 0.5, seed=0, importance=importance)
    assert heads and all(kind == "decoder" for kind, _, _ in heads)
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
    assert sum(H.head_counts(pruned)["decoder"]) == LAYERS * HEADS - len(heads)
    assert (logits(pruned) - logits(model, gates=H.make_gates(model, heads))).abs().max() <= TOL
