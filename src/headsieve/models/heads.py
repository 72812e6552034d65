"""Head gates (masking) and physical head pruning for BERT-family encoders.

transformers 5.x dropped ``head_mask`` and ``prune_heads``; this module puts both back, for the model types
in :data:`SUPPORTED_TYPES` (base models and their task wrappers such as ``*ForSequenceClassification``).

* **Gates** (:class:`HeadGates`, :func:`apply_head_gates`): a float tensor ``[n_layers, n_heads]`` whose
  entries multiply each head's slice of the concatenated attention context, through a forward pre-hook on
  the layer's attention output projection (BERT/RoBERTa/XLM-R/ELECTRA/CamemBERT:
  ``layer.attention.output.dense``; DistilBERT: ``layer.attention.out_lin``).  The hook sits after the
  attention function, so it works with eager, sdpa or any other attention implementation.  Gates may
  require grad: ``dL/dgate`` gives Michel et al. (2019) head importance.
* **Pruning** (:func:`prune_heads`): removes the heads' rows from the query/key/value projections and their
  input columns from the output projection, in place.  Pruning every head of a layer leaves an attention
  block whose output is the output projection's bias.  Head indices are always the *original* ones; the
  pruned set is recorded in ``config.headsieve_pruned_heads`` (``{"layer": [heads]}``), so pruning is
  cumulative and survives :func:`save_pruned` / :func:`load_pruned`.

Gates always have the model's original shape; on a pruned model the entries of pruned heads are unused
(their gradient is zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headsieve.errors import HeadsieveError
from headsieve.models.gating import GateHooks, gate_hook
from headsieve.models.load import ENCODER_TYPES, model_shape
from headsieve.models.surgery import build_unpruned, check_widths, load_weights, save_safetensors, slice_heads
from headsieve.models.surgery import weight_files

#: model types whose attention we can gate and prune: the encoders headsieve loads
SUPPORTED_TYPES = ENCODER_TYPES

#: config attribute recording the pruned heads, ``{"layer": [original head indices]}``
PRUNED_KEY = "headsieve_pruned_heads"

#: names of the query/key/value/output projections, per family
_BERT_NAMES = ("query", "key", "value")
_DISTILBERT_NAMES = ("q_lin", "k_lin", "v_lin")


@dataclass(frozen=True)
class AttentionSite:
    """One layer's self-attention: the module holding the projections, the projections and the head size."""

    layer: int
    attention: nn.Module  #: BertSelfAttention-like (BERT family) or DistilBertSelfAttention
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  #: the output projection whose input is the concatenated per-head context
    head_dim: int
    family: str  #: "bert" (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA) or "distilbert"


# ----------------------------------------------------------------------------------------------- discovery


def model_type(model) -> str:
    """The config's ``model_type``, checked to be one we can gate and prune."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        name = kind or type(model).__name__
        raise HeadsieveError(
            f"model type '{name}' cannot be head-masked or pruned (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    return kind


def encoder_layers(model) -> nn.ModuleList:
    """The encoder's layer list, for a base model or a task wrapper (found via ``model.base_model``)."""
    kind = model_type(model)
    base = getattr(model, "base_model", model)
    container = getattr(base, "transformer" if kind == "distilbert" else "encoder", None)
    layers = getattr(container, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise HeadsieveError(f"model type '{kind}' ({type(model).__name__}): no encoder layer list found")
    return layers


def _site_for_layer(index: int, layer: nn.Module, kind: str) -> AttentionSite:
    """The attention site of one encoder layer."""
    if kind == "distilbert":
        attention, names, output = layer.attention, _DISTILBERT_NAMES, layer.attention.out_lin
        family = "distilbert"
    else:
        attention, names, output = layer.attention.self, _BERT_NAMES, layer.attention.output.dense
        family = "bert"
    query, key, value = (getattr(attention, name) for name in names)
    return AttentionSite(index, attention, query, key, value, output, int(attention.attention_head_size), family)


def attention_sites(model) -> list[AttentionSite]:
    """The self-attention site (projections, head size) of every encoder layer, in layer order."""
    kind = model_type(model)
    try:
        return [_site_for_layer(i, layer, kind) for i, layer in enumerate(encoder_layers(model))]
    except AttributeError as err:
        raise HeadsieveError(f"model type '{kind}' ({type(model).__name__}): unexpected layer layout ({err})") from None


def head_shape(model) -> tuple[int, int]:
    """(layers, heads per layer) of the *unpruned* model, from its config."""
    return model_shape(model)


# --------------------------------------------------------------------------------------------- head record


def pruned_heads(model) -> dict[int, list[int]]:
    """Pruned heads per layer (original indices), from ``config.headsieve_pruned_heads``; empty layers left out."""
    record = getattr(model.config, PRUNED_KEY, None) or {}
    return {int(layer): sorted(int(h) for h in heads) for layer, heads in record.items() if heads}


def _set_pruned_heads(model, pruned: dict[int, list[int]]) -> None:
    """Store the pruned-heads record in the config (JSON-serialisable: string keys, sorted int lists)."""
    record = {str(layer): sorted(int(h) for h in heads) for layer, heads in sorted(pruned.items()) if heads}
    setattr(model.config, PRUNED_KEY, record)


def remaining_heads(model) -> list[list[int]]:
    """Original indices of the heads still present, per layer."""
    n_layers, n_heads = head_shape(model)
    pruned = pruned_heads(model)
    return [[h for h in range(n_heads) if h not in pruned.get(layer, ())] for layer in range(n_layers)]


def head_counts(model) -> list[int]:
    """Number of heads left in each layer, read from the query projection's shape."""
    return [site.query.out_features // site.head_dim for site in attention_sites(model)]


def _check_record(model, sites: list[AttentionSite]) -> list[list[int]]:
    """Remaining heads per layer, checked against the actual projection shapes."""
    remaining = remaining_heads(model)
    for site, heads in zip(sites, remaining):
        check_widths(f"layer {site.layer}", site, heads, PRUNED_KEY)
    return remaining


# --------------------------------------------------------------------------------------------------- gates


def make_gates(model, off=(), *, requires_grad: bool = False, dtype=torch.float32) -> torch.Tensor:
    """Gates of the model's original shape: ones, with zeros at the heads ``off`` (same forms as :func:`prune_heads`)."""
    n_layers, n_heads = head_shape(model)
    gates = torch.ones(n_layers, n_heads, dtype=dtype)
    for layer, heads in normalise_heads(model, off).items():
        gates[layer, heads] = 0.0
    return gates.requires_grad_(requires_grad)


def _check_gates(model, gates) -> None:
    """Fail with one line unless ``gates`` is a float tensor of the model's original [layers, heads] shape."""
    shape = head_shape(model)
    if not isinstance(gates, torch.Tensor) or not gates.is_floating_point():
        raise HeadsieveError(f"head gates must be a float tensor of shape {list(shape)}, got {type(gates).__name__}")
    if tuple(gates.shape) != shape:
        raise HeadsieveError(f"head gates have shape {list(gates.shape)}; the model needs {list(shape)} (layers, heads)")


class HeadGates(GateHooks):
    """Per-head gates applied through forward pre-hooks on the attention output projections.

    Use as a context manager (``with HeadGates(model, gates): ...``) or call :meth:`attach` and
    :meth:`remove`.  ``gates`` is ``[n_layers, n_heads]`` in the model's original head indexing; it is read at
    every forward pass, so it may be changed in place or require grad.
    """

    check = staticmethod(_check_gates)

    def hooks(self):
        sites = attention_sites(self.model)
        remaining = _check_record(self.model, sites)
        n_heads = head_shape(self.model)[1]
        hooks = []
        for site, heads in zip(sites, remaining):
            row = lambda layer=site.layer: self.gates[layer]  # noqa: E731 - read at every forward pass
            hooks.append((site.output, gate_hook(f"layer {site.layer}", heads, site.head_dim, n_heads, row)))
        return hooks


def apply_head_gates(model, gates: torch.Tensor) -> HeadGates:
    """Attach gates to ``model`` and return the :class:`HeadGates` (call ``.remove()`` or use it in ``with``)."""
    return HeadGates(model, gates).attach()


# ------------------------------------------------------------------------------------------------- pruning


def normalise_heads(model, heads) -> dict[int, list[int]]:
    """``{layer: [heads]}`` or ``[(layer, head), ...]`` as a checked ``{layer: sorted heads}`` dict."""
    n_layers, n_heads = head_shape(model)
    pairs = [(layer, h) for layer, hs in heads.items() for h in hs] if isinstance(heads, dict) else list(heads)
    result: dict[int, set[int]] = {}
    for pair in pairs:
        try:
            layer, head = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise HeadsieveError(f"head {pair!r} is not a (layer, head) pair of integers") from None
        if not 0 <= layer < n_layers:
            raise HeadsieveError(f"layer index {layer} out of range (the model has {n_layers} layers)")
        if not 0 <= head < n_heads:
            raise HeadsieveError(f"head index {head} (layer {layer}) out of range (the model has {n_heads} heads)")
        result.setdefault(layer, set()).add(head)
    return {layer: sorted(hs) for layer, hs in sorted(result.items())}


def _headless_bert_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """Self-attention with no heads left: an empty context, so the output projection yields its bias."""
    context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
    return context, _empty_weights(self, hidden_states)


def _headless_distilbert_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """DistilBERT self-attention with no heads left: the output projection of an empty context (its bias)."""
    context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
    return self.out_lin(context), _empty_weights(self, hidden_states)


def _empty_weights(module, hidden_states):
    """Attention probabilities of zero heads, ``[batch, 0, seq, seq]`` under eager attention, else None."""
    if getattr(module.config, "_attn_implementation", "eager") != "eager":
        return None
    batch, seq = hidden_states.shape[0], hidden_states.shape[1]
    return hidden_states.new_zeros(batch, 0, seq, seq)


_HEADLESS_CLASSES: dict[type, type] = {}


def _make_headless(site: AttentionSite) -> None:
    """Switch the attention module to a subclass whose forward skips attention (all heads pruned).

    A subclass keeps ``isinstance`` checks (transformers' attention-output recording) and registered hooks.
    """
    cls = type(site.attention)
    if cls in _HEADLESS_CLASSES.values():
        return
    if cls not in _HEADLESS_CLASSES:
        forward = _headless_distilbert_forward if site.family == "distilbert" else _headless_bert_forward
        _HEADLESS_CLASSES[cls] = type(f"Headless{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})
    site.attention.__class__ = _HEADLESS_CLASSES[cls]


def _set_head_count(site: AttentionSite, n_heads: int) -> None:
    """Update the attention module's head-count attributes after pruning."""
    if site.family == "distilbert":
        site.attention.n_heads = n_heads
    else:
        site.attention.num_attention_heads = n_heads
        site.attention.all_head_size = n_heads * site.head_dim


def _prune_site(site: AttentionSite, current: list[int], drop: list[int]) -> list[int]:
    """Remove the heads ``drop`` (original indices) from one layer with heads ``current``; returns those left."""
    keep = slice_heads(site, current, drop)
    _set_head_count(site, len(keep))
    if not keep:
        _make_headless(site)
    return keep


def prune_heads(model, heads) -> dict[int, list[int]]:
    """Physically remove heads (``{layer: [heads]}`` or ``[(layer, head), ...]``, original indices), in place.

    Heads pruned before are skipped; returns the heads newly removed per layer.  The record in
    ``config.headsieve_pruned_heads`` is updated.  Re-create optimizers afterwards (parameters are replaced).
    """
    request = normalise_heads(model, heads)
    sites = attention_sites(model)
    remaining = _check_record(model, sites)
    record = pruned_heads(model)
    removed: dict[int, list[int]] = {}
    for layer, drop in request.items():
        drop = [h for h in drop if h in remaining[layer]]
        if not drop:
            continue
        _prune_site(sites[layer], remaining[layer], drop)
        record[layer] = sorted(set(record.get(layer, [])) | set(drop))
        removed[layer] = drop
    _set_pruned_heads(model, record)
    return removed


# ------------------------------------------------------------------------------------------- save and load


def save_pruned(model, folder: str) -> None:
    """Save with ``save_pretrained`` (safetensors only); the config carries the pruned-heads record."""
    _check_record(model, attention_sites(model))
    _set_pruned_heads(model, pruned_heads(model))  # normalise the record's form before it is written
    save_safetensors(model, folder)


def load_pruned(folder: str, model_class=None, *, attn_implementation: str = "eager", device="cpu"):
    """Load a model saved by :func:`save_pruned`: build it from config, prune the recorded heads, load weights.

    ``model_class`` is a transformers model class or auto class; by default the config's architecture.
    The model is returned in eval mode.
    """
    model, record = build_unpruned(folder, PRUNED_KEY, model_class, attn_implementation)
    prune_heads(model, record)
    load_weights(model, weight_files(folder))
    return model.to(device).eval()
