"""Language-model evaluation of decoder-only models (issue 17): perplexity equals the model's own loss,
gates equal pruning, and the copying loss and needle retrieval accuracy measured on a planted copying model
whose right answers are known."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support.decoder import VOCAB, tiny_model

from headsieve.models.heads import make_gates, prune_heads
from headsieve.roles.causal_inputs import needle_input, repeated_tokens
from headsieve.tasks import lm


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def random_sequences(seed: int, n: int = 5, lo: int = 4, hi: int = 14) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, VOCAB, size=int(L)) for L in rng.integers(lo, hi, size=n)]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_perplexity_is_the_models_own_loss(model_type):
    """Token-weighted mean of transformers' per-sequence loss, whatever the batching (right padding)."""
    model = tiny_model(model_type)
    seqs = random_sequences(1)
    with torch.no_grad():
        losses = [float(model(input_ids=torch.tensor(s)[None], labels=torch.tensor(s)[None]).loss) for s in seqs]
    counts = np.array([len(s) - 1 for s in seqs])
    want = float(np.dot(losses, counts) / counts.sum())
    for batch_size in (1, 3, 8):
        got = lm.perplexity(model, seqs, batch_size=batch_size)
        assert got["nll"] == pytest.approx(want, abs=1e-5) and got["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
        np.testing.assert_allclose(got["sequence_nll"], losses, atol=1e-5)
        assert list(got["sequence_tokens"]) == list(counts) and got["n_tokens"] == counts.sum()


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_gates_equal_pruning(model_type):
    """A head mask (a whole key-value group and a single query head) gives the pruned model's perplexity."""
    model = tiny_model(model_type)
    heads = [("decoder", 0, 0), ("decoder", 0, 1), ("decoder", 2, 3)]
    seqs = random_sequences(2)
    full = lm.perplexity(model, seqs)["nll"]
    mask = {k: v.numpy() for k, v in make_gates(model, heads).items()}  # 0/1 arrays work as tensors do
    masked = lm.perplexity(model, seqs, gates=mask)
    pruned = copy.deepcopy(model)
    prune_heads(pruned, heads)
    assert masked["nll"] == pytest.approx(lm.perplexity(pruned, seqs)["nll"], abs=1e-5)
    assert abs(masked["nll"] - full) > 1e-4
    assert lm.perplexity(model, seqs)["nll"] == full  # gates removed after the pass


class CopyingModel(torch.nn.Module):
    """A planted in-context copier: at each position, all logit mass on the token that followed the latest
    earlier occurrence of the current token; uniform logits where the token occurred nowhere before."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None, **_):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            ids = input_ids[b].tolist()
            for t in range(T):
                earlier = [j for j in range(t) if ids[j] == ids[t]]
                if earlier:
                    logits[b, t, ids[earlier[-1] + 1]] = 50.0
        return SimpleNamespace(logits=logits)


def test_copying_loss_on_a_planted_copier():
    """The copier predicts x_1..x_{L-1} of the second copy (NLL ~0) and nothing of the first (NLL ln V);
    an off-by-one in the positions would take x_0 of the second copy (ln V) or the BOS prediction."""
    V = 500
    seqs = [s for s in (repeated_tokens(seed, 9, V) for seed in range(12)) if len(set(s[1:10])) == 9][:6]
    got = lm.copying_loss(CopyingModel(V), seqs, batch_size=4)
    assert got["copy_nll"] < 1e-6 and got["first_nll"] == pytest.approx(math.log(V), abs=1e-5)
    assert got["n_tokens"] == 8 * len(seqs) and len(got["sequence_copy_nll"]) == len(seqs)
    three = [repeated_tokens(0, 6, V, repeats=3)]
    assert lm.copying_loss(CopyingModel(V), three, repeats=3)["copy_nll"] < 1e-6
    with pytest.raises(Exception, match="not a BOS and 2 copies"):
        lm.copying_loss(CopyingModel(V), [np.arange(2, 10)])


def test_retrieval_accuracy_on_a_planted_copier():
    """With the marker before the needle the copier reproduces every needle (accuracy 1); without it the
    first needle token cannot be known from the context: no needle whole, (K - 1) / K of the tokens."""
    V, K = 300, 5
    model = CopyingModel(V)
    led = lm.retrieval_accuracy(model, [needle_input(s, 30, K, V, lead_marker=True) for s in range(4)])
    assert led["accuracy"] == 1.0 and led["token_accuracy"] == 1.0 and led["answer_nll"] < 1e-6
    plain = lm.retrieval_accuracy(model, [needle_input(s, 30, K, V) for s in range(4)])
    assert plain["accuracy"] == 0.0 and plain["token_accuracy"] == pytest.approx((K - 1) / K)
    assert list(plain["sequence_correct"]) == [False] * 4


def test_retrieval_accuracy_is_top1_at_the_answer_positions():
    model = tiny_model("llama")
    needles = [needle_input(s, 12, 3, VOCAB, lead_marker=True) for s in range(3)]
    got = lm.retrieval_accuracy(model, needles)
    pred = lm.token_predictions(model, [n.tokens for n in needles])
    for i, n in enumerate(needles):
        hits = pred.top1[i][n.copy_query] == n.tokens[n.copy_source]
        assert got["sequence_token_accuracy"][i] == hits.mean() and got["sequence_correct"][i] == hits.all()


def test_conllu_sequences(data, roberta_tokenizer):
    path = data / "ud/UD_English-EWT/en_ewt-ud-test.conllu"
    a = lm.conllu_sequences(path, roberta_tokenizer, n=20, seed=3, max_length=16)
    assert len(a) == 20 and all(2 <= len(s) <= 16 and s[0] == roberta_tokenizer.bos_token_id for s in a)
    b = lm.conllu_sequences(path, roberta_tokenizer, n=20, seed=3, max_length=16)
    assert all((x == y).all() for x, y in zip(a, b))
    c = lm.conllu_sequences(path, roberta_tokenizer, n=20, seed=4, max_length=16)
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))
    whole = lm.conllu_sequences(path, roberta_tokenizer, max_length=512, bos=False)
    from headsieve.io.conllu import read_conllu

    first = read_conllu(path)[0]
    assert roberta_tokenizer.decode(whole[0]).strip() == first.text  # byte-level BPE: a leading space
    given = lm.conllu_sequences(path, roberta_tokenizer, max_length=512, bos=7)
    assert given[0][0] == 7 and (given[0][1:] == whole[0]).all()


def test_lm_batches_label_only_real_tokens():
    seqs = [np.array([5, 6, 7]), np.array([8, 9])]
    (batch,) = lm.lm_batches(seqs, batch_size=4)
    assert batch["labels"].tolist() == [[5, 6, 7], [8, 9, lm.IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(Exception, match="token sequence 0 has 1 token"):
        lm.lm_batches([np.array([3])])
