"""Head importance after Michel, Levy and Neubig (2019), "Are Sixteen Heads Really Better than One?".

Every head ``h`` gets a gate ``xi_h = 1`` (:class:`headsieve.models.heads.HeadGates`); its importance is
the expected sensitivity of the classification loss to the gate, ``I_h = E |dL/dxi_h|``, optionally
normalised per layer by the L2 norm of the layer's importances (as the paper does before pruning
globally).

**Per-batch, not per-example.**  The paper's ``E_x |dL_x/dxi_h|`` takes the absolute value of each
example's gradient.  We take the absolute value of each *batch*'s gradient (the loss is the batch mean),
``mean_b |dL_b/dxi_h|``: the common approximation of widely used re-implementations (e.g. the
transformers ``bertology.py`` example, ``head_mask.grad.abs()`` per batch), which lets opposite-signed
example gradients within a batch cancel; smaller batches come closer to the paper's definition.  Each batch's
gradient is taken on its own (nothing accumulates across batches), and the mean is over batches, not
tokens.

**Training data only.**  Importance decides which heads to prune, so the batches must come from the
training split (or a held-out part of it, :func:`headsieve.tasks.data.split_held_out`), never from the
split the pruned model is evaluated on.  The function cannot tell where batches come from: that is the
caller's responsibility.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import HeadGates, make_gates
from headsieve.models.runtime import eval_mode, model_device, to_device


def normalise_by_layer(importance: np.ndarray) -> np.ndarray:
    """Each layer's row divided by its L2 norm (rows of zeros stay zero)."""
    norms = np.linalg.norm(importance, axis=1, keepdims=True)
    return np.divide(importance, norms, out=np.zeros_like(importance), where=norms > 0)


def head_importance(
    model, batches: Iterable[dict], device=None, normalise: bool = True
) -> np.ndarray:
    """Importance ``[layers, heads]`` (float64, non-negative) of every head of a sequence classifier.

    ``batches``: dicts the model accepts, with ``labels`` (e.g. from
    :func:`headsieve.tasks.data.iter_batches`), drawn from TRAINING data.  ``device``: where batches are
    moved (default: the model's device; the model itself is not moved).  For each batch the loss
    ``model(**batch).loss`` is differentiated with respect to gates of ones; ``|dL/dgate|`` is averaged
    over batches (per-batch absolute values, see the module docstring), then each layer's row is divided
    by its L2 norm if ``normalise``.

    The model runs in eval mode (no dropout, so the result is deterministic); its train/eval modes and
    its parameters' ``requires_grad`` flags are restored, the gate hooks removed, and no gradient is
    written to its parameters.  Heads removed by physical pruning get importance 0.
    """
    importance = gate_importance(model, batches, device, normalise, "training data")
    if len(importance) != 1:
        kinds = ", ".join(importance)
        raise HeadsieveError(f"head importance of a classifier needs a one-kind model (this one has {kinds})")
    return next(iter(importance.values()))


def gate_importance(model, batches: Iterable[dict], device=None, normalise: bool = True, data: str = "batches"):
    """Importance ``{kind: [layers, heads]}`` (float64, non-negative) of every head of every kind:
    :func:`mean_gate_gradients` of gates of ones, each layer's row divided by its L2 norm if ``normalise``
    (within each kind).  ``data`` names the batches in the error raised when there are none."""
    device = model_device(model) if device is None else torch.device(device)
    gates = {kind: g.to(device).requires_grad_(True) for kind, g in make_gates(model).items()}
    means = mean_gate_gradients(model, list(gates.values()), HeadGates(model, gates), batches, device, data)
    result = dict(zip(gates, means))
    return {kind: normalise_by_layer(v) for kind, v in result.items()} if normalise else result


def mean_gate_gradients(model, gates: list[torch.Tensor], hooks, batches: Iterable[dict], device, data: str):
    """``mean over batches of |dL_b/dgate|`` (float64 arrays) for each tensor of ``gates``.

    ``hooks``: the gate hooks (:class:`headsieve.models.heads.HeadGates`) that apply ``gates`` to ``model``,
    attached for the loop and removed after.  ``L_b`` is ``model(**batch).loss``
    with the model in eval mode and its parameters frozen (both restored after; no gradient lands in
    ``param.grad``).  ``data`` names the batches in the error raised when there are none.
    """
    total = [torch.zeros(g.shape, dtype=torch.float64, device=device) for g in gates]
    count = 0
    with eval_mode(model, freeze=True), torch.enable_grad(), hooks:
        for batch in batches:
            loss = model(**to_device(batch, device)).loss
            if loss is None:
                raise HeadsieveError("head importance needs batches with labels (the model returned no loss)")
            for sum_, grad in zip(total, torch.autograd.grad(loss, gates, allow_unused=True)):
                if grad is not None:  # None only when every head (of a kind) is pruned
                    sum_ += grad.detach().abs().to(torch.float64)
            count += 1
    if count == 0:
        raise HeadsieveError(f"head importance needs at least one batch of {data} (got none)")
    return [(sum_ / count).cpu().numpy() for sum_ in total]
