"""Head masks over the head space, and the base of every evaluator that scores many masks on one model.

A *mask* is ``{kind: 0/1 array [layers, heads]}`` over the model's :class:`~headsieve.models.headspace.HeadSpace`
(0 = the head is off), in the original head indexing.  For a one-kind model (an encoder) a bare
``[layers, heads]`` array stands for that kind's array.

:class:`MaskedModel` is the lifecycle the classification and translation evaluators share: gates of ones
``{kind: [layers, heads]}`` on the evaluation device, :class:`~headsieve.models.heads.HeadGates` attached once,
each mask written into the gates in place (:meth:`MaskedModel.set_mask`) before the subclass runs the model
(:meth:`MaskedModel.evaluate`), :meth:`MaskedModel.evaluate_many` over named masks, :meth:`MaskedModel.close`
(or the end of a ``with`` block) removing the hooks.  A gate of 0 removes a head's contribution exactly as
physical pruning does (:func:`headsieve.models.heads.prune_heads`; tested), so masking stands in for pruning
when only the scores are wanted.
"""

from __future__ import annotations

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import HeadGates, head_space, heads_by_site
from headsieve.models.headspace import HeadSpace
from headsieve.models.runtime import model_device
from headsieve.progress import progress_bar


def full_mask(space: HeadSpace) -> dict[str, np.ndarray]:
    """The mask with every head on."""
    return {kind: np.ones(shape, dtype=np.float32) for kind, shape in space.shapes.items()}


def mask_from_heads(space: HeadSpace, heads) -> dict[str, np.ndarray]:
    """A 0/1 float32 mask per kind: ones, zeros at ``heads`` (``(kind, layer, head)`` triples; any form
    :func:`headsieve.models.heads.heads_by_site` accepts); a one-line error for a head outside the space."""
    mask = full_mask(space)
    for (kind, layer), hs in heads_by_site(space, heads).items():
        mask[kind][layer, hs] = 0.0
    return mask


def check_mask(space: HeadSpace, mask) -> dict[str, np.ndarray]:
    """``mask`` as ``{kind: float32 array}`` of the space's shapes holding only 0 and 1, else one line.

    A bare array is accepted for a one-kind space (it is that kind's array)."""
    if not isinstance(mask, dict) and space.single is not None:
        mask = {space.single.kind: mask}
    if not isinstance(mask, dict) or set(mask) != set(space.names):
        raise HeadsieveError(f"head mask must give one array per kind ({', '.join(space.names)})")
    checked = {}
    for kind, shape in space.shapes.items():
        values = np.asarray(mask[kind], dtype=np.float32)
        if values.shape != shape:
            raise HeadsieveError(f"{kind} head mask has shape {list(values.shape)}; the model needs {list(shape)}")
        if not np.isin(values, (0.0, 1.0)).all():
            raise HeadsieveError(f"{kind} head mask must hold only 0 (pruned) and 1 (kept)")
        checked[kind] = values
    return checked


def mask_key(mask: dict[str, np.ndarray]) -> bytes:
    """Bytes identifying a mask (for evaluating each distinct mask once), kinds in the mask's order."""
    return b"|".join(np.ascontiguousarray(values, dtype=np.float32).tobytes() for values in mask.values())


def pruned_counts(mask: dict[str, np.ndarray]) -> dict[str, int]:
    """Heads off per kind."""
    return {kind: int((np.asarray(values) == 0).sum()) for kind, values in mask.items()}


class MaskedModel:
    """A model with gates attached, scored under many masks (see the module docstring).

    Subclasses implement :meth:`evaluate` (one row of scores under a mask) and name themselves in ``what``
    (for errors).  ``device``: where the gates live (default: the model's device; the model is not moved).
    """

    what = "mask evaluator"

    def __init__(self, model, device=None, progress: bool = True):
        self.model = model
        self.space = head_space(model)
        self.device = model_device(model) if device is None else torch.device(device)
        self.progress = progress
        self.gates = {kind: torch.ones(*shape, device=self.device) for kind, shape in self.space.shapes.items()}
        self.hooks = HeadGates(model, self.gates).attach()

    def set_mask(self, mask) -> dict[str, np.ndarray]:
        """Write ``mask`` (None: every head on) into the gates in place; returns the checked mask."""
        if not self.hooks.handles:
            raise HeadsieveError(f"{self.what} was closed; create a new one")
        values = full_mask(self.space) if mask is None else check_mask(self.space, mask)
        for kind, gates in self.gates.items():
            gates.copy_(torch.from_numpy(values[kind]))  # in place: the hooks read these tensors
        return values

    def evaluate(self, mask, **options) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate_many(self, masks: dict, **options) -> list[dict]:
        """One row per named mask (``{"mask": name, **evaluate(mask)}``), in the dict's order."""
        rows = []
        for name, mask in progress_bar(masks.items(), desc="masks", unit="mask", enabled=self.progress):
            rows.append({"mask": name, **self.evaluate(mask, **options)})
        return rows

    def close(self) -> None:
        """Remove the gate hooks; the model behaves as without gates again."""
        self.hooks.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
