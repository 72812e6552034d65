"""Evaluate many head masks on one loaded sequence classifier, in one process.

:class:`MaskEvaluator` (a :class:`headsieve.models.masking.MaskedModel`) collates the evaluation batches once
(kept in memory, on the device) and attaches the head gates once; each :meth:`MaskEvaluator.evaluate` call
only writes the mask into the gates in place and runs the batches.  A gate of 0 removes the head's
contribution exactly as physical pruning does (:func:`headsieve.models.heads.prune_heads`; tested), so
masking stands in for pruning when only the metrics are wanted.  Masks: ``{"encoder": 0/1 array [layers,
heads]}`` (:func:`headsieve.models.masking.mask_from_heads`) or the bare array.
"""

from __future__ import annotations

import numpy as np
import torch

from headsieve.batching import iter_batches
from headsieve.errors import HeadsieveError
from headsieve.models.masking import MaskedModel, check_mask, pruned_counts
from headsieve.models.runtime import batch_options, eval_mode, to_device
from headsieve.tasks.data import TaskData
from headsieve.tasks.metrics import compute_metrics


class MaskEvaluator(MaskedModel):
    """Metrics of one model under many head masks, without reloading the model or re-encoding the data.

    ``model``: a sequence classifier (left where it is; ``device`` defaults to its device).  ``data``:
    the evaluation split.  The gate hooks stay attached until :meth:`close` (or the end of a ``with``
    block); with a mask of ones the model computes exactly what it computes without them.
    """

    what = "mask evaluator"

    def __init__(self, model, data: TaskData, batch_size: int, device=None, progress: bool = True):
        if not data.examples:
            raise HeadsieveError(f"task '{data.task}': no evaluation examples")
        super().__init__(model, device, progress)
        self.data = data
        pad_id, types = batch_options(model)
        # batches of similar length (less padding); logits are put back in the data's order
        self.order = np.argsort([len(e["input_ids"]) for e in data.examples], kind="stable")
        self.batches = [  # labels left out: the gold labels are in self.gold, and no loss is needed
            to_device({k: v for k, v in batch.items() if k != "labels"}, self.device)
            for batch in iter_batches(data.examples, batch_size, pad_id, types, order=self.order)
        ]
        self.gold = np.asarray([example["label"] for example in data.examples])

    def logits(self, mask) -> np.ndarray:
        """Logits ``[examples, classes]`` of the evaluation data with the heads where ``mask`` is 0 off."""
        self.set_mask(mask)
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
        row["heads_pruned"] = sum(pruned_counts(check_mask(self.space, mask)).values())
        return row
