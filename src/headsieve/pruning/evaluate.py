"""Evaluate many head masks on one loaded model, in one process.

:class:`MaskEvaluator` collates the evaluation batches once (kept in memory, on the device) and attaches
:class:`headsieve.models.heads.HeadGates` once; each :meth:`MaskEvaluator.evaluate` call only writes the
mask into the gate tensor in place and runs the batches.  A gate of 0 removes the head's contribution
exactly as physical pruning does (:func:`headsieve.models.heads.prune_heads`; tested), so masking stands
in for pruning when only the metrics are wanted.
"""

from __future__ import annotations

import numpy as np
import torch

from headsieve.attention import batch_options
from headsieve.errors import HeadsieveError
from headsieve.models.heads import HeadGates
from headsieve.progress import progress_bar
from headsieve.pruning.data import TaskData, iter_batches
from headsieve.models.runtime import eval_mode, model_device, to_device
from headsieve.pruning.metrics import compute_metrics
from headsieve.pruning.strategies import ModelFacts


def mask_from_heads(facts: ModelFacts, heads) -> np.ndarray:
    """A 0/1 float mask ``[layers, heads]``: ones, zeros at the (layer, head) pairs ``heads``."""
    mask = np.ones((facts.n_layers, facts.n_heads), dtype=np.float32)
    for layer, head in heads:
        if not (0 <= layer < facts.n_layers and 0 <= head < facts.n_heads):
            raise HeadsieveError(
                f"head ({layer}, {head}) out of range (the model has {facts.n_layers} x {facts.n_heads} heads)"
            )
        mask[layer, head] = 0.0
    return mask


def check_mask(mask, facts: ModelFacts) -> np.ndarray:
    """``mask`` as a float32 array of the model's shape holding only 0 and 1, else a one-line error."""
    values = np.asarray(mask, dtype=np.float32)
    if values.shape != (facts.n_layers, facts.n_heads):
        shape = [facts.n_layers, facts.n_heads]
        raise HeadsieveError(f"head mask has shape {list(values.shape)}; the model needs {shape}")
    if not np.isin(values, (0.0, 1.0)).all():
        raise HeadsieveError("head mask must hold only 0 (pruned) and 1 (kept)")
    return values


class MaskEvaluator:
    """Metrics of one model under many head masks, without reloading the model or re-encoding the data.

    ``model``: a sequence classifier (left where it is; ``device`` defaults to its device).  ``data``:
    the evaluation split.  The gate hooks stay attached until :meth:`close` (or the end of a ``with``
    block); with a mask of ones the model computes exactly what it computes without them.
    """

    def __init__(self, model, data: TaskData, batch_size: int, device=None, progress: bool = True):
        if not data.examples:
            raise HeadsieveError(f"task '{data.task}': no evaluation examples")
        self.model = model
        self.data = data
        self.facts = ModelFacts.from_model(model)
        self.device = model_device(model) if device is None else torch.device(device)
        self.progress = progress
        pad_id, types = batch_options(model)
        # batches of similar length (less padding); logits are put back in the data's order
        self.order = np.argsort([len(e["input_ids"]) for e in data.examples], kind="stable")
        self.batches = [  # labels left out: the gold labels are in self.gold, and no loss is needed
            to_device({k: v for k, v in batch.items() if k != "labels"}, self.device)
            for batch in iter_batches(data.examples, batch_size, pad_id, types, order=self.order)
        ]
        self.gold = np.asarray([example["label"] for example in data.examples])
        self.gates = torch.ones(self.facts.n_layers, self.facts.n_heads, device=self.device)
        self.hooks = HeadGates(model, self.gates).attach()

    def logits(self, mask) -> np.ndarray:
        """Logits ``[examples, classes]`` of the evaluation data with the heads where ``mask`` is 0 off."""
        if not self.hooks.handles:
            raise HeadsieveError("mask evaluator was closed; create a new one")
        values = check_mask(mask, self.facts)
        self.gates.copy_(torch.from_numpy(values))  # in place: the hooks read this tensor
        with eval_mode(self.model), torch.inference_mode():
            out = [self.model(**batch).logits.float().cpu() for batch in self.batches]
        logits = np.empty((len(self.order), out[0].shape[-1]), dtype=np.float32)
        logits[self.order] = torch.cat(out).numpy()
        return logits

    def predict(self, mask) -> np.ndarray:
        """Predicted class ids under ``mask``."""
        return self.logits(mask).argmax(axis=-1)

    def evaluate(self, mask) -> dict:
        """``compute_metrics`` of the task under ``mask``, plus ``n`` (examples) and ``heads_pruned``."""
        pred = self.predict(mask)
        row = compute_metrics(self.data.metric, pred, self.gold)
        row["n"] = int(len(self.gold))
        row["heads_pruned"] = int((np.asarray(mask) == 0).sum())
        return row

    def evaluate_many(self, masks: dict) -> list[dict]:
        """One row per named mask (``{"mask": name, **evaluate(mask)}``), in the dict's order."""
        rows = []
        for name, mask in progress_bar(masks.items(), desc="masks", unit="mask", enabled=self.progress):
            rows.append({"mask": name, **self.evaluate(mask)})
        return rows

    def close(self) -> None:
        """Remove the gate hooks; the model behaves as without gates again."""
        self.hooks.remove()

    def __enter__(self) -> "MaskEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
