"""Head importance (Michel et al. 2019) and the batched mask evaluator, on a tiny random classifier."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from support.models import glue_task, tiny_classifier

from headsieve.errors import HeadsieveError
from headsieve.models import heads as H
from headsieve import batching as B
from headsieve.tasks.data import TaskData
from headsieve.batching import iter_batches
from headsieve.models.masking import mask_from_heads
from headsieve.pruning.evaluate import MaskEvaluator
from headsieve.pruning.importance import head_importance
from headsieve.tasks.metrics import compute_metrics
from headsieve.pruning.strategies import select_heads

BATCH = 16


def sst2(data, tokenizer, split: str, n: int) -> TaskData:
    """The first ``n`` examples of an SST-2 split, encoded."""
    return glue_task(data, tokenizer, "sst2", f"glue/SST-2/{split}.tsv", n)


@pytest.fixture(scope="module")
def train(data, bert_tokenizer) -> TaskData:
    return sst2(data, bert_tokenizer, "train", 48)


@pytest.fixture(scope="module")
def dev(data, bert_tokenizer) -> TaskData:
    return sst2(data, bert_tokenizer, "dev", 80)


@pytest.fixture()
def classifier(tiny_bert):
    """The tiny random BERT as a 2-class classifier; weights re-drawn (seeded) large enough that heads matter."""
    model = tiny_classifier(tiny_bert)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) * (0.2 if param.dim() > 1 else 0.1))
    return model.eval()


def train_batches(model, task: TaskData) -> list[dict]:
    return list(iter_batches(task.examples, BATCH, model.config.pad_token_id or 0, True))


def forward_hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# ---------------------------------------------------------------------------------------------- importance


def test_importance_shape_norm_determinism_and_cleanup(classifier, train):
    model = classifier.train()  # the mode must come back as it was
    batches = train_batches(model, train)
    assert len(batches) == 3
    hooks_before = forward_hooks(model)
    first = head_importance(model, batches)
    second = head_importance(model, batches)
    raw = head_importance(model, batches, normalise=False)

    assert first.shape == H.head_space(model).shape("encoder") == (3, 4)
    assert (first >= 0).all() and (raw > 0).all()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, raw / np.linalg.norm(raw, axis=1, keepdims=True))
    assert forward_hooks(model) == hooks_before
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_importance_is_mean_of_per_batch_absolute_gradients(classifier, train):
    model = classifier
    batches = train_batches(model, train)
    expected = torch.zeros(3, 4)
    for batch in batches:
        gates = torch.ones(3, 4, requires_grad=True)
        with H.HeadGates(model, {"encoder": gates}):
            model(**batch).loss.backward()
        expected += gates.grad.abs()
    model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(head_importance(model, batches, normalise=False), expected / len(batches), rtol=1e-5)


def test_planted_dead_head_has_zero_importance(classifier, train):
    model = classifier
    site = H.attention_sites(model)[1]
    rows = slice(2 * site.head_dim, 3 * site.head_dim)  # layer 1, head 2
    with torch.no_grad():
        site.value.weight[rows] = 0.0
        site.value.bias[rows] = 0.0
    raw = head_importance(model, train_batches(model, train), normalise=False)
    assert raw[1, 2] == 0.0
    assert (np.delete(raw.reshape(-1), 1 * 4 + 2) > 0).all()
    # the dead head is what the importance strategy prunes first
    space = H.head_space(model)
    assert select_heads("importance", space, 1 / 12, 0, importance={"encoder": raw}) == [("encoder", 1, 2)]


def test_importance_errors(classifier, train):
    batches = train_batches(classifier, train)
    before = forward_hooks(classifier)
    with pytest.raises(HeadsieveError, match="at least one batch"):
        head_importance(classifier, [])
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches[:1]]
    with pytest.raises(HeadsieveError, match="batches with labels"):
        head_importance(classifier, unlabelled)
    assert forward_hooks(classifier) == before and all(p.requires_grad for p in classifier.parameters())


# ----------------------------------------------------------------------------------------------- evaluator


def plain_logits(model, batches) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(**b).logits for b in batches]).numpy()


def test_all_ones_mask_equals_unmasked_model(classifier, dev):
    model = classifier
    space = H.head_space(model)
    batches = list(iter_batches(dev.examples, BATCH, 0, True))
    logits = plain_logits(model, batches)
    gold = np.array([e["label"] for e in dev.examples])
    before = forward_hooks(model)
    with MaskEvaluator(model, dev, BATCH, progress=False) as ev:
        row = ev.evaluate(np.ones((3, 4)))
        # the evaluator batches by length: other padding, so equal to float32 rounding, in the data's order
        np.testing.assert_allclose(ev.logits(mask_from_heads(space, [])), logits, rtol=0, atol=1e-5)
    assert row == {**compute_metrics("accuracy", logits.argmax(-1), gold), "n": 80, "heads_pruned": 0}
    assert forward_hooks(model) == before


def test_mask_equals_physical_pruning(classifier, dev):
    model = classifier
    space = H.head_space(model)
    heads = [("encoder", l, h) for l, h in [(0, 1), (1, 0), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]]  # a whole layer too
    pruned = copy.deepcopy(model)
    H.prune_heads(pruned, heads)
    with MaskEvaluator(model, dev, BATCH, progress=False) as ev:
        mask = mask_from_heads(space, heads)
        masked = ev.logits(mask)
        row = ev.evaluate(mask)
        physical = np.empty_like(masked)
        physical[ev.order] = plain_logits(pruned, ev.batches)  # the evaluator's batches are length-sorted
        unmasked = ev.logits(np.ones((3, 4)))
    np.testing.assert_allclose(masked, physical, rtol=0, atol=1e-5)
    assert np.abs(masked - unmasked).max() > 1e-3  # the heads did matter
    np.testing.assert_array_equal(masked.argmax(-1), physical.argmax(-1))
    assert row["heads_pruned"] == 7 and row["n"] == 80
    assert row["accuracy"] == compute_metrics("accuracy", physical.argmax(-1), ev.gold)["accuracy"]


def test_many_masks_without_rehooking_or_recollating(classifier, dev, monkeypatch):
    model = classifier
    space = H.head_space(model)
    counts = {"hooks": 0, "collate": 0}
    register, collate = torch.nn.Module.register_forward_pre_hook, B.collate

    def counting_register(self, *args, **kwargs):
        counts["hooks"] += 1
        return register(self, *args, **kwargs)

    def counting_collate(*args, **kwargs):
        counts["collate"] += 1
        return collate(*args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "register_forward_pre_hook", counting_register)
    monkeypatch.setattr(B, "collate", counting_collate)
    before = forward_hooks(model)
    ev = MaskEvaluator(model, dev, BATCH, progress=False)
    assert forward_hooks(model) == before + 3
    assert counts == {"hooks": 3, "collate": 5}  # one hook per layer, 80 examples / 16
    masks = {f"random:{s}": mask_from_heads(space, select_heads("random", space, 0.5, s)) for s in range(30)}
    rows = ev.evaluate_many(masks)
    assert counts == {"hooks": 3, "collate": 5}
    assert [r["mask"] for r in rows] == list(masks) and all(r["heads_pruned"] == 6 for r in rows)
    # in-place gate updates: evaluating a mask again gives the same row
    assert {k: v for k, v in rows[7].items() if k != "mask"} == ev.evaluate(masks["random:7"])
    assert forward_hooks(model) == before + 3
    ev.close()
    assert forward_hooks(model) == before
    with pytest.raises(HeadsieveError, match="closed"):
        ev.evaluate(masks["random:0"])


def test_mask_errors(classifier, dev):
    space = H.head_space(classifier)
    with MaskEvaluator(classifier, dev, BATCH, progress=False) as ev:
        with pytest.raises(HeadsieveError, match=r"encoder head mask has shape \[4, 3\]"):
            ev.evaluate(np.ones((4, 3)))
        with pytest.raises(HeadsieveError, match="only 0 .pruned. and 1"):
            ev.evaluate(np.full((3, 4), 0.5))
    with pytest.raises(HeadsieveError, match=r"encoder layer index 3 out of range"):
        mask_from_heads(space, [("encoder", 3, 0)])
