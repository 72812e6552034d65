"""Physical head pruning and saving pruned models: the generic mechanics under :mod:`headsieve.models.heads`.

A *site* here is anything with ``query``, ``key``, ``value`` (the projections whose output features are the
heads' concatenated slices), ``output`` (the projection whose input features are), ``head_dim``,
``group_size`` (query heads per key-value head; 1 without grouped-query attention) and ``layout`` (a key of
:data:`LAYOUTS`: separate linear projections, or GPT-2's fused ``Conv1D``).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
from torch import nn

from headsieve.errors import HeadsieveError

#: file endings of pickle-based weight files, which a saved pruned model must not hold
PICKLE_ENDINGS = (".bin", ".pt", ".pth", ".pkl")


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters, optionally only those that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def width_index(positions: list[int], head_dim: int, device) -> torch.Tensor:
    """Indices of the features (rows/columns) that belong to heads at ``positions`` (current indexing)."""
    index = [p * head_dim + d for p in positions for d in range(head_dim)]
    return torch.tensor(index, dtype=torch.long, device=device)


def keep_features(module: nn.Module, index: torch.Tensor, weight_dim: int, with_bias: bool) -> None:
    """Keep only the features ``index`` along dimension ``weight_dim`` of ``module.weight`` (and of its bias if
    ``with_bias`` and it has one), in place; the caller updates the module's size attributes."""
    requires_grad = module.weight.requires_grad
    with torch.no_grad():
        module.weight = nn.Parameter(module.weight.index_select(weight_dim, index).clone(), requires_grad=requires_grad)
        if with_bias and module.bias is not None:
            module.bias = nn.Parameter(module.bias.index_select(0, index).clone(), requires_grad=requires_grad)


#: how keeping output or input features edits a module: (weight dimension, bias cut too, size attribute), for
#: torch's Linear (weight [out, in]) and transformers' Conv1D (weight [in, out])
FEATURE_LAYOUT = {
    ("linear", "out"): (0, True, "out_features"),
    ("linear", "in"): (1, False, "in_features"),
    ("conv1d", "out"): (1, True, "nf"),
    ("conv1d", "in"): (0, False, "nx"),
}


def keep(module: nn.Module, index: torch.Tensor, side: str) -> None:
    """Keep only the output (``side="out"``) or input (``"in"``) features ``index`` of an ``nn.Linear`` or a
    transformers ``Conv1D``, in place: the weight, the bias with the outputs, the size attribute."""
    dim, with_bias, size = FEATURE_LAYOUT["linear" if isinstance(module, nn.Linear) else "conv1d", side]
    keep_features(module, index, dim, with_bias)
    setattr(module, size, int(index.numel()))


def kv_groups(heads: list[int], group_size: int) -> list[int]:
    """The key-value heads (original indices) read by the query heads ``heads`` (original indices) under
    grouped-query attention with ``group_size`` query heads per key-value head (1: no grouping)."""
    return sorted({h // group_size for h in heads})


def _cut_separate(site, q_index: torch.Tensor, kv_index: torch.Tensor) -> None:
    """Three linear projections (rows = heads) and a linear output projection (columns = heads)."""
    keep(site.query, q_index, "out")
    keep(site.key, kv_index, "out")
    keep(site.value, kv_index, "out")
    keep(site.output, q_index, "in")


def _cut_fused_conv1d(site, q_index: torch.Tensor, kv_index: torch.Tensor) -> None:
    """One Conv1D whose output columns are the query, key and value thirds (GPT-2's ``c_attn``; ``site.query``),
    and a Conv1D output projection whose input rows are the heads (``c_proj``)."""
    q_width, kv_width = site.output.weight.shape[0], (site.query.weight.shape[1] - site.output.weight.shape[0]) // 2
    index = torch.cat([q_index, q_width + kv_index, q_width + kv_width + kv_index])
    keep(site.query, index, "out")
    keep(site.output, q_index, "in")


def _widths_separate(site) -> tuple[int, int, int, int]:
    return site.query.out_features, site.output.in_features, site.key.out_features, site.value.out_features


def _widths_fused_conv1d(site) -> tuple[int, int, int, int]:
    q_width = site.output.weight.shape[0]
    kv_width = (site.query.weight.shape[1] - q_width) // 2
    return q_width, q_width, kv_width, kv_width


#: how projections hold the heads (a family description's ``projection_layout``): (cut, widths) where
#: ``cut(site, q_index, kv_index)`` keeps the query/output features ``q_index`` and the key/value features
#: ``kv_index``, and ``widths(site)`` is (query, output input, key, value) widths
LAYOUTS = {
    "separate": (_cut_separate, _widths_separate),
    "fused_conv1d": (_cut_fused_conv1d, _widths_fused_conv1d),
}


def query_width(site) -> int:
    """Width of the site's concatenated query heads (as its projections are now)."""
    return int(LAYOUTS[site.layout][1](site)[0])


def slice_heads(site, current: list[int], drop: list[int]) -> list[int]:
    """Remove the heads ``drop`` (original indices) from the projections of a site whose heads are
    ``current``: their query features and output-projection inputs; under grouped-query attention
    (``site.group_size`` > 1) a key-value head's key and value features go once none of its query heads is
    left.  Returns the heads left; the caller updates the attention module's head-count attributes."""
    keep = [h for h in current if h not in drop]
    index = width_index([current.index(h) for h in keep], site.head_dim, site.query.weight.device)
    kv_index = index
    if site.group_size > 1:
        groups = kv_groups(current, site.group_size)
        kept = [groups.index(g) for g in kv_groups(keep, site.group_size)]
        kv_index = width_index(kept, site.head_dim, site.query.weight.device)
    LAYOUTS[site.layout][0](site, index, kv_index)
    return keep


def check_widths(label: str, site, heads: list[int], key: str) -> None:
    """Fail with one line unless the site's projections are as wide as ``heads`` say."""
    widths = LAYOUTS[site.layout][1](site)
    kv_width = len(kv_groups(heads, site.group_size)) * site.head_dim
    if tuple(widths) != (len(heads) * site.head_dim,) * 2 + (kv_width,) * 2:
        raise HeadsieveError(
            f"{label}: projection widths {sorted(set(widths))} do not match the {len(heads)} heads recorded in "
            f"config.{key} (load pruned models with load_pruned)"
        )


# ------------------------------------------------------------------------------------------- save and load


def save_safetensors(model, folder: str) -> None:
    """``save_pretrained`` (transformers 5 writes safetensors only), checked: no pickle weight file in ``folder``."""
    model.save_pretrained(folder)
    leftovers = [f for f in os.listdir(folder) if f.endswith(PICKLE_ENDINGS)]
    if leftovers:
        raise HeadsieveError(f"'{folder}' holds pickle weight files {leftovers}; use an empty folder")


def weight_files(folder: str) -> list[str]:
    """The safetensors files of a saved model (one file, or the shards named in the index)."""
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    raise HeadsieveError(f"'{folder}' has no model.safetensors (save pruned models with save_pruned)")


def load_weights(model, files: list[str], never_saved: Callable[[str], bool] = lambda key: False) -> None:
    """Load safetensors files into ``model``; only keys tied to loaded parameters, and keys for which
    ``never_saved(key)`` is true, may be missing."""
    from safetensors.torch import load_file

    state = {}
    for path in files:
        state.update(load_file(path))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise HeadsieveError(f"saved weights have keys the model lacks: {', '.join(result.unexpected_keys[:5])}")
    params = model.state_dict(keep_vars=True)
    loaded = {params[k].data_ptr() for k in state if k in params and params[k].numel()}
    missing = [
        k for k in result.missing_keys
        if params[k].numel() and params[k].data_ptr() not in loaded and not never_saved(k)
    ]  # fmt: skip
    if missing:
        raise HeadsieveError(f"saved weights lack the model's keys: {', '.join(missing[:5])}")


def model_class(config, given=None):
    """The class to build: the one ``given``, else the config's first architecture, else ``AutoModel``."""
    import transformers

    if given is not None:
        return given
    for name in getattr(config, "architectures", None) or []:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


def build_unpruned(folder: str, key_of: Callable, given_class=None, attn_implementation: str = "eager"):
    """Build the model saved in ``folder`` from its config, with no weights loaded and no heads pruned.

    Returns ``(model, record)``: the pruned-heads record read from ``config.<key_of(config)>`` (now emptied
    in the model's config, for the caller to prune the model and load the weights).
    """
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise HeadsieveError(f"'{folder}' has no config.json (not a saved model folder)")
    config = AutoConfig.from_pretrained(folder)
    key = key_of(config)
    record = getattr(config, key, None) or {}
    setattr(config, key, {})
    cls = model_class(config, given_class)
    build = cls.from_config if hasattr(cls, "_model_mapping") else cls._from_config
    return build(config, attn_implementation=attn_implementation), record
