"""Batching helpers for every stage: grouping inputs by length and padding rows into model inputs (the model
facts a batch needs, pad id and token types, come from :func:`headsieve.models.runtime.batch_options`).
Torch and numpy only, below every other package."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch


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


def length_batched(items, key, budget: int = 1 << 19, window: int = 256):
    """Group a stream into batches of similar size: buffer ``window`` items, sort by ``key``, then cut
    batches whose padded cost (batch size x largest key squared) stays within ``budget``."""
    buffer = []

    def flush():
        buffer.sort(key=key, reverse=True)
        batch, largest = [], 0
        for item in buffer:
            k = key(item)
            largest_new = max(largest, k)
            if batch and largest_new**2 * (len(batch) + 1) > budget:
                yield batch
                batch, largest_new = [], k
            batch.append(item)
            largest = largest_new
        if batch:
            yield batch
        buffer.clear()

    for item in items:
        buffer.append(item)
        if len(buffer) >= window:
            yield from flush()
    yield from flush()


def collate(rows: list[dict], pad_id: int, use_token_types: bool) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, (token_type_ids), and labels when the rows have them."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    types = torch.zeros((len(rows), longest), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[b, :n] = torch.as_tensor(r["input_ids"])
        mask[b, :n] = 1
        types[b, :n] = torch.as_tensor(r["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if all(isinstance(r.get("label"), int) for r in rows):  # class ids (token rows carry label strings)
        batch["labels"] = torch.as_tensor([r["label"] for r in rows])
    if use_token_types:
        batch["token_type_ids"] = types
    return batch


def pad_batch(rows: list[dict], use_type_ids: bool, pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded model inputs for token rows (each with input_ids and token_type_ids)."""
    return {k: v.to(device) for k, v in collate(rows, pad_id, use_type_ids).items()}


def iter_batches(
    examples: list[dict],
    batch_size: int,
    pad_id: int,
    use_token_types: bool,
    order: np.ndarray | None = None,
    start: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in ``order`` (default: as given, for evaluation), beginning at batch number ``start``."""
    order = np.arange(len(examples)) if order is None else order
    for first in range(start * batch_size, len(order), batch_size):
        yield collate([examples[i] for i in order[first : first + batch_size]], pad_id, use_token_types)

