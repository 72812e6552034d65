"""Running a model: eval_mode puts the model in eval for a block and restores what it changed."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from headsieve.models.runtime import eval_mode, model_device, to_device
from headsieve.pruning.compensation import head_activity


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        hidden_dropout_prob=0.5, attn_implementation="eager",
    )  # fmt: skip
    return BertForSequenceClassification(config)


def modes(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def mixed(model):
    """Train mode with one submodule in eval and the embeddings frozen: a state a caller may have set up."""
    model.train()
    model.bert.encoder.layer[0].eval()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    return model


def test_eval_mode_switches_dropout_off_and_restores_every_mode():
    model = mixed(tiny_bert())
    before = modes(model)
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    noisy = [model(input_ids=ids).logits for _ in range(2)]
    assert not torch.equal(*noisy)  # dropout on: the test can tell the modes apart
    with eval_mode(model, freeze=True):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert modes(model) == before


def test_eval_mode_restores_after_an_error():
    model = mixed(tiny_bert())
    before = modes(model)
    with pytest.raises(RuntimeError):
        with eval_mode(model, freeze=True):
            raise RuntimeError("boom")
    assert modes(model) == before


def test_head_activity_leaves_the_model_as_it_was():
    model = mixed(tiny_bert())
    before = modes(model)
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    first = head_activity(model, [batch])
    assert modes(model) == before
    second = head_activity(copy.deepcopy(model), [batch])  # no dropout inside: the same activity
    assert all((a == b).all() for a, b in zip(first["attentions"], second["attentions"]))


def test_to_device_moves_tensors_only():
    model = tiny_bert()
    batch = to_device({"input_ids": torch.ones(1, 3, dtype=torch.long), "name": "x"}, model_device(model))
    assert batch["name"] == "x" and batch["input_ids"].device == model_device(model)
