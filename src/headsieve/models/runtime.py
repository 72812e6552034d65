"""Running a model: which device it is on, moving batches there, eval mode that restores what it changed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from headsieve.models.families import family_of


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


def uses_token_types(model) -> bool:
    """Whether the model has segment (token type) embeddings worth feeding: its family description takes
    them (:mod:`headsieve.models.families`; DistilBERT takes none) and ``type_vocab_size`` is above 1."""
    config = model.config
    return family_of(config).token_types and int(getattr(config, "type_vocab_size", 0) or 0) > 1


def batch_options(model) -> tuple[int, bool]:
    """(pad id, whether to pass token_type_ids) for batches fed to ``model``: one rule for every stage."""
    pad = getattr(model.config, "pad_token_id", None)
    return (int(pad) if pad is not None else 0), uses_token_types(model)
