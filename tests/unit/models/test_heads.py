"""Head gates, physical head pruning and save/load over the head space, for every model family
(headsieve.models.heads, headsieve.models.families).

Tiny random-initialised models built from configs: BERT-family encoders and DistilBERT here (3 layers, 4 heads,
hidden 32), encoder-decoders (Marian, BART, T5; mBART, Pegasus, mT5 lightly) from ``seq2seq_models.py``
(d_model 32, 2 layers, 4 heads; shared with ``test_translation.py``).  The first section runs every check
on every family description; the others test what is particular to encoders, encoder-decoders and T5.
"""

from __future__ import annotations

import copy
import json
import os
import random

import pytest
import torch
import transformers

from headsieve.errors import HeadsieveError
from headsieve.models import heads as H
from headsieve.models.families import FAMILIES, family_of, supported_types
from headsieve.models.headspace import KINDS, HeadSpace
from headsieve.models.surgery import check_widths, count_parameters, query_width

from support.decoder import DECODERS
from support.decoder import logits as decoder_logits
from support.decoder import tiny_model as tiny_decoder
from support.seq2seq import FAMILIES as SEQ2SEQ
from support.seq2seq import PAD, VOCAB
from support.seq2seq import tiny_model as tiny_seq2seq


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


N_LAYERS, N_HEADS, HIDDEN = 3, 4, 32
TOL = 1e-5
#: larger than the default 0.02, so that single heads visibly change tiny models' logits
INIT_RANGE = 0.2

# ------------------------------------------------------------------------------------------ tiny models


def _bert_like_kwargs() -> dict:
    return dict(
        vocab_size=100,
        hidden_size=HIDDEN,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        intermediate_size=37,
        max_position_embeddings=64,
        initializer_range=INIT_RANGE,
    )


def tiny_config(arch: str, num_labels: int = 3):
    """A tiny config for one architecture."""
    if arch == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=100, dim=HIDDEN, n_heads=N_HEADS, n_layers=N_LAYERS, hidden_dim=37,
            max_position_embeddings=64, initializer_range=INIT_RANGE, num_labels=num_labels,
        )
    if arch == "electra":  # embedding size differs from hidden size (ELECTRA projects embeddings)
        return transformers.ElectraConfig(embedding_size=16, num_labels=num_labels, **_bert_like_kwargs())
    configs = {
        "bert": transformers.BertConfig,
        "roberta": transformers.RobertaConfig,
        "xlm-roberta": transformers.XLMRobertaConfig,
        "camembert": transformers.CamembertConfig,
    }
    return configs[arch](num_labels=num_labels, **_bert_like_kwargs())


_CLASS_PREFIX = {
    "bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert",
    "electra": "Electra", "distilbert": "DistilBert",
}
ARCHS = list(_CLASS_PREFIX)


def tiny_model(arch: str, head: str = "cls", attn: str = "eager", seed: int = 0):
    """A seeded tiny model in eval mode, random biases: ``head`` is "cls" (sequence classifier) or "base"."""
    suffix = "ForSequenceClassification" if head == "cls" else "Model"
    cls = getattr(transformers, _CLASS_PREFIX[arch] + suffix)
    torch.manual_seed(seed)
    model = cls._from_config(tiny_config(arch), attn_implementation=attn)
    with torch.no_grad():  # transformers initialises biases to zero; random ones make bias slicing testable
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, INIT_RANGE)
    return model.eval()


def tiny_batch(seed: int = 1):
    """Two sequences of 7 tokens, the second padded after 5 (ids avoid the special ids 0-2)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def outputs(model, batch) -> torch.Tensor:
    """Logits for a classifier, last hidden states for a base model."""
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def gated_outputs(model, gates, batch) -> torch.Tensor:
    with H.apply_head_gates(model, gates):
        return outputs(model, batch)


def head_sets(seed: int) -> list[dict[int, list[int]]]:
    """Random head sets plus the edge cases: a whole layer, all but one head of a layer, one head."""
    rng = random.Random(seed)
    sets = [
        {1: list(range(N_HEADS))},
        {0: [0, 1, 3], 2: [2]},
        {2: [1]},
    ]
    for _ in range(2):
        chosen = {layer: [h for h in range(N_HEADS) if rng.random() < 0.4] for layer in range(N_LAYERS)}
        sets.append({layer: hs for layer, hs in chosen.items() if hs} or {0: [0]})
    return sets


def capture_projection_inputs(model):
    """Forward pre-hooks recording each layer's output-projection input; returns (store, handles)."""
    store: dict[int, torch.Tensor] = {}
    handles = []
    for site in H.attention_sites(model):
        def hook(module, args, layer=site.layer):
            store[layer] = args[0].detach().clone()
        handles.append(site.output.register_forward_pre_hook(hook))
    return store, handles


# ------------------------------------------------------------------------------------------ discovery


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["base", "cls"])
def test_attention_sites_found(arch, head):
    model = tiny_model(arch, head)
    sites = H.attention_sites(model)
    assert [s.layer for s in sites] == list(range(N_LAYERS))
    for site in sites:
        assert site.head_dim == HIDDEN // N_HEADS
        assert site.query.out_features == site.output.in_features == HIDDEN
        assert site.output in list(model.modules())
    assert H.head_counts(model) == {"encoder": [N_HEADS] * N_LAYERS}
    assert H.head_space(model) == HeadSpace.encoder(N_LAYERS, N_HEADS)


def test_bad_heads_and_gates_are_user_errors():
    model = tiny_model("bert")
    with pytest.raises(HeadsieveError, match="head index 4"):
        H.prune_heads(model, {0: [4]})
    with pytest.raises(HeadsieveError, match="layer index 3"):
        H.prune_heads(model, [(3, 0)])
    with pytest.raises(HeadsieveError, match="shape"):
        H.apply_head_gates(model, {"encoder": torch.ones(N_LAYERS, N_HEADS + 1)})
    with pytest.raises(HeadsieveError, match="keys encoder"):
        H.apply_head_gates(model, torch.ones(N_LAYERS, N_HEADS))
    assert H.head_counts(model) == {"encoder": [N_HEADS] * N_LAYERS}  # nothing pruned by the failed calls


# ---------------------------------------------------------------------------------- masking == pruning


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["base", "cls"])
def test_masked_equals_pruned(arch, head):
    base = tiny_model(arch, head)
    batch = tiny_batch()
    full = outputs(base, batch)
    for heads in head_sets(seed=len(arch)):
        masked = gated_outputs(base, H.make_gates(base, heads), batch)
        pruned_model = copy.deepcopy(base)
        H.prune_heads(pruned_model, heads)
        pruned = outputs(pruned_model, batch)
        assert torch.allclose(masked, pruned, atol=TOL), (arch, heads, (masked - pruned).abs().max())
        assert not torch.allclose(full, pruned, atol=1e-4), (arch, heads)  # the heads mattered
        expected = [N_HEADS - len(heads.get(layer, [])) for layer in range(N_LAYERS)]
        assert H.head_counts(pruned_model) == {"encoder": expected}
        assert H.pruned_heads(pruned_model) == {("encoder", layer): hs for layer, hs in heads.items()}


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_masked_equals_pruned_under_sdpa(arch):
    eager, sdpa = tiny_model(arch, attn="eager"), tiny_model(arch, attn="sdpa")
    batch = tiny_batch()
    heads = {0: [1, 2, 3], 1: list(range(N_HEADS)), 2: [0]}
    masked = gated_outputs(sdpa, H.make_gates(sdpa, heads), batch)
    H.prune_heads(sdpa, heads)
    H.prune_heads(eager, heads)
    assert torch.allclose(masked, outputs(sdpa, batch), atol=TOL)
    assert torch.allclose(outputs(eager, batch), outputs(sdpa, batch), atol=TOL)


def test_real_valued_gates_scale_head_slices():
    model = tiny_model("bert")
    batch = tiny_batch()
    gates = torch.rand(N_LAYERS, N_HEADS, generator=torch.Generator().manual_seed(3)) + 0.5
    with H.apply_head_gates(model, {"encoder": gates}):
        store, handles = capture_projection_inputs(model)
        outputs(model, batch)
    for h in handles:
        h.remove()
    plain, handles = capture_projection_inputs(model)
    outputs(model, batch)
    for h in handles:
        h.remove()
    d = HIDDEN // N_HEADS
    for h in range(N_HEADS):  # layer 0 sees the same input, so each slice is just scaled
        assert torch.allclose(store[0][..., h * d:(h + 1) * d], gates[0, h] * plain[0][..., h * d:(h + 1) * d], atol=1e-6)


# -------------------------------------------------------------------------------------- gate semantics


@pytest.mark.parametrize("arch", ["bert", "distilbert", "electra"])
def test_masking_one_head_zeroes_only_its_slice(arch):
    model = tiny_model(arch)
    batch = tiny_batch()
    layer, head, d = 1, 2, HIDDEN // N_HEADS
    plain, handles = capture_projection_inputs(model)
    outputs(model, batch)
    for h in handles:
        h.remove()
    with H.apply_head_gates(model, H.make_gates(model, {layer: [head]})):
        masked, handles = capture_projection_inputs(model)  # registered after the gate hook: sees gated input
        outputs(model, batch)
    for h in handles:
        h.remove()
    assert torch.equal(masked[0], plain[0])  # layers before the masked one are untouched
    sl = slice(head * d, (head + 1) * d)
    assert torch.count_nonzero(plain[layer][..., sl]) > 0
    assert torch.count_nonzero(masked[layer][..., sl]) == 0
    others = [h for h in range(N_HEADS) if h != head]
    for h in others:
        assert torch.equal(masked[layer][..., h * d:(h + 1) * d], plain[layer][..., h * d:(h + 1) * d])
    assert not torch.allclose(masked[layer + 1], plain[layer + 1])  # later layers feel the change


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_all_ones_gates_equal_no_gates_exactly(arch):
    model = tiny_model(arch)
    batch = tiny_batch()
    assert torch.equal(gated_outputs(model, H.make_gates(model), batch), outputs(model, batch))


def test_gates_removed_restore_model():
    model = tiny_model("bert")
    batch = tiny_batch()
    before = outputs(model, batch)
    handle = H.apply_head_gates(model, H.make_gates(model, {0: [0, 1]}))
    assert not torch.allclose(outputs(model, batch), before)
    handle.remove()
    assert torch.equal(outputs(model, batch), before)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "xlm-roberta"])
def test_gate_gradients_exist_and_are_nonzero(arch):
    model = tiny_model(arch)
    batch = tiny_batch()
    gates = H.make_gates(model, requires_grad=True)
    with H.apply_head_gates(model, gates):
        out = model(**batch, labels=torch.tensor([0, 2]))
    out.loss.backward()
    gates = gates["encoder"]
    assert gates.grad is not None and gates.grad.shape == (N_LAYERS, N_HEADS)
    assert torch.isfinite(gates.grad).all()
    assert (gates.grad.abs() > 0).all(), gates.grad


def test_gates_on_pruned_model_use_original_indices():
    model = tiny_model("bert")
    batch = tiny_batch()
    H.prune_heads(model, {0: [0, 2], 1: list(range(N_HEADS))})
    # gate head 3 of layer 0 (original index; now at position 1) == pruning it as well
    masked = gated_outputs(model, H.make_gates(model, {0: [3]}), batch)
    both = copy.deepcopy(model)
    H.prune_heads(both, {0: [3]})
    assert torch.allclose(masked, outputs(both, batch), atol=TOL)
    gates = H.make_gates(model, requires_grad=True)
    with H.apply_head_gates(model, gates):
        out = model(**batch, labels=torch.tensor([1, 0]))
    out.loss.backward()
    gates = gates["encoder"]
    assert gates.grad[0, 0] == 0 and gates.grad[0, 2] == 0 and (gates.grad[1] == 0).all()
    assert gates.grad[0, 1] != 0 and gates.grad[0, 3] != 0 and (gates.grad[2] != 0).all()


# ------------------------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("arch", ARCHS)
def test_pruning_a_whole_layer(arch):
    model = tiny_model(arch)
    batch = tiny_batch()
    masked = gated_outputs(model, H.make_gates(model, {1: list(range(N_HEADS))}), batch)
    H.prune_heads(model, {1: list(range(N_HEADS))})
    site = H.attention_sites(model)[1]
    assert site.query.weight.shape == (0, HIDDEN) and site.output.weight.shape == (HIDDEN, 0)
    assert H.head_counts(model) == {"encoder": [N_HEADS, 0, N_HEADS]}
    assert torch.allclose(masked, outputs(model, batch), atol=TOL)
    seen = []
    handle = site.output.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    handle.remove()
    assert site.output.bias.abs().sum() > 0
    assert torch.allclose(seen[0], site.output.bias.expand_as(seen[0]))  # attention block output = its bias
    attentions = out.attentions
    assert len(attentions) == N_LAYERS
    assert attentions[1].shape == (2, 0, 7, 7) and attentions[0].shape == (2, N_HEADS, 7, 7)


def test_head_count_attributes_updated():
    bert, distil = tiny_model("bert"), tiny_model("distilbert")
    H.prune_heads(bert, {0: [1], 2: [0, 1, 2, 3]})
    H.prune_heads(distil, {0: [1, 3]})
    a0, a2 = bert.bert.encoder.layer[0].attention.self, bert.bert.encoder.layer[2].attention.self
    assert (a0.num_attention_heads, a0.all_head_size) == (3, 24)
    assert (a2.num_attention_heads, a2.all_head_size) == (0, 0)
    assert isinstance(a2, transformers.models.bert.modeling_bert.BertSelfAttention)
    assert distil.distilbert.transformer.layer[0].attention.n_heads == 2
    assert bert.config.num_attention_heads == N_HEADS  # the config keeps the original shape


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_cumulative_pruning_equals_union(arch):
    batch = tiny_batch()
    steps = [{0: [1], 2: [0, 3]}, {0: [1, 2], 1: [3], 2: [1, 2]}, {1: [0, 1, 2]}]  # overlaps; ends layers 1, 2
    stepwise, at_once = tiny_model(arch), tiny_model(arch)
    union: dict[int, set[int]] = {}
    for step in steps:
        H.prune_heads(stepwise, step)
        for layer, hs in step.items():
            union.setdefault(layer, set()).update(hs)
    removed = H.prune_heads(at_once, {layer: sorted(hs) for layer, hs in union.items()})
    assert removed == {("encoder", 0): [1, 2], ("encoder", 1): [0, 1, 2, 3], ("encoder", 2): [0, 1, 2, 3]}
    assert H.pruned_heads(stepwise) == H.pruned_heads(at_once) == removed
    assert H.remaining_heads(stepwise) == {("encoder", 0): [0, 3], ("encoder", 1): [], ("encoder", 2): []}
    a, b = stepwise.state_dict(), at_once.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(outputs(stepwise, batch), outputs(at_once, batch))
    assert H.prune_heads(stepwise, {0: [1]}) == {}  # pruning a pruned head again is a no-op


def test_pruning_reduces_parameter_count():
    model = tiny_model("bert")
    before = count_parameters(model)
    H.prune_heads(model, {0: [0, 1]})
    d = HIDDEN // N_HEADS
    # two heads: q, k, v rows (weights + biases) and output-projection columns
    assert before - count_parameters(model) == 2 * (3 * (HIDDEN * d + d) + HIDDEN * d)
    for p in model.bert.encoder.layer[1].parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) < count_parameters(model)


# -------------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("arch,head", [("bert", "cls"), ("distilbert", "cls"), ("electra", "base"), ("roberta", "cls")])
def test_encoder_save_and_load_round_trip(tmp_path, arch, head):
    model = tiny_model(arch, head)
    batch = tiny_batch()
    H.prune_heads(model, {0: [0, 2], 1: list(range(N_HEADS))})
    H.prune_heads(model, [(2, 1)])
    folder = str(tmp_path / "pruned")
    H.save_pruned(model, folder)
    files = sorted(os.listdir(folder))
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert any(f.endswith(".safetensors") for f in files)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["headsieve_pruned_heads"] == {"0": [0, 2], "1": [0, 1, 2, 3], "2": [1]}  # the record of old
    assert "headsieve_pruned_seq2seq_heads" not in saved
    loaded = H.load_pruned(folder)  # class from config.architectures
    assert type(loaded) is type(model)
    assert H.head_counts(loaded) == {"encoder": [2, 0, 3]}
    assert H.pruned_heads(loaded) == H.pruned_heads(model)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(outputs(model, batch), outputs(loaded, batch))
    # loading then pruning more keeps working with original indices
    H.prune_heads(loaded, {2: [0]})
    assert H.remaining_heads(loaded)[("encoder", 2)] == [2, 3]


def test_load_with_explicit_class_and_unpruned_model(tmp_path):
    model = tiny_model("bert", "base")
    folder = str(tmp_path / "plain")
    H.save_pruned(model, folder)
    loaded = H.load_pruned(folder, transformers.AutoModel)
    assert H.head_counts(loaded) == {"encoder": [N_HEADS] * N_LAYERS}
    assert torch.equal(outputs(model, tiny_batch()), outputs(loaded, tiny_batch()))


def test_load_pruned_missing_folder_is_user_error(tmp_path):
    with pytest.raises(HeadsieveError, match="config.json"):
        H.load_pruned(str(tmp_path / "nothing"))


def test_inconsistent_record_is_detected():
    model = tiny_model("bert")
    model.config.headsieve_pruned_heads = {"0": [1]}  # a record without the pruning
    with pytest.raises(HeadsieveError, match="do not match"):
        H.prune_heads(model, {1: [0]})


# ------------------------------------------------------------------------------------------ fine-tune


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_pruned_classifier_fine_tunes(arch):
    model = tiny_model(arch)
    H.prune_heads(model, {0: [0, 3], 1: list(range(N_HEADS))})
    model.train()
    batch = dict(tiny_batch(), labels=torch.tensor([0, 2]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.no_grad():
        model.eval()
        loss0 = model(**batch).loss
        model.train()
    model(**batch).loss.backward()
    q = H.attention_sites(model)[0].query.weight
    assert q.grad is not None and q.grad.shape == (HIDDEN // 2, HIDDEN) and q.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        loss_after = model(**batch).loss
    assert abs(loss_after.item() - loss0.item()) > 1e-6
    assert torch.isfinite(loss_after)


# ============================================================================== encoder-decoders


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
        with H.HeadGates(model, gates):
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
            with H.HeadGates(model, gates):
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
    gates = H.make_gates(model, heads)
    masked = logits(model, batch, gates)
    assert not torch.allclose(masked, logits(model, batch), atol=1e-4)  # the mask does something
    masked_ids, masked_scores = generate(model, batch, gates, scores=True)
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
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


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_sites_shapes_and_counts(name):
    model = tiny_seq2seq(name)
    sites = H.attention_sites(model)
    assert [s.site for s in sites] == [(k, l) for k in KINDS for l in range(2)]
    assert H.head_space(model).shapes == {"encoder": (2, 4), "decoder": (2, 4), "cross": (2, 4)}
    assert H.head_counts(model) == {k: [4, 4] for k in KINDS}
    assert all(s.head_dim == 8 for s in sites)
    # the three kinds are distinct modules
    assert len({id(s.attention) for s in sites}) == 6


def test_different_encoder_and_decoder_shapes():
    model = tiny_seq2seq("marian", encoder_layers=3, decoder_layers=2, encoder_attention_heads=2)
    assert H.head_space(model).shapes == {"encoder": (3, 2), "decoder": (2, 4), "cross": (2, 4)}
    gates = H.make_gates(model, [("encoder", 2, 1), ("cross", 1, 3)])
    assert gates["encoder"].shape == (3, 2) and gates["encoder"][2, 1] == 0 and gates["cross"][1, 3] == 0
    assert_mask_equals_prune(model, [("encoder", 0, 0), ("encoder", 0, 1), ("decoder", 1, 2)])


# ------------------------------------------------------------------------------------------------- gates


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_gates_of_ones_equal_no_gates(name):
    model = tiny_seq2seq(name)
    batch = inputs()
    assert torch.equal(logits(model, batch, H.make_gates(model)), logits(model, batch))
    assert torch.equal(generate(model, batch, H.make_gates(model)), generate(model, batch))


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_masking_one_head_changes_only_what_flows_through_it(name):
    """Masking (kind, layer, head): that site's output-projection input loses exactly that head's slice;
    sites computed before it are untouched."""
    model = tiny_seq2seq(name)
    batch = inputs()
    sites = H.attention_sites(model)

    def contexts(gates):
        seen = {}
        with H.HeadGates(model, gates):
            handles = [s.output.register_forward_pre_hook(lambda m, a, key=s.site: seen.setdefault(key, a[0].clone()))
                       for s in sites]  # fmt: skip
            try:
                logits(model, batch)
            finally:
                for h in handles:
                    h.remove()
        return seen

    base = contexts(H.make_gates(model))
    for kind, layer, head in [("encoder", 1, 2), ("decoder", 0, 1), ("cross", 1, 3)]:
        after = contexts(H.make_gates(model, [(kind, layer, head)]))
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
        assert not torch.equal(logits(model, batch, H.make_gates(model, [(kind, layer, head)])), logits(model, batch))


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_gradients_with_respect_to_gates(name):
    model = tiny_seq2seq(name)
    batch = inputs()
    labels = batch.pop("decoder_input_ids")
    gates = {k: g.requires_grad_(True) for k, g in H.make_gates(model).items()}
    with H.HeadGates(model, gates):
        model(**batch, labels=labels).loss.backward()
    for kind in KINDS:
        assert gates[kind].grad is not None and gates[kind].grad.shape == (2, 4)
        assert (gates[kind].grad.abs() > 0).all(), kind


def test_gates_are_read_at_every_forward_pass():
    model = tiny_seq2seq("marian")
    batch = inputs()
    gates = H.make_gates(model)
    with H.HeadGates(model, gates):
        before = logits(model, batch)
        gates["cross"][0, 1] = 0.0  # in place
        changed = logits(model, batch)
    assert not torch.equal(before, changed)
    assert torch.allclose(changed, logits(model, batch, H.make_gates(model, [("cross", 0, 1)])), atol=1e-6)


def test_gate_errors_are_one_line():
    model = tiny_seq2seq("marian")
    with pytest.raises(HeadsieveError, match="keys encoder, decoder, cross"):
        H.HeadGates(model, torch.ones(2, 4))
    bad = H.make_gates(model)
    bad["cross"] = torch.ones(3, 4)
    with pytest.raises(HeadsieveError, match=r"cross head gates have shape \[3, 4\]"):
        H.HeadGates(model, bad)
    for heads, message in [([("self", 0, 0)], "no 'self' attention"), ([("encoder", 2, 0)], "encoder layer index 2"),
                           ([("cross", 0, 4)], "head index 4"), ([("encoder", 0)], "triple")]:  # fmt: skip
        with pytest.raises(HeadsieveError, match=message) as err:
            H.prune_heads(model, heads)
        assert "\n" not in str(err.value)
    gates = H.HeadGates(model, H.make_gates(model)).attach()
    H.prune_heads(model, [("encoder", 0, 1)])
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


@pytest.mark.parametrize("name", SEQ2SEQ)
@pytest.mark.parametrize("case", list(CASES))
def test_seq2seq_masking_equals_pruning(name, case):
    model = tiny_seq2seq(name)
    pruned = assert_mask_equals_prune(model, CASES[case], beams=case == "mixed")
    removed = H.normalise_heads(model, CASES[case])
    counts = H.head_counts(pruned)
    for (kind, layer), heads in removed.items():
        assert counts[kind][layer] == 4 - len(heads)
    assert count_parameters(pruned) < count_parameters(model)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_everything_pruned(name):
    """No attention head left anywhere: still runs, generates, with and without the KV cache."""
    model = tiny_seq2seq(name)
    heads = [(k, l, h) for k in KINDS for l in range(2) for h in range(4)]
    pruned = assert_mask_equals_prune(model, heads)
    assert H.head_counts(pruned) == {k: [0, 0] for k in KINDS}


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_masking_equals_pruning_under_sdpa(name):
    model = tiny_seq2seq(name, attn="sdpa")
    assert_mask_equals_prune(model, CASES["mixed"])
    assert_mask_equals_prune(model, [("decoder", 0, 0), ("decoder", 0, 2), ("decoder", 1, 2), ("decoder", 1, 3)])


@pytest.mark.parametrize("name", ["mbart", "pegasus", "mt5"])
def test_other_supported_types(name):
    model = tiny_seq2seq(name)
    assert_mask_equals_prune(model, CASES["mixed"])


def test_gates_on_a_pruned_model():
    """Gates keep the original indexing on a pruned model; gating a remaining head == pruning it too."""
    model = tiny_seq2seq("bart")
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, [("cross", 1, 0), ("cross", 1, 1)])
    batch = inputs()
    on_pruned = logits(pruned, batch, H.make_gates(pruned, [("cross", 1, 3), ("encoder", 0, 0)]))
    full = logits(
        model, batch, H.make_gates(model, [("cross", 1, 0), ("cross", 1, 1), ("cross", 1, 3), ("encoder", 0, 0)])
    )
    assert_close(on_pruned, full)


# ------------------------------------------------------------------------------------- T5 position bias


def test_t5_bias_columns_follow_the_heads_left_in_any_layer():
    """Decoder layer 0 loses heads 0 and 2, layer 1 loses 2 and 3: the bias embedding (owned by layer 0)
    keeps columns 0, 1, 3, since layer 1 still needs head 0's bias; outputs equal masking."""
    model = tiny_seq2seq("t5")
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
    model = tiny_seq2seq("t5")
    heads = whole("encoder", 0) + whole("decoder", 0) + [("encoder", 1, 1), ("decoder", 1, 0)]
    pruned = assert_mask_equals_prune(model, heads, beams=True)
    assert pruned.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (8, 3)
    assert pruned.decoder.block[0].layer[0].SelfAttention.headsieve_bias_heads == [1, 2, 3]


def test_t5_wrong_bias_would_be_caught():
    """Sanity check of the test itself: shifting the bias columns of layer 1 changes the outputs."""
    model = tiny_seq2seq("t5")
    batch = inputs()
    emb = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    with torch.no_grad():
        before = logits(model, batch)
        emb.copy_(emb[:, [1, 0, 2, 3]])
        assert not torch.allclose(logits(model, batch), before, atol=1e-4)


def test_t5_cumulative_pruning_slices_the_bias_again():
    model = tiny_seq2seq("t5")
    first = [("encoder", 0, 0), ("encoder", 1, 0)]
    second = [("encoder", 0, 3), ("encoder", 1, 3), ("encoder", 1, 1)]
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, first)
    H.prune_heads(pruned, second)
    assert pruned.encoder.block[0].layer[0].SelfAttention.headsieve_bias_heads == [1, 2]
    batch = inputs()
    assert_close(logits(pruned, batch), logits(model, batch, H.make_gates(model, first + second)))


# ------------------------------------------------------------------------------- cumulative, save, load


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_cumulative_pruning(name):
    model = tiny_seq2seq(name)
    a = [("encoder", 0, 1), ("cross", 1, 0), ("decoder", 0, 3)]
    b = [("encoder", 0, 1), ("encoder", 0, 2), ("cross", 1, 1), ("cross", 1, 2), ("cross", 1, 3)]
    step = copy.deepcopy(model)
    assert H.prune_heads(step, a) == {("encoder", 0): [1], ("decoder", 0): [3], ("cross", 1): [0]}
    assert H.prune_heads(step, b) == {("encoder", 0): [2], ("cross", 1): [1, 2, 3]}  # head (encoder, 0, 1) skipped
    assert H.prune_heads(step, a) == {}
    once = copy.deepcopy(model)
    H.prune_heads(once, a + b)
    batch = inputs()
    assert torch.allclose(logits(step, batch), logits(once, batch), atol=1e-6)
    assert H.pruned_heads(step) == H.pruned_heads(once) == {
        ("encoder", 0): [1, 2], ("decoder", 0): [3], ("cross", 1): [0, 1, 2, 3]}  # fmt: skip
    assert torch.equal(generate(step, batch), generate(model, batch, H.make_gates(model, a + b)))


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_save_and_load_round_trip(name, tmp_path):
    model = tiny_seq2seq(name)
    heads = whole("encoder", 0) + whole("cross", 1) + [("decoder", 0, 0), ("decoder", 1, 2), ("encoder", 1, 3)]
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
    H.save_pruned(pruned, str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "headsieve_pruned_heads" not in saved
    record = saved["headsieve_pruned_seq2seq_heads"]  # the record of old
    assert record == {
        "encoder": {"0": [0, 1, 2, 3], "1": [3]},
        "decoder": {"0": [0], "1": [2]},
        "cross": {"1": [0, 1, 2, 3]},
    }
    loaded = H.load_pruned(str(tmp_path))
    assert type(loaded).__name__ == type(model).__name__
    assert H.head_counts(loaded) == H.head_counts(pruned)
    batch = inputs()
    assert torch.allclose(logits(loaded, batch), logits(pruned, batch), atol=1e-6)
    assert torch.equal(generate(loaded, batch), generate(model, batch, H.make_gates(model, heads)))
    # pruning the loaded model further keeps working
    H.prune_heads(loaded, [("decoder", 1, 0)])
    assert H.pruned_heads(loaded)[("decoder", 1)] == [0, 2]


def test_load_errors(tmp_path):
    with pytest.raises(HeadsieveError, match="no config.json"):
        H.load_pruned(str(tmp_path))
    model = tiny_seq2seq("marian")
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, [("cross", 0, 1)])
    pruned.config.headsieve_pruned_seq2seq_heads = {}  # record lost: the shapes no longer match
    with pytest.raises(HeadsieveError, match="do not match"):
        H.save_pruned(pruned, str(tmp_path / "x"))


# ============================================================================== every family, one set of checks

#: one tiny model per family description (model type -> builder); every supported type must be here
ENCODERS = tuple(_CLASS_PREFIX)
ALL_TYPES = ENCODERS + ("marian", "bart", "mbart", "pegasus", "t5", "mt5") + DECODERS
#: one model type per family, for the heavier checks
ONE_PER_FAMILY = {family.name: family.model_types[0] for family in FAMILIES}


def any_model(model_type: str):
    if model_type in DECODERS:
        return tiny_decoder(model_type)
    return tiny_model(model_type) if model_type in ENCODERS else tiny_seq2seq(model_type)


def run_any(model, gates=None) -> torch.Tensor:
    """Logits of a fixed batch (a classifier's, a decoder-only LM's, or a seq2seq model's teacher-forced ones),
    gated if asked."""
    if H.head_space(model).names == ("decoder",):
        return decoder_logits(model, gates=gates)
    if H.head_space(model).single is not None:
        return outputs(model, tiny_batch()) if gates is None else gated_outputs(model, gates, tiny_batch())
    return logits(model, inputs(), gates)


def some_heads(space: HeadSpace, seed: int) -> list:
    """A seeded quarter of the heads plus every head of the last layer of the first kind (a headless block)."""
    heads = space.heads()
    rng = random.Random(seed)
    chosen = rng.sample(heads, len(heads) // 4)
    first = space.kinds[0]
    return chosen + [(first.kind, first.layers - 1, h) for h in range(first.heads)]


def test_every_supported_type_has_a_tiny_model_here():
    assert set(supported_types()) == set(ALL_TYPES)
    assert sorted(ONE_PER_FAMILY) == ["bart", "bert", "distilbert", "gpt2", "llama", "t5"]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_head_space_of_every_type(model_type):
    model = any_model(model_type)
    family = family_of(model.config)
    assert model_type in family.model_types
    space = H.head_space(model)
    assert space.names == family.kind_names
    one_kind = "encoder" if model_type in ENCODERS else "decoder" if model_type in DECODERS else None
    assert space.names == ((one_kind,) if one_kind else KINDS)
    assert space == H.config_space(model.config)
    sites = H.attention_sites(model)
    assert [s.site for s in sites] == [(k.kind, l) for k in space.kinds for l in range(k.layers)]
    assert len({id(s.attention) for s in sites}) == len(sites)
    for site in sites:
        n_heads = space.shape(site.kind)[1]
        assert query_width(site) == n_heads * site.head_dim
        check_widths(site.label, site, list(range(n_heads)), family.record.key)
        if family.head_count is not None:
            assert getattr(site.attention, family.head_count) == n_heads
    assert H.head_counts(model) == {k.kind: [k.heads] * k.layers for k in space.kinds}
    assert H.pruned_heads(model) == {} and H.pruned_record(model) == {}
    assert H.remaining_heads(model) == {(k.kind, l): list(range(k.heads)) for k in space.kinds for l in range(k.layers)}


def test_unregistered_model_type_is_one_line_error_naming_the_supported_ones():
    config = transformers.OPTConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, ffn_dim=16, num_attention_heads=2,
        max_position_embeddings=16, word_embed_proj_dim=8,
    )  # fmt: skip
    model = transformers.OPTModel(config)
    for call in (H.head_space, H.attention_sites, H.make_gates, lambda m: H.prune_heads(m, [])):
        with pytest.raises(HeadsieveError, match="model type 'opt' cannot be head-masked or pruned") as err:
            call(model)
        message = str(err.value)
        assert "\n" not in message and all(t in message for t in supported_types())


@pytest.mark.parametrize("family", sorted(ONE_PER_FAMILY))
def test_masking_equals_pruning_in_every_family(family):
    model = any_model(ONE_PER_FAMILY[family])
    space = H.head_space(model)
    for seed in (1, 2):
        heads = some_heads(space, seed)
        if space.single is None:
            pruned = assert_mask_equals_prune(model, heads)  # logits and cached generation
        else:
            pruned = copy.deepcopy(model)
            H.prune_heads(pruned, heads)
            masked = run_any(model, H.make_gates(model, heads))
            assert torch.allclose(run_any(pruned), masked, atol=TOL), (run_any(pruned) - masked).abs().max()
            assert not torch.allclose(run_any(pruned), run_any(model), atol=1e-4)
        expected = H.heads_by_site(space, heads)
        assert H.pruned_heads(pruned) == expected
        counts = H.head_counts(pruned)
        for k in space.kinds:
            assert counts[k.kind] == [k.heads - len(expected.get((k.kind, l), [])) for l in range(k.layers)]


@pytest.mark.parametrize("family", sorted(ONE_PER_FAMILY))
def test_cumulative_pruning_in_every_family(family):
    model = any_model(ONE_PER_FAMILY[family])
    space = H.head_space(model)
    first, second = some_heads(space, 3), some_heads(space, 4)
    step, once = copy.deepcopy(model), copy.deepcopy(model)
    H.prune_heads(step, first)
    again = H.prune_heads(step, second)
    assert all(h not in H.heads_by_site(space, first).get(site, []) for site, hs in again.items() for h in hs)
    assert H.prune_heads(step, first) == {}  # pruned heads are skipped
    H.prune_heads(once, first + second)
    assert H.pruned_heads(step) == H.pruned_heads(once) == H.heads_by_site(space, first + second)
    a, b = step.state_dict(), once.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(run_any(step), run_any(once))


@pytest.mark.parametrize("family", sorted(ONE_PER_FAMILY))
def test_save_and_load_round_trip_in_every_family(family, tmp_path):
    model = any_model(ONE_PER_FAMILY[family])
    space = H.head_space(model)
    heads = some_heads(space, 5)
    H.prune_heads(model, heads)
    H.save_pruned(model, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    record = family_of(model.config).record
    assert record.key == ("headsieve_pruned_heads" if space.single else "headsieve_pruned_seq2seq_heads")
    assert saved[record.key] == H.pruned_record(model)
    assert record.read(saved[record.key], space.names) == H.heads_by_site(space, heads)
    loaded = H.load_pruned(str(tmp_path))
    assert type(loaded) is type(model)
    assert H.pruned_heads(loaded) == H.pruned_heads(model) and H.head_counts(loaded) == H.head_counts(model)
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert torch.allclose(run_any(loaded), run_any(model), atol=1e-6)


def test_head_forms_of_one_kind_and_of_several_kinds():
    encoder, seq2seq = HeadSpace.encoder(3, 4), H.head_space(tiny_seq2seq("bart"))
    expected = {("encoder", 0): [1, 2], ("encoder", 2): [0]}
    forms = [[(0, 2), (0, 1), (2, 0)], {0: [2, 1], "2": [0]}, [("encoder", 0, 1), ("encoder", 0, 2), ("encoder", 2, 0)],
             {("encoder", 0): [1, 2], ("encoder", 2): [0]}, {"encoder": {"0": [1, 2], "2": [0]}}]  # fmt: skip
    for form in forms:
        assert H.heads_by_site(encoder, form) == expected, form
    assert list(H.heads_by_site(seq2seq, [("cross", 0, 1), ("encoder", 1, 0)])) == [("encoder", 1), ("cross", 0)]
    with pytest.raises(HeadsieveError, match="triple"):
        H.heads_by_site(seq2seq, [(0, 1)])  # (layer, head) pairs only for a one-kind model
    with pytest.raises(HeadsieveError, match="no 'decoder' attention"):
        H.heads_by_site(encoder, [("decoder", 0, 0)])


def test_masks_over_the_head_space():
    from headsieve.models.masking import check_mask, mask_from_heads, mask_key

    encoder = HeadSpace.encoder(3, 4)
    seq2seq = HeadSpace.from_shapes({"encoder": (3, 2), "decoder": (2, 4), "cross": (2, 4)})
    mask = mask_from_heads(seq2seq, [("cross", 1, 2), ("encoder", 2, 1)])
    assert {k: v.shape for k, v in mask.items()} == {"encoder": (3, 2), "decoder": (2, 4), "cross": (2, 4)}
    assert mask["cross"][1, 2] == 0 and mask["encoder"][2, 1] == 0
    assert sum(int((v == 0).sum()) for v in mask.values()) == 2
    assert all(v.dtype == "float32" for v in mask.values())
    with pytest.raises(HeadsieveError, match="out of range"):
        mask_from_heads(seq2seq, [("encoder", 0, 2)])
    with pytest.raises(HeadsieveError, match="only 0"):
        check_mask(seq2seq, dict(mask, cross=mask["cross"] * 0.5))
    with pytest.raises(HeadsieveError, match="one array per kind"):
        check_mask(seq2seq, mask["cross"])  # a bare array only for a one-kind model
    bare = mask_from_heads(encoder, [(1, 3)])["encoder"]
    assert check_mask(encoder, bare)["encoder"][1, 3] == 0
    with pytest.raises(HeadsieveError, match=r"encoder head mask has shape \[4, 3\]"):
        check_mask(encoder, bare.T)
    assert mask_key(mask_from_heads(encoder, [(1, 3)])) == mask_key({"encoder": bare})
    assert mask_key(mask_from_heads(encoder, [(1, 3)])) != mask_key(mask_from_heads(encoder, [(1, 2)]))


def test_batch_options_read_the_family_description():
    from headsieve.models.runtime import batch_options

    assert batch_options(tiny_model("bert")) == (0, True)  # segment embeddings (type_vocab_size 2)
    assert batch_options(tiny_model("distilbert")) == (0, False)  # the family takes no token type ids
    roberta = tiny_model("roberta")
    assert roberta.config.type_vocab_size == 2 and batch_options(roberta)[1]
    roberta.config.type_vocab_size = 1  # one segment: nothing worth feeding
    assert not batch_options(roberta)[1]
    assert batch_options(tiny_seq2seq("marian")) == (PAD, False)
    assert batch_options(tiny_decoder("gpt2")) == (0, False)  # decoder-only families take no token type ids
    opt = transformers.OPTModel(transformers.OPTConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, ffn_dim=16, num_attention_heads=2,
        max_position_embeddings=16, word_embed_proj_dim=8,
    ))  # fmt: skip
    with pytest.raises(HeadsieveError, match="model type 'opt' cannot be"):
        batch_options(opt)
