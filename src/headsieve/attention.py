"""Attention extraction: batch by length, run the encoder with eager attention, stream to shards."""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch

from headsieve.batching import length_batches, pad_batch
from headsieve.io.shards import ShardWriter
from headsieve.models.runtime import batch_options
from headsieve.progress import progress_bar

log = logging.getLogger(__name__)


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
