"""Head gates and physical head pruning on tiny random BERT-family models (headsieve.models.heads)."""

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
from headsieve.models.surgery import count_parameters

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
    assert H.head_counts(model) == [N_HEADS] * N_LAYERS
    assert H.head_shape(model) == (N_LAYERS, N_HEADS)


def test_unsupported_model_type_is_one_line_error():
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50, n_positions=16)
    model = transformers.GPT2Model(config)
    with pytest.raises(HeadsieveError, match="gpt2.*supported: bert") as err:
        H.attention_sites(model)
    assert "\n" not in str(err.value)


def test_bad_heads_and_gates_are_user_errors():
    model = tiny_model("bert")
    with pytest.raises(HeadsieveError, match="head index 4"):
        H.prune_heads(model, {0: [4]})
    with pytest.raises(HeadsieveError, match="layer index 3"):
        H.prune_heads(model, [(3, 0)])
    with pytest.raises(HeadsieveError, match="shape"):
        H.apply_head_gates(model, torch.ones(N_LAYERS, N_HEADS + 1))
    assert H.head_counts(model) == [N_HEADS] * N_LAYERS  # nothing pruned by the failed calls


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
        assert H.head_counts(pruned_model) == expected
        assert H.pruned_heads(pruned_model) == heads


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
    with H.apply_head_gates(model, gates):
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
    assert H.head_counts(model) == [N_HEADS, 0, N_HEADS]
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
    assert removed == {0: [1, 2], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert H.pruned_heads(stepwise) == H.pruned_heads(at_once) == removed
    assert H.remaining_heads(stepwise) == [[0, 3], [], []]
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
def test_save_and_load_round_trip(tmp_path, arch, head):
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
    assert saved[H.PRUNED_KEY] == {"0": [0, 2], "1": [0, 1, 2, 3], "2": [1]}
    loaded = H.load_pruned(folder)  # class from config.architectures
    assert type(loaded) is type(model)
    assert H.head_counts(loaded) == [2, 0, 3]
    assert H.pruned_heads(loaded) == H.pruned_heads(model)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(outputs(model, batch), outputs(loaded, batch))
    # loading then pruning more keeps working with original indices
    H.prune_heads(loaded, {2: [0]})
    assert H.remaining_heads(loaded)[2] == [2, 3]


def test_load_with_explicit_class_and_unpruned_model(tmp_path):
    model = tiny_model("bert", "base")
    folder = str(tmp_path / "plain")
    H.save_pruned(model, folder)
    loaded = H.load_pruned(folder, transformers.AutoModel)
    assert H.head_counts(loaded) == [N_HEADS] * N_LAYERS
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
