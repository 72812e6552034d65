"""Head importance of an encoder-decoder model (Michel, Levy and Neubig 2019), for all three kinds.

Every head of every kind gets a gate ``xi = 1`` (:class:`headsieve.models.heads.HeadGates`); its
importance is ``mean over batches of |dL_b/dxi|``, ``L_b`` the batch's teacher-forced cross-entropy of the
reference translations (the model's own loss: mean over target tokens, padding ignored).  As in
:mod:`headsieve.pruning.importance`, the absolute value is taken per batch, not per sentence (smaller
batches come closer to the paper), and each layer's row is divided by its L2 norm, within each kind.

**Not on the test set.**  Importance decides what to prune, so its sentence pairs must be disjoint from
those BLEU is scored on (:func:`headsieve.translation.data.split_pairs`); the functions here cannot tell.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.pruning.importance import gate_importance
from headsieve.translation.data import SentencePair


def pair_batches(
    tokenizer, pairs: list[SentencePair], batch_size: int, max_length: int = 256, source_prefix: str = ""
) -> list[dict]:
    """Teacher-forcing batches (``input_ids``, ``attention_mask``, ``labels`` with -100 at padding), in the
    pairs' order.  Targets are tokenised as targets (``text_target``: Marian's target vocabulary)."""
    if batch_size < 1:
        raise HeadsieveError(f"batch size {batch_size} must be at least 1")
    batches = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        enc = tokenizer(
            [source_prefix + p.source for p in chunk], text_target=[p.target for p in chunk], padding=True,
            truncation=True, max_length=max_length, return_tensors="pt",
        )  # fmt: skip
        labels = enc["labels"]
        pad = tokenizer.pad_token_id
        labels = labels.masked_fill(labels == pad, -100) if pad is not None else labels
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    return batches


def head_importance(model, batches: Iterable[dict], device=None, normalise: bool = True) -> dict[str, np.ndarray]:
    """Importance ``{kind: [layers, heads]}`` (float64, non-negative) of every head of a seq2seq model.

    ``batches``: dicts with ``labels`` (:func:`pair_batches`) from pairs disjoint from the test set.  The
    model runs in eval mode; its modes and ``requires_grad`` flags are restored, the hooks removed, and no
    gradient lands in its parameters.  Heads removed by physical pruning get importance 0.
    """
    return gate_importance(model, batches, device, normalise, "sentence pairs")


def importance_frame(scores: dict) -> pd.DataFrame:
    """Long table (kind, layer, head, importance) of ``{kind: [layers, heads]}`` (:func:`head_importance`)."""
    rows = [
        (kind, l, h, float(v[l, h])) for kind, v in scores.items() for l in range(v.shape[0]) for h in range(v.shape[1])
    ]
    frame = pd.DataFrame(rows, columns=["kind", "layer", "head", "importance"])
    return frame.astype({"layer": "int16", "head": "int16"})
