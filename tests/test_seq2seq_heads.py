"""Head gates and physical pruning of encoder-decoder models (Marian, BART, T5; mBART, Pegasus, mT5 lightly).

Tiny random-initialised models built from configs (d_model 32, 2 layers, 4 heads), seeded
(``seq2seq_models.py``, shared with ``test_translation.py``).
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from headsieve.errors import HeadsieveError
from headsieve.models import seq2seq_heads as S
from headsieve.models.surgery import count_parameters

from seq2seq_models import FAMILIES, PAD, VOCAB, tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def inputs(seed: int = 1, batch: int = 3, src: int = 9, tgt: int = 6):
    """Random source ids with one padded row, and decoder inputs."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, src), generator=g)
    mask = torch.ones_like(ids)
    ids[1, src - 3 :], mask[1, src - 3 :] = PAD, 0
    dec = torch.randint(4, VOCAB, (batch, tgt), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


def logits(model, batch, gates=None) -> torch.Tensor:
    with torch.no_grad():
        if gates is None:
            return model(**batch).logits
        with S.HeadGates(model, gates):
            return model(**batch).logits


def generate(model, batch, gates=None, scores: bool = False, **kwargs):
    """Generated ids (with ``scores``: ids and the step logits [steps, batch, vocab])."""
    options = dict(max_new_tokens=10, do_sample=False, num_beams=1, use_cache=True)
    options.update(kwargs, output_scores=scores, return_dict_in_generate=True)
    src = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        if gates is None:
            out = model.generate(**src, **options)
        else:
            with S.HeadGates(model, gates):
                out = model.generate(**src, **options)
    return (out.sequences, torch.stack(out.scores)) if scores else out.sequences


def assert_close(actual, expected, digits: float = 1e-5):
    """Equal up to float32 rounding, which grows with the magnitude: T5 logits reach ~100, where one
    unit in the last place is ~8e-6, so another summation order (sliced weights) moves them by ~1e-4."""
    finite = expected[torch.isfinite(expected)]  # -inf: tokens the logits processors rule out
    scale = max(1.0, finite.abs().max().item())
    assert torch.allclose(actual, expected, atol=digits * scale, rtol=0), (actual - expected).abs().max()


def assert_mask_equals_prune(model, heads, batch=None, beams: bool = False):
    """Gates off at ``heads`` == those heads pruned: logits within float32 rounding, greedy (and beam)
    ids equal, with and without the KV cache."""
    batch = batch or inputs()
    gates = S.make_gates(model, heads)
    masked = logits(model, batch, gates)
    assert not torch.allclose(masked, logits(model, batch), atol=1e-4)  # the mask does something
    masked_ids, masked_scores = generate(model, batch, gates, scores=True)
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, heads)
    assert_close(logits(pruned, batch), masked)
    ids, step_scores = generate(pruned, batch, scores=True)  # with the KV cache
    assert torch.equal(ids, masked_ids)
    assert_close(step_scores, masked_scores)
    # Without the KV cache: compared with the gated model run the same way, since HF's T5 itself
    # differs between cached and uncached decoding by ~1e-5 of the logit scale (unscaled attention).
    no_cache_ids, no_cache_scores = generate(pruned, batch, scores=True, use_cache=False)
    masked_no_cache_ids, masked_no_cache_scores = generate(model, batch, gates, scores=True, use_cache=False)
    assert torch.equal(no_cache_ids, masked_no_cache_ids)
    assert_close(no_cache_scores, masked_no_cache_scores)
    if beams:
        assert torch.equal(generate(pruned, batch, num_beams=3), generate(model, batch, gates, num_beams=3))
    return pruned


def whole(kind: str, layer: int, n: int = 4):
    return [(kind, layer, h) for h in range(n)]


# ------------------------------------------------------------------------------------------------- sites


@pytest.mark.parametrize("name", FAMILIES)
def test_sites_shapes_and_counts(name):
    model = tiny_model(name)
    sites = S.attention_sites(model)
    assert [s.site for s in sites] == [(k, l) for k in S.KINDS for l in range(2)]
    assert S.head_shapes(model) == {"encoder": (2, 4), "decoder": (2, 4), "cross": (2, 4)}
    assert S.head_counts(model) == {k: [4, 4] for k in S.KINDS}
    assert all(s.head_dim == 8 for s in sites)
    # the three kinds are distinct modules
    assert len({id(s.attention) for s in sites}) == 6


def test_different_encoder_and_decoder_shapes():
    model = tiny_model("marian", encoder_layers=3, decoder_layers=2, encoder_attention_heads=2)
    assert S.head_shapes(model) == {"encoder": (3, 2), "decoder": (2, 4), "cross": (2, 4)}
    gates = S.make_gates(model, [("encoder", 2, 1), ("cross", 1, 3)])
    assert gates["encoder"].shape == (3, 2) and gates["encoder"][2, 1] == 0 and gates["cross"][1, 3] == 0
    with pytest.raises(HeadsieveError, match="differ"):
        S.stack_gates(gates)
    assert_mask_equals_prune(model, [("encoder", 0, 0), ("encoder", 0, 1), ("decoder", 1, 2)])


def test_stack_gates_when_shapes_agree():
    model = tiny_model("bart")
    stacked = S.stack_gates(S.make_gates(model, [("cross", 1, 2)]))
    assert stacked.shape == (3, 2, 4) and stacked[2, 1, 2] == 0 and stacked.sum() == 23


def test_unsupported_model_type_is_one_line():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    with pytest.raises(HeadsieveError, match="cannot be head-masked or pruned as an encoder-decoder") as err:
        S.make_gates(bert)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- gates


@pytest.mark.parametrize("name", FAMILIES)
def test_gates_of_ones_equal_no_gates(name):
    model = tiny_model(name)
    batch = inputs()
    assert torch.equal(logits(model, batch, S.make_gates(model)), logits(model, batch))
    assert torch.equal(generate(model, batch, S.make_gates(model)), generate(model, batch))


@pytest.mark.parametrize("name", FAMILIES)
def test_masking_one_head_changes_only_what_flows_through_it(name):
    """Masking (kind, layer, head): that site's output-projection input loses exactly that head's slice;
    sites computed before it are untouched."""
    model = tiny_model(name)
    batch = inputs()
    sites = S.attention_sites(model)

    def contexts(gates):
        seen = {}
        with S.HeadGates(model, gates):
            handles = [s.output.register_forward_pre_hook(lambda m, a, key=s.site: seen.setdefault(key, a[0].clone()))
                       for s in sites]  # fmt: skip
            try:
                logits(model, batch)
            finally:
                for h in handles:
                    h.remove()
        return seen

    base = contexts(S.make_gates(model))
    for kind, layer, head in [("encoder", 1, 2), ("decoder", 0, 1), ("cross", 1, 3)]:
        after = contexts(S.make_gates(model, [(kind, layer, head)]))
        ctx, ref = after[(kind, layer)], base[(kind, layer)]
        cols = slice(head * 8, head * 8 + 8)
        assert torch.equal(ctx[..., cols], torch.zeros_like(ctx[..., cols]))
        keep = torch.ones(32, dtype=torch.bool)
        keep[cols] = False
        assert torch.equal(ctx[..., keep], ref[..., keep])
        upstream = {"encoder": [("encoder", l) for l in range(layer)],
                    "decoder": [("encoder", 0), ("encoder", 1)] + [(k, l) for l in range(layer) for k in ("decoder", "cross")],
                    "cross": [("encoder", 0), ("encoder", 1), ("decoder", layer)]
                    + [(k, l) for l in range(layer) for k in ("decoder", "cross")]}[kind]  # fmt: skip
        for key in upstream:
            assert torch.equal(after[key], base[key]), key
        assert not torch.equal(logits(model, batch, S.make_gates(model, [(kind, layer, head)])), logits(model, batch))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_with_respect_to_gates(name):
    model = tiny_model(name)
    batch = inputs()
    labels = batch.pop("decoder_input_ids")
    gates = {k: g.requires_grad_(True) for k, g in S.make_gates(model).items()}
    with S.HeadGates(model, gates):
        model(**batch, labels=labels).loss.backward()
    for kind in S.KINDS:
        assert gates[kind].grad is not None and gates[kind].grad.shape == (2, 4)
        assert (gates[kind].grad.abs() > 0).all(), kind


def test_gates_are_read_at_every_forward_pass():
    model = tiny_model("marian")
    batch = inputs()
    gates = S.make_gates(model)
    with S.HeadGates(model, gates):
        before = logits(model, batch)
        gates["cross"][0, 1] = 0.0  # in place
        changed = logits(model, batch)
    assert not torch.equal(before, changed)
    assert torch.allclose(changed, logits(model, batch, S.make_gates(model, [("cross", 0, 1)])), atol=1e-6)


def test_gate_errors_are_one_line():
    model = tiny_model("marian")
    with pytest.raises(HeadsieveError, match="keys encoder, decoder, cross"):
        S.HeadGates(model, torch.ones(2, 4))
    bad = S.make_gates(model)
    bad["cross"] = torch.ones(3, 4)
    with pytest.raises(HeadsieveError, match=r"cross head gates have shape \[3, 4\]"):
        S.HeadGates(model, bad)
    for heads, message in [([("self", 0, 0)], "kind 'self'"), ([("encoder", 2, 0)], "encoder layer index 2"),
                           ([("cross", 0, 4)], "head index 4"), ([("encoder", 0)], "triple")]:  # fmt: skip
        with pytest.raises(HeadsieveError, match=message) as err:
            S.prune_heads(model, heads)
        assert "\n" not in str(err.value)
    gates = S.HeadGates(model, S.make_gates(model)).attach()
    S.prune_heads(model, [("encoder", 0, 1)])
    with pytest.raises(HeadsieveError, match="pruned after the gates were applied"):
        logits(model, inputs())
    gates.remove()


# ----------------------------------------------------------------------------------------- mask == prune

CASES = {
    "encoder": [("encoder", 0, 1), ("encoder", 1, 0), ("encoder", 1, 3)],
    "decoder": [("decoder", 0, 2), ("decoder", 1, 0), ("decoder", 1, 1)],
    "cross": [("cross", 0, 0), ("cross", 1, 2), ("cross", 1, 3)],
    "whole_encoder_block": whole("encoder", 0),
    "whole_decoder_block": whole("decoder", 0),
    "whole_cross_block": whole("cross", 0) + [("cross", 1, 1)],
    "every_block_of_a_kind": whole("decoder", 0) + whole("decoder", 1),
    "mixed": whole("encoder", 1) + whole("decoder", 1) + whole("cross", 0) + [("encoder", 0, 2), ("decoder", 0, 3)],
}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_masking_equals_pruning(name, case):
    model = tiny_model(name)
    pruned = assert_mask_equals_prune(model, CASES[case], beams=case == "mixed")
    removed = S.normalise_heads(model, CASES[case])
    counts = S.head_counts(pruned)
    for (kind, layer), heads in removed.items():
        assert counts[kind][layer] == 4 - len(heads)
    assert count_parameters(pruned) < count_parameters(model)


@pytest.mark.parametrize("name", FAMILIES)
def test_everything_pruned(name):
    """No attention head left anywhere: still runs, generates, with and without the KV cache."""
    model = tiny_model(name)
    heads = [(k, l, h) for k in S.KINDS for l in range(2) for h in range(4)]
    pruned = assert_mask_equals_prune(model, heads)
    assert S.head_counts(pruned) == {k: [0, 0] for k in S.KINDS}


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_masking_equals_pruning_under_sdpa(name):
    model = tiny_model(name, attn="sdpa")
    assert_mask_equals_prune(model, CASES["mixed"])
    assert_mask_equals_prune(model, [("decoder", 0, 0), ("decoder", 0, 2), ("decoder", 1, 2), ("decoder", 1, 3)])


@pytest.mark.parametrize("name", ["mbart", "pegasus", "mt5"])
def test_other_supported_types(name):
    model = tiny_model(name)
    assert_mask_equals_prune(model, CASES["mixed"])


def test_gates_on_a_pruned_model():
    """Gates keep the original indexing on a pruned model; gating a remaining head == pruning it too."""
    model = tiny_model("bart")
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, [("cross", 1, 0), ("cross", 1, 1)])
    batch = inputs()
    on_pruned = logits(pruned, batch, S.make_gates(pruned, [("cross", 1, 3), ("encoder", 0, 0)]))
    full = logits(
        model, batch, S.make_gates(model, [("cross", 1, 0), ("cross", 1, 1), ("cross", 1, 3), ("encoder", 0, 0)])
    )
    assert_close(on_pruned, full)


# ------------------------------------------------------------------------------------- T5 position bias


def test_t5_bias_columns_follow_the_heads_left_in_any_layer():
    """Decoder layer 0 loses heads 0 and 2, layer 1 loses 2 and 3: the bias embedding (owned by layer 0)
    keeps columns 0, 1, 3, since layer 1 still needs head 0's bias; outputs equal masking."""
    model = tiny_model("t5")
    heads = [("decoder", 0, 0), ("decoder", 0, 2), ("decoder", 1, 2), ("decoder", 1, 3)]
    pruned = assert_mask_equals_prune(model, heads, beams=True)
    owner = pruned.decoder.block[0].layer[0].SelfAttention
    full = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert owner.relative_attention_bias.weight.shape == (8, 3)
    assert torch.equal(owner.relative_attention_bias.weight, full[:, [0, 1, 3]])
    assert owner.headsieve_bias_heads == [0, 1, 3]
    assert pruned.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (8, 4)


def test_t5_first_layer_without_heads_still_gives_the_bias():
    """Layer 0 of each stack loses every self-attention head; layer 1 keeps some and needs the bias."""
    model = tiny_model("t5")
    heads = whole("encoder", 0) + whole("decoder", 0) + [("encoder", 1, 1), ("decoder", 1, 0)]
    pruned = assert_mask_equals_prune(model, heads, beams=True)
    assert pruned.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (8, 3)
    assert pruned.decoder.block[0].layer[0].SelfAttention.headsieve_bias_heads == [1, 2, 3]


def test_t5_wrong_bias_would_be_caught():
    """Sanity check of the test itself: shifting the bias columns of layer 1 changes the outputs."""
    model = tiny_model("t5")
    batch = inputs()
    emb = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    with torch.no_grad():
        before = logits(model, batch)
        emb.copy_(emb[:, [1, 0, 2, 3]])
        assert not torch.allclose(logits(model, batch), before, atol=1e-4)


def test_t5_cumulative_pruning_slices_the_bias_again():
    model = tiny_model("t5")
    first = [("encoder", 0, 0), ("encoder", 1, 0)]
    second = [("encoder", 0, 3), ("encoder", 1, 3), ("encoder", 1, 1)]
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, first)
    S.prune_heads(pruned, second)
    assert pruned.encoder.block[0].layer[0].SelfAttention.headsieve_bias_heads == [1, 2]
    batch = inputs()
    assert_close(logits(pruned, batch), logits(model, batch, S.make_gates(model, first + second)))


# ------------------------------------------------------------------------------- cumulative, save, load


@pytest.mark.parametrize("name", FAMILIES)
def test_cumulative_pruning(name):
    model = tiny_model(name)
    a = [("encoder", 0, 1), ("cross", 1, 0), ("decoder", 0, 3)]
    b = [("encoder", 0, 1), ("encoder", 0, 2), ("cross", 1, 1), ("cross", 1, 2), ("cross", 1, 3)]
    step = copy.deepcopy(model)
    assert S.prune_heads(step, a) == {("encoder", 0): [1], ("decoder", 0): [3], ("cross", 1): [0]}
    assert S.prune_heads(step, b) == {("encoder", 0): [2], ("cross", 1): [1, 2, 3]}  # head (encoder, 0, 1) skipped
    assert S.prune_heads(step, a) == {}
    once = copy.deepcopy(model)
    S.prune_heads(once, a + b)
    batch = inputs()
    assert torch.allclose(logits(step, batch), logits(once, batch), atol=1e-6)
    assert S.pruned_heads(step) == S.pruned_heads(once) == {
        ("encoder", 0): [1, 2], ("decoder", 0): [3], ("cross", 1): [0, 1, 2, 3]}  # fmt: skip
    assert torch.equal(generate(step, batch), generate(model, batch, S.make_gates(model, a + b)))


@pytest.mark.parametrize("name", FAMILIES)
def test_save_and_load_round_trip(name, tmp_path):
    model = tiny_model(name)
    heads = whole("encoder", 0) + whole("cross", 1) + [("decoder", 0, 0), ("decoder", 1, 2), ("encoder", 1, 3)]
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, heads)
    S.save_pruned(pruned, str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    record = json.loads((tmp_path / "config.json").read_text())[S.PRUNED_KEY]
    assert record == {
        "encoder": {"0": [0, 1, 2, 3], "1": [3]},
        "decoder": {"0": [0], "1": [2]},
        "cross": {"1": [0, 1, 2, 3]},
    }
    loaded = S.load_pruned(str(tmp_path))
    assert type(loaded).__name__ == type(model).__name__
    assert S.head_counts(loaded) == S.head_counts(pruned)
    batch = inputs()
    assert torch.allclose(logits(loaded, batch), logits(pruned, batch), atol=1e-6)
    assert torch.equal(generate(loaded, batch), generate(model, batch, S.make_gates(model, heads)))
    # pruning the loaded model further keeps working
    S.prune_heads(loaded, [("decoder", 1, 0)])
    assert S.pruned_heads(loaded)[("decoder", 1)] == [0, 2]


def test_load_errors(tmp_path):
    with pytest.raises(HeadsieveError, match="no config.json"):
        S.load_pruned(str(tmp_path))
    model = tiny_model("marian")
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, [("cross", 0, 1)])
    setattr(pruned.config, S.PRUNED_KEY, {})  # record lost: the shapes no longer match
    with pytest.raises(HeadsieveError, match="do not match"):
        S.save_pruned(pruned, str(tmp_path / "x"))
