"""Head gates through forward pre-hooks: the generic mechanics under :mod:`headsieve.models.heads`.

A gate hook sits on an attention block's output projection and multiplies each head's slice of the
concatenated context (its input) by that head's gate, so it works with any attention implementation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from headsieve.errors import HeadsieveError


def gate_hook(label: str, heads: list[int], head_dim: int, n_heads: int, row_of: Callable[[], torch.Tensor]):
    """A forward pre-hook scaling each present head's context slice by its gate.

    ``label`` names the block in errors ("layer 3", "cross layer 1"); ``heads``: the original indices of
    the heads still present; ``n_heads``: heads of the unpruned block; ``row_of()``: the block's gate row
    ``[n_heads]`` in original indexing, looked up at every call (so gates may change in place or be
    replaced).
    """
    index = torch.tensor(heads, dtype=torch.long)
    width = len(heads) * head_dim

    def hook(module, args):
        context = args[0]
        if context.shape[-1] != width:
            raise HeadsieveError(
                f"{label}: attention context has width {context.shape[-1]}, the gates expect {width} "
                f"(model pruned after the gates were applied? apply them again)"
            )
        row = row_of()
        if len(heads) != n_heads:
            row = row.index_select(0, index.to(row.device))
        scale = row.to(device=context.device, dtype=context.dtype).repeat_interleave(head_dim)
        return (context * scale,) + tuple(args[1:])

    return hook


class GateHooks:
    """Gates applied through hooks: a context manager, or :meth:`attach` and :meth:`remove`.

    Subclasses define :meth:`check` (fail with one line on gates of the wrong form) and :meth:`hooks`
    (the ``(module, pre-hook)`` pairs to register).
    """

    def __init__(self, model, gates):
        self.check(model, gates)
        self.model = model
        self.gates = gates
        self.handles: list = []

    @staticmethod
    def check(model, gates) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def hooks(self) -> list[tuple[nn.Module, Callable]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach(self):
        """Register the hooks (once); returns self."""
        if not self.handles:
            self.handles = [module.register_forward_pre_hook(hook) for module, hook in self.hooks()]
        return self

    def remove(self) -> None:
        """Remove the hooks; the model behaves as without gates again."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.remove()
