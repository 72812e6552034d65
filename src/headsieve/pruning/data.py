"""Classification data for fine-tuning and evaluation: encode GLUE-style examples, batch them.

Examples are encoded once (truncated to ``max_length`` word pieces, pairs truncated longest-first, as is
usual for classification) into plain dicts; batches are padded dynamically.  Training order is a
permutation drawn from ``(seed, epoch)`` alone, so an interrupted run can resume at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from headsieve.io.glue import Example


@dataclass
class TaskData:
    """Encoded examples of one split: ``examples[k]`` has input_ids, token_type_ids, label (class id)."""

    task: str
    labels: tuple[str, ...]
    metric: str
    examples: list[dict]

    @property
    def n_labels(self) -> int:
        return len(self.labels)


def encode_examples(tokenizer, examples: list[Example], max_length: int) -> list[dict]:
    """Token ids (and segment ids) of every example, truncated to ``max_length``."""
    firsts = [e.text_a for e in examples]
    seconds = [e.text_b for e in examples]
    pairs = any(s is not None for s in seconds)
    if pairs:
        enc = tokenizer(firsts, [s or "" for s in seconds], truncation="longest_first", max_length=max_length)
    else:
        enc = tokenizer(firsts, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids")
    return [
        {
            "input_ids": enc["input_ids"][k],
            "token_type_ids": types[k] if types is not None else [0] * len(enc["input_ids"][k]),
            "label": e.label_id,
        }
        for k, e in enumerate(examples)
    ]


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


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


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


def split_held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a training split, for choices that must not see the eval split."""
    order = np.random.default_rng([seed, 7919]).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])
