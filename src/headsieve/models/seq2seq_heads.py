"""Head gates (masking) and physical head pruning for encoder-decoder (translation) models.

The encoder-decoder counterpart of :mod:`headsieve.models.heads` (same API style), for the model types
in :data:`SUPPORTED_TYPES`: the BART family (``marian``, ``bart``, ``mbart``, ``pegasus``; attention
projections ``q_proj/k_proj/v_proj/out_proj``, ``num_heads``, ``head_dim``) and the T5 family (``t5``,
``mt5``; ``q/k/v/o``, ``n_heads``, ``key_value_proj_dim``, relative position bias), base models or
``*ForConditionalGeneration``.

**Sites.** Every attention block is a *site* keyed by ``(kind, layer)`` with ``kind`` one of
:data:`KINDS`: ``"encoder"`` (encoder self-attention), ``"decoder"`` (decoder self-attention) and
``"cross"`` (encoder-decoder attention of a decoder layer).  A head is ``(kind, layer, head)``.

**Gates** are a dict ``{kind: float tensor [layers, heads]}`` (kinds may differ in shape: Marian and BART
allow different encoder and decoder layer and head counts), always in the *original* head indexing.  A
forward pre-hook on each site's output projection multiplies each head's slice of the concatenated
context by its gate (:class:`HeadGates`), so it works with any attention implementation and with the KV
cache (a gate acts after the cached keys and values are used).  Gates may require grad (Michel et al.
importance).  :func:`stack_gates` turns them into one ``[3, L, H]`` tensor when the shapes agree.

**Pruning** (:func:`prune_heads`) removes heads' rows from the query/key/value projections and their
columns from the output projection, in place; the pruned set is recorded in
``config.headsieve_pruned_seq2seq_heads`` (``{kind: {"layer": [heads]}}``), so pruning is cumulative and
survives :func:`save_pruned` / :func:`load_pruned` (safetensors only).  Pruning every head of a block
leaves a block whose output is the output projection's bias (zero for T5).  Such a headless block still
writes one all-zero placeholder head into the KV cache, because transformers reads the cached sequence
length from the cached keys (and reports 0 when they have no elements): generation with
``use_cache=True`` then keeps its positions right.

**T5's relative position bias.**  Only the first self-attention layer of each stack owns the embedding
``relative_attention_bias`` (``[buckets, heads]``); the other layers reuse the bias it computed, head for
head.  Once a T5 model is pruned, the bias passed between layers lives in a *stack space*: the embedding
keeps the columns of the heads (original indices) still present in at least one self-attention layer of
the stack, and every self-attention layer selects its own heads' columns at run time (attribute
``headsieve_bias_heads`` on the modules; :class:`_PrunedT5` below).  A head pruned in layer 0 but kept
in layer 1 thus keeps its bias column, and layer 0 itself may lose all its heads: it still computes the
stack's bias.  The cross-attention bias of T5 is zero; pruned cross-attention blocks make their own.
Masking and pruning give the same outputs (tested in ``tests/test_seq2seq_heads.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headsieve.errors import HeadsieveError
from headsieve.models.gating import GateHooks, gate_hook
from headsieve.models.surgery import build_unpruned, check_widths, load_weights, save_safetensors, slice_heads
from headsieve.models.surgery import weight_files

#: the three kinds of attention of an encoder-decoder model
KINDS = ("encoder", "decoder", "cross")

#: model types with BART-like attention (q_proj/k_proj/v_proj/out_proj)
BART_TYPES = ("marian", "bart", "mbart", "pegasus")
#: model types with T5-like attention (q/k/v/o, relative position bias)
T5_TYPES = ("t5", "mt5")
#: model types whose attention we can gate and prune
SUPPORTED_TYPES = BART_TYPES + T5_TYPES

#: config attribute recording the pruned heads, ``{kind: {"layer": [original head indices]}}``
PRUNED_KEY = "headsieve_pruned_seq2seq_heads"

Key = tuple[str, int]  #: a site, (kind, layer)
Pruned = dict[Key, list[int]]  #: heads per site


@dataclass(frozen=True)
class Site:
    """One attention block: its module, projections and head size."""

    kind: str  #: "encoder", "decoder" or "cross"
    layer: int
    attention: nn.Module  #: BartAttention-like or T5Attention-like
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  #: the output projection whose input is the concatenated per-head context
    head_dim: int
    family: str  #: "bart" or "t5"

    @property
    def site(self) -> Key:
        return (self.kind, self.layer)


# ----------------------------------------------------------------------------------------------- discovery


def model_family(model) -> str:
    """``"bart"`` or ``"t5"``, from the config's ``model_type``; other types fail with one line."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind in BART_TYPES:
        return "bart"
    if kind in T5_TYPES:
        return "t5"
    name = kind or type(model).__name__
    raise HeadsieveError(
        f"model type '{name}' cannot be head-masked or pruned as an encoder-decoder "
        f"(supported: {', '.join(SUPPORTED_TYPES)})"
    )


def _stacks(model) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The encoder's and the decoder's layer lists (``layers`` for BART-like, ``block`` for T5-like)."""
    family = model_family(model)
    base = getattr(model, "base_model", model)
    name = "block" if family == "t5" else "layers"
    found = []
    for part in ("encoder", "decoder"):
        layers = getattr(getattr(base, part, None), name, None)
        if not isinstance(layers, nn.ModuleList):
            raise HeadsieveError(
                f"model type '{model.config.model_type}' ({type(model).__name__}): no {part} layer list"
            )
        found.append(layers)
    return found[0], found[1]


def _attention_module(layer: nn.Module, kind: str, family: str) -> nn.Module:
    """The attention module of one kind in an encoder or decoder layer."""
    if family == "t5":
        return layer.layer[1].EncDecAttention if kind == "cross" else layer.layer[0].SelfAttention
    return layer.encoder_attn if kind == "cross" else layer.self_attn


def _make_site(kind: str, index: int, module: nn.Module, family: str) -> Site:
    if family == "t5":
        names, head_dim = ("q", "k", "v", "o"), int(module.key_value_proj_dim)
    else:
        names, head_dim = ("q_proj", "k_proj", "v_proj", "out_proj"), int(module.head_dim)
    query, key, value, output = (getattr(module, n) for n in names)
    return Site(kind, index, module, query, key, value, output, head_dim, family)


def attention_sites(model) -> list[Site]:
    """Every attention block: encoder self-attention, then decoder self-attention, then cross-attention."""
    family = model_family(model)
    encoder, decoder = _stacks(model)
    sites = []
    try:
        for kind, layers in (("encoder", encoder), ("decoder", decoder), ("cross", decoder)):
            sites += [
                _make_site(kind, i, _attention_module(layer, kind, family), family) for i, layer in enumerate(layers)
            ]
    except AttributeError as err:
        raise HeadsieveError(f"model type '{model.config.model_type}': unexpected layer layout ({err})") from None
    return sites


def head_shapes(model) -> dict[str, tuple[int, int]]:
    """``{kind: (layers, heads per layer)}`` of the *unpruned* model, from its config."""
    config = model.config
    if model_family(model) == "t5":
        n_dec = config.num_decoder_layers if config.num_decoder_layers is not None else config.num_layers
        enc, dec = (int(config.num_layers), int(config.num_heads)), (int(n_dec), int(config.num_heads))
    else:
        enc = (int(config.encoder_layers), int(config.encoder_attention_heads))
        dec = (int(config.decoder_layers), int(config.decoder_attention_heads))
    return {"encoder": enc, "decoder": dec, "cross": dec}


def all_heads(shapes: dict[str, tuple[int, int]]) -> list[tuple[str, int, int]]:
    """Every head ``(kind, layer, head)``, kinds in :data:`KINDS` order."""
    return [(kind, l, h) for kind in KINDS for l in range(shapes[kind][0]) for h in range(shapes[kind][1])]


# --------------------------------------------------------------------------------------------- head record


def pruned_heads(model) -> Pruned:
    """Pruned heads per site (original indices), from the config record; empty sites left out."""
    record = getattr(model.config, PRUNED_KEY, None) or {}
    return {
        (kind, int(layer)): sorted(int(h) for h in heads)
        for kind, layers in record.items()
        for layer, heads in layers.items()
        if heads
    }


def _set_pruned_heads(model, pruned: Pruned) -> None:
    """Store the record in the config (JSON-serialisable: ``{kind: {"layer": sorted heads}}``)."""
    record: dict[str, dict[str, list[int]]] = {}
    for (kind, layer), heads in sorted(pruned.items(), key=lambda item: (KINDS.index(item[0][0]), item[0][1])):
        if heads:
            record.setdefault(kind, {})[str(layer)] = sorted(int(h) for h in heads)
    setattr(model.config, PRUNED_KEY, record)


def remaining_heads(model) -> dict[Key, list[int]]:
    """Original indices of the heads still present, per site."""
    shapes, pruned = head_shapes(model), pruned_heads(model)
    return {
        (kind, layer): [h for h in range(n_heads) if h not in pruned.get((kind, layer), ())]
        for kind, (n_layers, n_heads) in shapes.items()
        for layer in range(n_layers)
    }


def head_counts(model) -> dict[str, list[int]]:
    """Number of heads left per layer, by kind, read from the query projections' shapes."""
    counts: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for site in attention_sites(model):
        counts[site.kind].append(site.query.out_features // site.head_dim)
    return counts


def _check_record(model, sites: list[Site]) -> dict[Key, list[int]]:
    """Remaining heads per site, checked against the actual projection shapes."""
    remaining = remaining_heads(model)
    for site in sites:
        check_widths(f"{site.kind} layer {site.layer}", site, remaining[site.site], PRUNED_KEY)
    return remaining


def normalise_heads(model, heads) -> Pruned:
    """Heads as a checked ``{(kind, layer): sorted heads}`` dict.

    Accepted forms: ``{(kind, layer): [heads]}``, the config record ``{kind: {layer: [heads]}}`` (layer
    keys may be strings), or ``[(kind, layer, head), ...]``.
    """
    shapes = head_shapes(model)
    if isinstance(heads, dict):
        if all(isinstance(k, str) for k in heads):
            triples = [(kind, layer, h) for kind, layers in heads.items() for layer, hs in layers.items() for h in hs]
        else:
            triples = [(*site, h) for site, hs in heads.items() for h in hs]
    else:
        triples = list(heads)
    result: dict[Key, set[int]] = {}
    for triple in triples:
        try:
            kind, layer, head = triple
            layer, head = int(layer), int(head)
        except (TypeError, ValueError):
            raise HeadsieveError(f"head {triple!r} is not a (kind, layer, head) triple") from None
        if kind not in KINDS:
            raise HeadsieveError(f"head {triple!r}: kind '{kind}' is not one of {', '.join(KINDS)}")
        n_layers, n_heads = shapes[kind]
        if not 0 <= layer < n_layers:
            raise HeadsieveError(f"{kind} layer index {layer} out of range (the model has {n_layers} {kind} layers)")
        if not 0 <= head < n_heads:
            raise HeadsieveError(
                f"head index {head} ({kind} layer {layer}) out of range (the model has {n_heads} heads)"
            )
        result.setdefault((kind, layer), set()).add(head)
    return {site: sorted(hs) for site, hs in sorted(result.items(), key=lambda i: (KINDS.index(i[0][0]), i[0][1]))}


# --------------------------------------------------------------------------------------------------- gates


def make_gates(model, off=(), *, requires_grad: bool = False, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Gates ``{kind: [layers, heads]}`` of the model's original shape: ones, zeros at the heads ``off``."""
    gates = {kind: torch.ones(*shape, dtype=dtype) for kind, shape in head_shapes(model).items()}
    for (kind, layer), heads in normalise_heads(model, off).items():
        gates[kind][layer, heads] = 0.0
    return {kind: g.requires_grad_(requires_grad) for kind, g in gates.items()}


def stack_gates(gates: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gates as one ``[3, L, H]`` tensor (kinds in :data:`KINDS` order), when all shapes agree."""
    shapes = {tuple(gates[kind].shape) for kind in KINDS}
    if len(shapes) != 1:
        raise HeadsieveError(f"gate shapes differ between kinds ({sorted(shapes)}); keep them as a dict")
    return torch.stack([gates[kind] for kind in KINDS])


def check_gates(model, gates) -> None:
    """Fail with one line unless ``gates`` is ``{kind: float tensor [layers, heads]}`` of the model's shape."""
    shapes = head_shapes(model)
    if not isinstance(gates, dict) or set(gates) != set(KINDS):
        raise HeadsieveError(f"head gates must be a dict with the keys {', '.join(KINDS)} (one tensor per kind)")
    for kind, shape in shapes.items():
        value = gates[kind]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise HeadsieveError(f"{kind} head gates must be a float tensor of shape {list(shape)}")
        if tuple(value.shape) != shape:
            raise HeadsieveError(f"{kind} head gates have shape {list(value.shape)}; the model needs {list(shape)}")


class HeadGates(GateHooks):
    """Per-head gates of all three kinds, applied through forward pre-hooks on the output projections.

    ``with HeadGates(model, gates): ...`` or :meth:`attach` / :meth:`remove`.  ``gates`` is
    ``{kind: [layers, heads]}`` in the original head indexing; the hooks read ``gates[kind]`` at every
    forward pass, so the tensors may be changed in place (or replaced in the dict) and may require grad.
    """

    check = staticmethod(check_gates)

    def hooks(self):
        sites = attention_sites(self.model)
        remaining = _check_record(self.model, sites)
        shapes = head_shapes(self.model)
        hooks = []
        for site in sites:
            row = lambda kind=site.kind, layer=site.layer: self.gates[kind][layer]  # noqa: E731
            label = f"{site.kind} layer {site.layer}"
            hooks.append((site.output, gate_hook(label, remaining[site.site], site.head_dim, shapes[site.kind][1], row)))
        return hooks


def apply_head_gates(model, gates: dict[str, torch.Tensor]) -> HeadGates:
    """Attach gates to ``model`` and return the :class:`HeadGates` (call ``.remove()`` or use it in ``with``)."""
    return HeadGates(model, gates).attach()


# ------------------------------------------------------------------------------ attention without heads


def _cache_length_update(module, hidden_states, key_value_states, cache, head_dim: int, kwargs: dict) -> int:
    """Update the KV cache of a block without heads; return the key length its attention would have.

    One all-zero placeholder head is cached (never read by this block): transformers takes the cached
    sequence length from the cached keys and reports 0 for keys without elements.
    """
    from transformers.cache_utils import EncoderDecoderCache

    is_cross = key_value_states is not None
    current = key_value_states if is_cross else hidden_states
    if cache is None:
        return int(current.shape[1])
    is_updated = False
    layer_cache = cache
    if isinstance(cache, EncoderDecoderCache):
        is_updated = bool(cache.is_updated.get(module.layer_idx))
        layer_cache = cache.cross_attention_cache if is_cross else cache.self_attention_cache
    if is_cross and is_updated:
        return int(layer_cache.layers[module.layer_idx].keys.shape[-2])
    placeholder = current.new_zeros(current.shape[0], 1, current.shape[1], head_dim)
    keys, _ = layer_cache.update(placeholder, placeholder, module.layer_idx, kwargs=kwargs)
    if is_cross and isinstance(cache, EncoderDecoderCache):
        cache.is_updated[module.layer_idx] = True
    return int(keys.shape[-2])


def _headless_output(module, output: nn.Linear, hidden_states, key_length: int):
    """(output projection of an empty context, attention weights of zero heads or None)."""
    context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
    weights = None
    if getattr(module.config, "_attn_implementation", "eager") == "eager":
        weights = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], key_length)
    return output(context), weights


class _PrunedBart:
    """Mixin for BART-like attention: a block without heads skips attention (output = out_proj bias)."""

    def forward(self, hidden_states, key_value_states=None, cache=None, attention_mask=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        if self.num_heads > 0:
            return super().forward(hidden_states, key_value_states, cache, attention_mask, **kwargs)
        length = _cache_length_update(self, hidden_states, key_value_states, cache, self.head_dim, kwargs)
        return _headless_output(self, self.out_proj, hidden_states, length)


class _PrunedT5:
    """Mixin for T5-like attention of a pruned model: position bias in stack space (see module docstring).

    ``headsieve_heads``: this block's heads (original indices); ``headsieve_bias_heads``: the columns of the
    stack's bias (original indices; self-attention only).  The bias returned to the next layer is always
    the stack-space bias; cross-attention returns None (its bias is zero: each block makes its own).
    """

    def _own_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """This block's columns of a stack-space bias."""
        space = self.headsieve_bias_heads
        if list(self.headsieve_heads) == list(space):
            return bias
        index = torch.tensor([space.index(h) for h in self.headsieve_heads], dtype=torch.long, device=bias.device)
        return bias.index_select(1, index)

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        full = super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
        self._headsieve_full_bias = full
        return self._own_bias(full)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        if key_value_states is not None:  # cross-attention: zero bias, made by each block in its own shape
            if self.n_heads == 0:
                length = _cache_length_update(
                    self, hidden_states, key_value_states, cache, self.key_value_proj_dim, kwargs
                )
                out, weights = _headless_output(self, self.o, hidden_states, length)
                return out, None, weights
            out, _, weights = super().forward(hidden_states, mask, key_value_states, None, cache, **kwargs)
            return out, None, weights
        if self.n_heads == 0:
            return self._headless_self(hidden_states, position_bias, cache, kwargs)
        own = None if position_bias is None else self._own_bias(position_bias)
        self._headsieve_full_bias = None
        out, own_bias, weights = super().forward(hidden_states, mask, None, own, cache, **kwargs)
        if position_bias is None:
            position_bias = self._headsieve_full_bias  # None only for a layer without its own bias
        self._headsieve_full_bias = None
        return out, position_bias, weights

    def _headless_self(self, hidden_states, position_bias, cache, kwargs):
        """Self-attention without heads: still computes the stack's bias when this layer owns it."""
        past = cache.get_seq_length(self.layer_idx) if cache is not None else 0
        length = _cache_length_update(self, hidden_states, None, cache, self.key_value_proj_dim, kwargs)
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = super().compute_bias(hidden_states.shape[1], length, hidden_states.device, past)
        out, weights = _headless_output(self, self.o, hidden_states, length)
        return out, position_bias, weights


_SUBCLASSES: dict[type, type] = {}


def _switch_class(module: nn.Module, mixin: type) -> None:
    """Give ``module`` a subclass of its class with ``mixin`` first (keeps ``isinstance`` and hooks)."""
    cls = type(module)
    if cls in _SUBCLASSES.values():
        return
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Pruned{cls.__name__}", (mixin, cls), {"__module__": __name__})
    module.__class__ = _SUBCLASSES[cls]


# ------------------------------------------------------------------------------------------------- pruning


def _set_head_count(site: Site, n_heads: int) -> None:
    """Update the attention module's head-count attributes after pruning."""
    if site.family == "t5":
        site.attention.n_heads = n_heads
        site.attention.inner_dim = n_heads * site.head_dim
    else:
        site.attention.num_heads = n_heads


def _prune_site(site: Site, current: list[int], drop: list[int]) -> list[int]:
    """Remove the heads ``drop`` (original indices) from a block with heads ``current``; returns those left."""
    keep = slice_heads(site, current, drop)
    _set_head_count(site, len(keep))
    return keep


def _slice_bias_embedding(attention: nn.Module, old: list[int], new: list[int]) -> None:
    """Keep the columns ``new`` (original head indices) of a relative-bias embedding whose columns are ``old``."""
    embedding = attention.relative_attention_bias
    if new == old:
        return
    index = torch.tensor([old.index(h) for h in new], dtype=torch.long, device=embedding.weight.device)
    requires_grad = embedding.weight.requires_grad
    with torch.no_grad():
        embedding.weight = nn.Parameter(embedding.weight.index_select(1, index).clone(), requires_grad=requires_grad)
    embedding.embedding_dim = len(new)


def _prepare_t5(sites: list[Site], remaining: dict[Key, list[int]], n_heads: dict[str, int]) -> None:
    """Put every T5 attention module in stack space: bias columns = heads left in any self-attention layer."""
    for kind in ("encoder", "decoder"):
        stack = [site for site in sites if site.kind == kind]
        space = sorted({h for site in stack for h in remaining[site.site]})
        for site in stack:
            module = site.attention
            old = list(getattr(module, "headsieve_bias_heads", range(n_heads[kind])))
            if module.has_relative_attention_bias:
                _slice_bias_embedding(module, old, space)
            module.headsieve_bias_heads = space
    for site in sites:
        site.attention.headsieve_heads = list(remaining[site.site])
        _switch_class(site.attention, _PrunedT5)


def prune_heads(model, heads) -> Pruned:
    """Physically remove heads (forms of :func:`normalise_heads`, original indices), in place.

    Heads pruned before are skipped; returns the heads newly removed per site.  The record in
    ``config.headsieve_pruned_seq2seq_heads`` is updated.  Re-create optimizers afterwards (parameters are
    replaced).
    """
    request = normalise_heads(model, heads)
    sites = attention_sites(model)
    by_site = {site.site: site for site in sites}
    remaining = _check_record(model, sites)
    record = pruned_heads(model)
    removed: Pruned = {}
    for key, drop in request.items():
        drop = [h for h in drop if h in remaining[key]]
        if not drop:
            continue
        remaining[key] = _prune_site(by_site[key], remaining[key], drop)
        record[key] = sorted(set(record.get(key, [])) | set(drop))
        removed[key] = drop
    _set_pruned_heads(model, record)
    if model_family(model) == "t5" and (record or any(hasattr(s.attention, "headsieve_heads") for s in sites)):
        _prepare_t5(sites, remaining, {kind: shape[1] for kind, shape in head_shapes(model).items()})
    else:
        for site in sites:
            if not remaining[site.site]:
                _switch_class(site.attention, _PrunedBart)
    return removed


# ------------------------------------------------------------------------------------------- save and load


def save_pruned(model, folder: str) -> None:
    """Save with ``save_pretrained`` (safetensors only); the config carries the pruned-heads record."""
    _check_record(model, attention_sites(model))
    _set_pruned_heads(model, pruned_heads(model))
    save_safetensors(model, folder)


def _not_saved(model, key: str) -> bool:
    """Whether ``save_pretrained`` leaves ``key`` out on purpose (Marian's sinusoidal position tables, which
    are rebuilt when the model is built from its config)."""
    import re

    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    patterns = list(getattr(model, "_keys_to_ignore_on_load_missing", None) or ())
    return key in ignored or any(re.search(p, key) for p in patterns)


def load_pruned(folder: str, model_class=None, *, attn_implementation: str = "eager", device="cpu"):
    """Load a model saved by :func:`save_pruned` (or any saved encoder-decoder): build it from its config,
    prune the recorded heads, load the safetensors weights.  Returned in eval mode.

    ``model_class``: a transformers class or auto class; by default the config's architecture.
    """
    model, record = build_unpruned(folder, PRUNED_KEY, model_class, attn_implementation)
    model_family(model)
    prune_heads(model, record)
    load_weights(model, weight_files(folder), lambda key: _not_saved(model, key))
    return model.to(device).eval()
