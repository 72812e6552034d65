"""Layer-wise views of an encoder for the multilingual study: masks of whole layers and bands, each layer's
outputs, and the linear CKA of every layer before against after fine-tuning."""

from __future__ import annotations

import numpy as np

from headsieve.errors import HeadsieveError


def layer_masks(n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """The unpruned model ('none'), each layer alone ('layer:L') and each band of layers ('band:B') masked."""
    from headsieve.models.headspace import BANDS, HeadSpace
    from headsieve.models.masking import mask_from_heads
    from headsieve.pruning.strategies import select_heads

    space = HeadSpace.encoder(n_layers, n_heads)
    names = ["none"] + [f"layer:{layer}" for layer in range(n_layers)] + [f"band:{band}" for band in BANDS]
    masks = {}
    for name in names:
        heads = [] if name == "none" else select_heads(name, space, 0.0, seed=0)
        masks[name] = mask_from_heads(space, heads)
    return masks


def layer_outputs(model, data, batch_size: int, device) -> list[np.ndarray]:
    """Each layer's output on ``data`` (index 0: the embeddings), as ``[tokens, hidden]`` arrays over the
    non-padding tokens of every example, in the data's order."""
    import torch

    from headsieve.batching import iter_batches
    from headsieve.models.runtime import batch_options, eval_mode, to_device

    pad_id, types = batch_options(model)
    parts: list[list[np.ndarray]] = []
    with eval_mode(model), torch.inference_mode():
        for batch in iter_batches(data.examples, batch_size, pad_id, types):
            batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            states = model(**batch, output_hidden_states=True).hidden_states
            keep = batch["attention_mask"].bool()
            for k, h in enumerate(states):
                if len(parts) <= k:
                    parts.append([])
                parts[k].append(h[keep].double().cpu().numpy())
    return [np.concatenate(p) for p in parts]


def layer_cka(before, after, data, batch_size: int, device) -> list[float]:
    """Linear CKA of every layer's outputs, ``before`` against ``after`` fine-tuning, on the same inputs."""
    from headsieve.multilingual.analysis import linear_cka

    xs = layer_outputs(before, data, batch_size, device)
    ys = layer_outputs(after, data, batch_size, device)
    if len(xs) != len(ys):
        raise HeadsieveError(f"CKA: the pre-trained model has {len(xs) - 1} layers, the fine-tuned one {len(ys) - 1}")
    return [linear_cka(x, y) for x, y in zip(xs, ys)]
