"""CUDA where torch sees it, the CPU otherwise, and the same outputs within tolerance on both.

The comparisons need a CUDA device and skip with the reason elsewhere (this project's CI machine has none);
the device choice itself is tested everywhere. Fine-tuning is compared with dropout off: CUDA draws its
dropout masks from its own generator, so with dropout on the two runs are different samples, not an error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.models import glue_task, tiny_classifier

from headsieve.attention import dump_attention
from headsieve.cli.common import pick_device
from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_conllu
from headsieve.io.shards import iter_dump
from headsieve.models.load import load_encoder
from headsieve import batching as B
from headsieve.tasks import data as D
from headsieve.tasks import finetune as F
from headsieve.pruning.evaluate import MaskEvaluator
from headsieve.pruning.importance import head_importance
from headsieve.tokens import encode_sentences

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here: the CPU/CUDA comparison needs one")


def test_auto_picks_cuda_only_where_there_is_one():
    assert pick_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert pick_device("cpu") == "cpu"
    if not HAS_CUDA:
        with pytest.raises(HeadsieveError, match="no CUDA device"):
            pick_device("cuda")


@pytest.fixture(scope="module")
def sst2(data, bert_tokenizer) -> D.TaskData:
    return glue_task(data, bert_tokenizer, "sst2", "glue/SST-2/train.tsv", 96)


def _classifier(tiny_bert, device: str, dropout: bool = True):
    model = tiny_classifier(tiny_bert)  # seeded: the same classifier head on both devices
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model.to(device)


@cuda
def test_attention_dump_on_cuda_equals_cpu(tmp_path, data, tiny_bert, bert_tokenizer):
    sentences = read_conllu(data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu", max_sentences=40)
    rows, _ = encode_sentences(bert_tokenizer, sentences, 64)
    for device in ("cpu", "cuda"):
        model = load_encoder("tiny", {"source": str(tiny_bert)}, device=device)
        dump_attention(model, rows, tmp_path / device, "tiny", "ewt", batch_tokens=512, device=device, progress=False)
    dumps = [list(iter_dump(tmp_path / device)) for device in ("cpu", "cuda")]
    assert len(dumps[0]) == len(dumps[1]) == len(rows)
    for (row_cpu, att_cpu), (row_gpu, att_gpu) in zip(*dumps):
        assert row_cpu["sentence_index"] == row_gpu["sentence_index"]
        assert att_gpu.dtype == np.float16 and att_gpu.shape == att_cpu.shape
        np.testing.assert_allclose(att_gpu.astype(np.float32), att_cpu.astype(np.float32), atol=2e-3, rtol=5e-3)


@cuda
def test_masks_and_importance_on_cuda_equal_cpu(tiny_bert, sst2):
    rng = np.random.default_rng(0)
    masks = {"none": np.ones((3, 4))} | {f"r{i}": (rng.random((3, 4)) > 0.5).astype(float) for i in range(4)}
    logits, importance = {}, {}
    for device in ("cpu", "cuda"):
        model = _classifier(tiny_bert, device)
        with MaskEvaluator(model, sst2, batch_size=32, progress=False) as evaluator:
            logits[device] = np.stack([evaluator.logits(mask) for mask in masks.values()])
        batches = B.iter_batches(sst2.examples, 32, 0, True)
        importance[device] = head_importance(model, batches)
    np.testing.assert_allclose(logits["cuda"], logits["cpu"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(importance["cuda"], importance["cpu"], atol=1e-4, rtol=1e-3)


@cuda
def test_finetuning_on_cuda_follows_cpu(tmp_path, tiny_bert, sst2):
    config = F.FinetuneConfig(seed=0, max_steps=6, batch_size=16, learning_rate=1e-3, checkpoint_every=3)
    metrics, predicted = {}, {}
    for device in ("cpu", "cuda"):
        model = _classifier(tiny_bert, device, dropout=False)
        metrics[device] = F.finetune(model, sst2, config, tmp_path / device, progress=False)
        predicted[device] = F.predict(model, sst2, batch_size=32)
    assert metrics["cuda"]["steps"] == metrics["cpu"]["steps"] == 6
    assert metrics["cuda"]["device"].startswith("cuda") and metrics["cpu"]["device"] == "cpu"
    np.testing.assert_allclose(metrics["cuda"]["final_loss"], metrics["cpu"]["final_loss"], rtol=1e-3)
    assert (predicted["cuda"] == predicted["cpu"]).mean() >= 0.95  # a near-tie may flip a class
