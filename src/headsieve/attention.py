"""Attention extraction: batch by length, run the encoder with eager attention, stream to shards."""

from __future__ import annotations

import logging
from typing import Iterable, Iterator

import numpy as np
import torch

from headsieve.io.shards import ShardWriter
from headsieve.progress import progress_bar

log = logging.getLogger(__name__)


def length_batches(lengths: Iterable[int], batch_tokens: int, max_batch: int = 256) -> list[list[int]]:
    """Group input positions into batches of similar length (longest first).

    A batch holds at most ``batch_tokens`` padded pieces (batch size x its longest input) and at most
    ``max_batch`` inputs; sorting by length keeps padding small.  The order is deterministic (ties keep
    corpus order).
    """
    lengths = list(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        t = lengths[i]
        new_longest = max(longest, t)
        if current and (new_longest * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current, new_longest = [], t
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def pad_batch(rows: list[dict], use_type_ids: bool, pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded model inputs for token rows (each with input_ids and token_type_ids)."""
    from headsieve.pruning.data import collate

    return {k: v.to(device) for k, v in collate(rows, pad_id, use_type_ids).items()}


def uses_token_types(model) -> bool:
    """Whether the model has segment (token type) embeddings worth feeding (DistilBERT takes none)."""
    config = model.config
    return getattr(config, "model_type", "") != "distilbert" and int(getattr(config, "type_vocab_size", 0) or 0) > 1


def batch_options(model) -> tuple[int, bool]:
    """(pad id, whether to pass token_type_ids) for batches fed to ``model``: one rule for every stage."""
    pad = getattr(model.config, "pad_token_id", None)
    return (int(pad) if pad is not None else 0), uses_token_types(model)


@torch.inference_mode()
def batch_attention(model, batch: dict[str, torch.Tensor], lengths: list[int]) -> list[np.ndarray]:
    """Per input, its unpadded attention probabilities [layers, heads, T, T] as float16."""
    out = model(**batch, output_attentions=True)
    layers = [a.to(torch.float16).cpu().numpy() for a in out.attentions]  # L x [B, H, Tmax, Tmax]
    del out
    result = []
    for b, t in enumerate(lengths):
        sentence = np.empty((len(layers), layers[0].shape[1], t, t), dtype=np.float16)
        for l, a in enumerate(layers):
            sentence[l] = a[b, :, :t, :t]
        result.append(sentence)
    return result


def iter_attention(
    model, rows: list[dict], batch_tokens: int, device="cpu", progress: bool = True
) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (row, attention) for every token row, in length-batched order."""
    pad_id, use_types = batch_options(model)
    batches = length_batches([r["n_pieces"] for r in rows], batch_tokens)
    bar = progress_bar(total=len(rows), desc="attention", unit="sent", enabled=progress)
    for idx in batches:
        chunk = [rows[i] for i in idx]
        batch = pad_batch(chunk, use_types, pad_id, device)
        for row, att in zip(chunk, batch_attention(model, batch, [r["n_pieces"] for r in chunk])):
            yield row, att
        bar.update(len(chunk))
    bar.close()


def dump_attention(
    model,
    rows: list[dict],
    folder,
    model_key: str,
    corpus: str,
    batch_tokens: int = 4096,
    shard_bytes: int = 64 << 20,
    device="cpu",
    progress: bool = True,
    provenance: dict | None = None,
):
    """Stream every row's attention into a dump folder (see :mod:`headsieve.io.shards`); return the index.

    ``provenance`` (e.g. max_length and the tokens' checksum) is recorded in the index metadata."""
    writer = ShardWriter(folder, model_key, corpus, shard_bytes, provenance=provenance)
    for row, att in iter_attention(model, rows, batch_tokens, device, progress):
        writer.add(row["sentence_index"], row["sentence_id"], att, row["input_ids"])
    return writer.close()
