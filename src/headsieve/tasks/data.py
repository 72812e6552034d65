"""Classification data for fine-tuning and evaluation: encode GLUE-style examples, batch them.

Examples are encoded once (truncated to ``max_length`` word pieces, pairs truncated longest-first, as is
usual for classification) into plain dicts; batches are padded dynamically.  Training order is a
permutation drawn from ``(seed, epoch)`` alone, so an interrupted run can resume at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headsieve.io.glue import Example, read_glue, task_spec


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


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


#: batches per group of :func:`grouped_epoch_order` (Hugging Face's ``group_by_length`` uses 50 too)
GROUP_BATCHES = 50


def grouped_epoch_order(lengths, batch_size: int, seed: int, epoch: int, group: int = GROUP_BATCHES) -> np.ndarray:
    """The training order of one epoch with batches of similar length (less padding, the same examples).

    The epoch's permutation (:func:`epoch_order`) is cut into groups of ``group`` batches; each group is sorted
    by length (longest first, ties in permutation order) and cut into batches; the full batches are shuffled
    (seeded by seed and epoch); a last, smaller batch stays last, so that slicing the order every
    ``batch_size`` gives these batches (and a resumed run the same ones)."""
    lengths = np.asarray(lengths)
    order = epoch_order(len(lengths), seed, epoch)
    span = batch_size * group
    batches = []
    for first in range(0, len(order), span):
        part = order[first : first + span]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    rng = np.random.default_rng([seed, epoch, 104729])
    shuffled = [full[i] for i in rng.permutation(len(full))] + short
    return np.concatenate(shuffled) if shuffled else order


def split_held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a training split, for choices that must not see the eval split."""
    order = np.random.default_rng([seed, 7919]).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])


def read_task(corpus_spec: dict, path, tokenizer, max_length: int, limit: int | None, seed: int) -> TaskData:
    """Encode a GLUE/XNLI corpus; ``limit`` takes a seeded random subset (the same for every model seed)."""
    task = "xnli" if corpus_spec["format"] == "xnli" else corpus_spec["task"]
    spec = task_spec(task, corpus_spec if task == "custom" else None)
    examples = read_glue(path, spec, corpus_spec.get("header"), corpus_spec.get("language"), corpus_spec.get("max_sentences"))
    if limit is not None and limit < len(examples):
        keep = np.sort(np.random.default_rng([seed, 104729]).choice(len(examples), size=limit, replace=False))
        examples = [examples[k] for k in keep]
    return TaskData(task, spec.labels, spec.metric, encode_examples(tokenizer, examples, max_length))
