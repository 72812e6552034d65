"""Running a model: which device it is on, moving batches there, eval mode that restores what it changed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def to_device(batch: dict, device) -> dict:
    """The batch with every tensor moved to ``device``."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextmanager
def eval_mode(model, *, freeze: bool = False) -> Iterator[None]:
    """Run the block with ``model`` in eval mode (no dropout); every module's train/eval mode is restored.

    ``freeze``: also turn off ``requires_grad`` of every parameter for the block (gradients then flow only
    to tensors outside the model, such as head gates, and nothing lands in ``param.grad``); the flags are
    restored.
    """
    modes = {module: module.training for module in model.modules()}
    flags = {param: param.requires_grad for param in model.parameters()} if freeze else {}
    try:
        model.eval()
        for param in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)
        for module, mode in modes.items():
            module.training = mode
