"""Language-model evaluation of decoder-only models (issue 17): perplexity, in-context copying loss,
needle retrieval accuracy, and the language-model batches for head importance.

Every measure is computed from one pass over token id sequences (:func:`token_predictions`): right-padded
batches with an attention mask (under causal attention a real token never sees the padding after it, so
padding changes nothing), the log-probability of each next token and the top-1 (argmax) prediction at every
position.  Position ``t``'s prediction is of token ``t + 1``.  All measures are deterministic (no sampling,
eval mode) and give per-sequence outputs for paired comparisons across pruning strategies.

* :func:`perplexity`: token-weighted mean negative log-likelihood (nats) over every predicted token of
  held-out sequences and ``exp`` of it.  :func:`conllu_sequences` turns UD sentences into token ids.
* :func:`copying_loss`: on sequences ``[bos] x x`` (:func:`headsieve.roles.causal_inputs.repeated_tokens`),
  the mean NLL of the tokens ``x_1 .. x_{L-1}`` of the last copy (the in-context copying loss: an induction
  circuit predicts them from the earlier copy; ``x_0`` of the last copy follows ``x_{L-1}``, which never
  occurred before it, so copying cannot predict it and it is left out) and, for reference, of the tokens
  ``x_1 .. x_{L-1}`` of the first copy (random tokens, nothing to copy).
* :func:`retrieval_accuracy`: on needle-in-context inputs (:func:`headsieve.roles.causal_inputs.needle_input`)
  the top-1 prediction at each answer position (``copy_query``), teacher-forced: a needle counts as
  retrieved when every needle token is the top-1 prediction at its position, which is exactly when greedy
  decoding after the marker reproduces the whole needle; ``token_accuracy`` is the teacher-forced share of
  needle tokens predicted top-1.

Head masks: ``gates`` is ``{kind: [layers, heads]}`` (0/1 arrays or float tensors, the original head
indexing) applied with :class:`headsieve.models.heads.HeadGates` for the pass; or give a physically pruned
model (:func:`headsieve.models.heads.prune_heads`) and no gates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import HeadGates

#: label of positions the loss ignores (transformers' convention)
IGNORE = -100


# ------------------------------------------------------------------------------------------ sequences


def as_sequences(sequences) -> list[np.ndarray]:
    """Token id sequences as int64 arrays of at least 2 tokens, else one line naming the first bad one."""
    out = []
    for i, seq in enumerate(sequences):
        ids = np.asarray(seq, dtype=np.int64).reshape(-1)
        if len(ids) < 2:
            raise HeadsieveError(f"token sequence {i} has {len(ids)} token(s); a language-model measure needs at least 2")
        out.append(ids)
    if not out:
        raise HeadsieveError("no token sequences to evaluate")
    return out


def conllu_sequences(path, tokenizer, *, n: int | None = None, seed: int = 0, max_length: int = 128,
                     min_tokens: int = 2, bos: bool | int = True) -> list[np.ndarray]:  # fmt: skip
    """Token id sequences of the UD sentences of ``path`` (a CoNLL-U file or a list of them), one per
    sentence: the sentence text (``# text``) encoded by ``tokenizer`` without its special tokens, a BOS token
    put in front so that the first word is predicted too, cut to ``max_length`` tokens.  ``bos``: True for
    the tokenizer's own BOS token where it has one (GPT-2 ``<|endoftext|>``, Llama ``<s>``; Qwen2 tokenizers
    have none: no prefix), an int for that token id, False for none.  Sequences shorter than ``min_tokens`` are left out.  ``n``: a subset of
    that many sentences drawn without replacement by ``seed`` (kept in file order); None: every sentence."""
    from headsieve.io.conllu import read_conllu

    sentences = read_conllu(path)
    if n is not None and n < len(sentences):
        pick = np.sort(np.random.default_rng(seed).choice(len(sentences), size=n, replace=False))
        sentences = [sentences[int(i)] for i in pick]
    if isinstance(bos, bool):
        own = getattr(tokenizer, "bos_token_id", None)
        prefix = [own] if bos and own is not None else []
    else:
        prefix = [int(bos)]
    out = []
    for sentence in sentences:
        ids = prefix + list(tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        ids = ids[:max_length]
        if len(ids) >= max(min_tokens, 2):
            out.append(np.asarray(ids, dtype=np.int64))
    return out


def pad_batch(sequences: list[np.ndarray], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (the ids, :data:`IGNORE` at padding)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.from_numpy(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lm_batches(sequences, batch_size: int = 8, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """Batches (:func:`pad_batch`) of ``sequences`` in order, each with ``labels``, so that
    ``model(**batch).loss`` is the language-model loss: what :func:`headsieve.pruning.lm.lm_importance`
    differentiates for head importance (give it held-out text, not the evaluation sequences)."""
    seqs = as_sequences(sequences)
    return [pad_batch(seqs[i : i + batch_size], pad_id) for i in range(0, len(seqs), batch_size)]


# ------------------------------------------------------------------------------------------ one pass


@contextlib.contextmanager
def gated(model, gates, device):
    """Head gates attached for the block (``gates`` None: nothing attached)."""
    if gates is None:
        yield
        return
    if not isinstance(gates, dict):
        raise HeadsieveError("head gates must be a dict {kind: [layers, heads]}")
    tensors = {kind: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v, dtype=torch.float32)
               .to(device) for kind, v in gates.items()}  # fmt: skip
    with HeadGates(model, tensors):
        yield


@dataclass(frozen=True)
class Predictions:
    """Per sequence: ``nll`` [L - 1] (nats; position t: -log p(token t+1 | tokens 0..t)) and ``top1`` [L - 1]
    (the argmax next token at position t)."""

    nll: list[np.ndarray]
    top1: list[np.ndarray]


def token_predictions(model, sequences, *, gates=None, batch_size: int = 8, device="cpu") -> Predictions:
    """Next-token NLL and top-1 prediction at every position of every sequence (see :class:`Predictions`).

    The model is run in eval mode without gradient on ``device`` (the model is not moved; give it there)."""
    seqs = as_sequences(sequences)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    nll, top1 = [], []
    try:
        with torch.no_grad(), gated(model, gates, device):
            for start in range(0, len(seqs), batch_size):
                chunk = seqs[start : start + batch_size]
                batch = pad_batch(chunk)
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device)).logits  # fmt: skip
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                nxt = batch["input_ids"][:, 1:].to(device)
                lp = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
                best = logits[:, :-1].argmax(-1)
                for row, seq in enumerate(chunk):
                    n = len(seq) - 1
                    nll.append((-lp[row, :n]).double().cpu().numpy())
                    top1.append(best[row, :n].cpu().numpy().astype(np.int64))
    finally:
        model.train(was_training)
    return Predictions(nll, top1)


# ------------------------------------------------------------------------------------------ measures


def _summary(nll_sums: np.ndarray, counts: np.ndarray) -> dict:
    total = float(nll_sums.sum())
    tokens = int(counts.sum())
    mean = total / tokens if tokens else float("nan")
    return {"nll": mean, "perplexity": float(np.exp(mean)), "n_tokens": tokens, "n_sequences": len(counts)}


def perplexity(model, sequences, *, gates=None, batch_size: int = 8, device="cpu") -> dict:
    """Perplexity over held-out token sequences.

    Returns ``nll`` (token-weighted mean negative log-likelihood, nats, over every predicted token: all but
    the first of each sequence), ``perplexity`` (``exp(nll)``), ``n_tokens``, ``n_sequences``, and per
    sequence ``sequence_nll`` (its mean NLL) and ``sequence_tokens`` (its predicted tokens)."""
    pred = token_predictions(model, sequences, gates=gates, batch_size=batch_size, device=device)
    sums = np.array([x.sum() for x in pred.nll])
    counts = np.array([len(x) for x in pred.nll], dtype=np.int64)
    return {**_summary(sums, counts), "sequence_nll": sums / counts, "sequence_tokens": counts}


def copy_spans(length: int, repeats: int = 2, bos: bool = True) -> tuple[int, int]:
    """(prefix, copy length L) of a sequence ``[bos] x .. x`` of ``length`` tokens, else one line."""
    prefix = 1 if bos else 0
    L, rest = divmod(length - prefix, repeats)
    if rest or L < 2 or repeats < 2:
        raise HeadsieveError(f"a sequence of {length} tokens is not {'a BOS and ' if bos else ''}{repeats} copies of "
                             f"one sequence of at least 2 tokens")  # fmt: skip
    return prefix, L


def copying_loss(model, sequences, *, gates=None, repeats: int = 2, bos: bool = True, batch_size: int = 8,
                 device="cpu") -> dict:  # fmt: skip
    """In-context copying loss on repeated random-token sequences (see the module docstring).

    Returns ``copy_nll`` (token-weighted mean NLL of ``x_1 .. x_{L-1}`` of the last copy), ``first_nll``
    (the same tokens of the first copy, for reference), ``n_tokens`` (per measure), ``n_sequences``, and per
    sequence ``sequence_copy_nll`` and ``sequence_first_nll`` (means)."""
    seqs = as_sequences(sequences)
    spans = [copy_spans(len(s), repeats, bos) for s in seqs]
    pred = token_predictions(model, seqs, gates=gates, batch_size=batch_size, device=device)
    copy, first = [], []
    for nll, (prefix, L) in zip(pred.nll, spans):
        # token t is predicted at position t - 1; tokens x_1..x_{L-1} of copy c sit at prefix + c L + 1 ..
        last = prefix + (repeats - 1) * L
        copy.append(nll[last : last + L - 1])
        first.append(nll[prefix : prefix + L - 1])
    copy_sums, first_sums = np.array([x.sum() for x in copy]), np.array([x.sum() for x in first])
    counts = np.array([len(x) for x in copy], dtype=np.int64)
    total = int(counts.sum())
    return {
        "copy_nll": float(copy_sums.sum() / total),
        "first_nll": float(first_sums.sum() / total),
        "n_tokens": total,
        "n_sequences": len(seqs),
        "sequence_copy_nll": copy_sums / counts,
        "sequence_first_nll": first_sums / counts,
    }


def retrieval_accuracy(model, needles, *, gates=None, batch_size: int = 8, device="cpu") -> dict:
    """Needle retrieval on :class:`~headsieve.roles.causal_inputs.NeedleInput` inputs (teacher-forced top-1
    at the answer positions; module docstring).

    Returns ``accuracy`` (share of needles reproduced whole), ``token_accuracy`` (share of needle tokens
    predicted top-1), ``answer_nll`` (mean NLL of the answer tokens), ``n_needles``, and per needle
    ``sequence_correct`` (bool), ``sequence_token_accuracy`` and ``sequence_answer_nll``."""
    needles = list(needles)
    pred = token_predictions(model, [n.tokens for n in needles], gates=gates, batch_size=batch_size, device=device)
    correct, tokens, nll = [], [], []
    for needle, top1, lp in zip(needles, pred.top1, pred.nll):
        q = np.asarray(needle.copy_query, dtype=np.int64)
        hit = top1[q] == needle.tokens[q + 1]
        correct.append(bool(hit.all()))
        tokens.append(float(hit.mean()))
        nll.append(float(lp[q].mean()))
    correct, tokens, nll = np.array(correct), np.array(tokens), np.array(nll)
    return {
        "accuracy": float(correct.mean()),
        "token_accuracy": float(tokens.mean()),
        "answer_nll": float(nll.mean()),
        "n_needles": len(needles),
        "sequence_correct": correct,
        "sequence_token_accuracy": tokens,
        "sequence_answer_nll": nll,
    }

