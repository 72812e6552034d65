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
training split (or a held-out part of it, :func:`headsieve.pruning.data.split_held_out`), never from the
split the pruned model is evaluated on.  The function cannot tell where batches come from: that is the
caller's responsibility.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import HeadGates, head_shape


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def to_device(batch: dict, device) -> dict:
    """The batch with every tensor moved to ``device``."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def normalise_by_layer(importance: np.ndarray) -> np.ndarray:
    """Each layer's row divided by its L2 norm (rows of zeros stay zero)."""
    norms = np.linalg.norm(importance, axis=1, keepdims=True)
    return np.divide(importance, norms, out=np.zeros_like(importance), where=norms > 0)


def head_importance(
    model, batches: Iterable[dict], device=None, normalise: bool = True
) -> np.ndarray:
    """Importance ``[layers, heads]`` (float64, non-negative) of every head of a sequence classifier.

    ``batches``: dicts the model accepts, with ``labels`` (e.g. from
    :func:`headsieve.pruning.data.iter_batches`), drawn from TRAINING data.  ``device``: where batches are
    moved (default: the model's device; the model itself is not moved).  For each batch the loss
    ``model(**batch).loss`` is differentiated with respect to gates of ones; ``|dL/dgate|`` is averaged
    over batches (per-batch absolute values, see the module docstring), then each layer's row is divided
    by its L2 norm if ``normalise``.

    The model runs in eval mode (no dropout, so the result is deterministic); its train/eval modes and
    its parameters' ``requires_grad`` flags are restored, the gate hooks removed, and no gradient is
    written to its parameters.  Heads removed by physical pruning get importance 0.
    """
    device = model_device(model) if device is None else torch.device(device)
    n_layers, n_heads = head_shape(model)
    gates = torch.ones(n_layers, n_heads, device=device, requires_grad=True)
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64, device=device)
    modes = {module: module.training for module in model.modules()}
    flags = {param: param.requires_grad for param in model.parameters()}
    count = 0
    try:
        model.eval()
        for param in flags:  # only the gates need gradients: cheaper, and nothing lands in param.grad
            param.requires_grad_(False)
        with torch.enable_grad(), HeadGates(model, gates):
            for batch in batches:
                loss = model(**to_device(batch, device)).loss
                if loss is None:
                    raise HeadsieveError("head importance needs batches with labels (the model returned no loss)")
                (grad,) = torch.autograd.grad(loss, gates, allow_unused=True)
                if grad is not None:  # None only when every head is pruned
                    total += grad.detach().abs().to(torch.float64)
                count += 1
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)
        for module, mode in modes.items():
            module.training = mode
    if count == 0:
        raise HeadsieveError("head importance needs at least one batch of training data (got none)")
    importance = (total / count).cpu().numpy()
    return normalise_by_layer(importance) if normalise else importance
