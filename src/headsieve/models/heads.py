"""Head gates (masking), physical head pruning and save/load, for every model family, over the head space.

transformers 5.x dropped ``head_mask`` and ``prune_heads``; this module puts both back for the model types
of :mod:`headsieve.models.families` (base models and task wrappers such as ``*ForSequenceClassification``
or ``*ForConditionalGeneration``).  The model's heads form its :class:`~headsieve.models.headspace.HeadSpace`
(:func:`head_space`): an encoder has the single kind ``encoder``, an encoder-decoder ``encoder``, ``decoder``
(decoder self-attention) and ``cross`` (encoder-decoder attention).  A head is ``(kind, layer, head)`` with
its *original* (unpruned) indices; an attention block is a *site* keyed ``(kind, layer)``.  Where each
family keeps its attention modules, projections and head counts is its description's business; the code
here reads the description and never branches on a family.

* **Gates** (:class:`HeadGates`, :func:`apply_head_gates`): ``{kind: float tensor [layers, heads]}``
  (kinds may differ in shape) whose entries multiply each head's slice of the concatenated attention
  context, through a forward pre-hook on the site's output projection.  The hook sits after the attention
  function, so it works with eager, sdpa or any other attention implementation and with the KV cache.
  Gates are read at every forward pass (change them in place) and may require grad: ``dL/dgate`` gives
  Michel et al. (2019) head importance.  Gates always have the original shape; on a pruned model the
  entries of pruned heads are unused (their gradient is zero).
* **Pruning** (:func:`prune_heads`): removes the heads' rows from the query/key/value projections and their
  input columns from the output projection, in place.  A block left with no heads yields the output
  projection's bias (the family's ``headless`` mixin; T5 also keeps its position bias right).
* **The record**: the pruned heads are kept in the model's config, in the form the family description's
  :class:`~headsieve.models.families.base.PrunedRecord` says (encoders:
  ``config.headsieve_pruned_heads = {"layer": [heads]}``; encoder-decoders:
  ``config.headsieve_pruned_seq2seq_heads = {kind: {"layer": [heads]}}``), so pruning is cumulative and
  survives :func:`save_pruned` / :func:`load_pruned` (safetensors only), and checkpoints saved before keep
  their bytes and load.

Heads may be given as ``[(kind, layer, head), ...]``, ``{(kind, layer): [heads]}`` or a config record; for a
one-kind model also as ``[(layer, head), ...]`` or ``{layer: [heads]}`` (:func:`heads_by_site`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from headsieve.errors import HeadsieveError
from headsieve.models.families import family_of
from headsieve.models.families.base import Family
from headsieve.models.families.common import switch_class
from headsieve.models.gating import GateHooks, gate_hook
from headsieve.models.headspace import KINDS, HeadSpace
from headsieve.models.surgery import build_unpruned, check_widths, kv_groups, load_weights, query_width
from headsieve.models.surgery import save_safetensors, slice_heads, weight_files

Site = tuple[str, int]  #: an attention block, (kind, layer)
Pruned = dict[Site, list[int]]  #: heads per site


@dataclass(frozen=True)
class AttentionSite:
    """One attention block: its module, projections and head size."""

    kind: str  #: "encoder", "decoder" or "cross"
    layer: int
    attention: nn.Module  #: the module holding the query/key/value projections
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  #: the output projection whose input is the concatenated per-head context
    head_dim: int
    group_size: int = 1  #: query heads per key-value head of the unpruned model (grouped-query attention)
    layout: str = "separate"  #: how the projections hold the heads (headsieve.models.surgery.LAYOUTS)

    @property
    def site(self) -> Site:
        return (self.kind, self.layer)

    @property
    def label(self) -> str:
        return f"{self.kind} layer {self.layer}"


# ----------------------------------------------------------------------------------------------- discovery


def model_family(model) -> Family:
    """The family description of ``model`` (by ``config.model_type``; one-line error for other types)."""
    return family_of(getattr(model, "config", None))


def config_space(config) -> HeadSpace:
    """The unpruned head space stated by a model config (no weights needed)."""
    family = family_of(config)
    return HeadSpace.from_shapes(
        {layout.kind: layout.shape(config) for layout in family.kinds},
        {layout.kind: layout.kv_count(config) for layout in family.kinds},
    )


def head_space(model) -> HeadSpace:
    """The model's head space: its attention kinds with their *unpruned* (layers, heads), from its config."""
    return config_space(model.config)


def _path(root: nn.Module, path: str):
    for name in path.split("."):
        root = getattr(root, name)
    return root


def attention_sites(model) -> list[AttentionSite]:
    """Every attention block, kinds in :data:`~headsieve.models.headspace.KINDS` order, then layer order."""
    family = model_family(model)
    space = head_space(model)
    base = getattr(model, "base_model", model)
    where = f"model type '{model.config.model_type}' ({type(model).__name__})"
    sites = []
    for layout in family.kinds:
        group_size = space.kind(layout.kind).group_size
        layers = _path_or_none(base, layout.stack)
        if not isinstance(layers, nn.ModuleList):
            raise HeadsieveError(f"{where}: no {layout.kind} layer list found (at {layout.stack})")
        try:
            for index, layer in enumerate(layers):
                attention = _path(layer, layout.attention)
                query, key, value = (getattr(attention, name) for name in family.projections)
                output = _path(layer, layout.output)
                head_dim = int(getattr(attention, family.head_size))
                sites.append(
                    AttentionSite(
                        layout.kind, index, attention, query, key, value, output, head_dim,
                        group_size, family.projection_layout,
                    )
                )  # fmt: skip
        except AttributeError as err:
            raise HeadsieveError(f"{where}: unexpected layer layout ({err})") from None
    return sites


def _path_or_none(root: nn.Module, path: str):
    try:
        return _path(root, path)
    except AttributeError:
        return None


# --------------------------------------------------------------------------------------------- head record


def pruned_heads(model) -> Pruned:
    """Pruned heads per site (original indices), from the config record; empty sites left out."""
    family = model_family(model)
    return family.record.read(getattr(model.config, family.record.key, None), family.kind_names)


def pruned_record(model) -> dict:
    """The pruned heads in the config record's form (what ``config.json`` holds; JSON-serialisable)."""
    family = model_family(model)
    return family.record.write(pruned_heads(model), family.kind_names)


def _set_pruned_heads(model, pruned: Pruned) -> None:
    """Store the record in the config, in the family's form."""
    family = model_family(model)
    setattr(model.config, family.record.key, family.record.write(pruned, family.kind_names))


def remaining_heads(model) -> Pruned:
    """Original indices of the heads still present, per site (every site, in the flat order)."""
    space, pruned = head_space(model), pruned_heads(model)
    return {
        (k.kind, layer): [h for h in range(k.heads) if h not in pruned.get((k.kind, layer), ())]
        for k in space.kinds
        for layer in range(k.layers)
    }


def kv_head_map(model) -> dict[Site, dict[int, list[int]]]:
    """Grouped-query attention after pruning: per site, each key-value head still present (original index)
    with the query heads (original indices) that read it.  Query head ``h`` reads key-value head
    ``h // group_size`` of the unpruned model; a key-value head is kept while any of its query heads is."""
    space, remaining = head_space(model), remaining_heads(model)
    result = {}
    for (kind, layer), heads in remaining.items():
        size = space.kind(kind).group_size
        result[(kind, layer)] = {g: [h for h in heads if h // size == g] for g in kv_groups(heads, size)}
    return result


def head_counts(model) -> dict[str, list[int]]:
    """Number of heads left per layer, by kind, read from the query projections' shapes."""
    counts: dict[str, list[int]] = {kind: [] for kind in head_space(model).names}
    for site in attention_sites(model):
        counts[site.kind].append(query_width(site) // site.head_dim)
    return counts


def _check_record(model, sites: list[AttentionSite]) -> Pruned:
    """Remaining heads per site, checked against the actual projection shapes."""
    remaining = remaining_heads(model)
    key = model_family(model).record.key
    for site in sites:
        check_widths(site.label, site, remaining[site.site], key)
    return remaining


def _site_order(item) -> tuple[int, int]:
    return KINDS.index(item[0][0]), item[0][1]


def _triples(space: HeadSpace, heads) -> list:
    """Every accepted form of a set of heads (module docstring) as a list of triples (unchecked)."""
    single = space.single.kind if space.single else None
    if isinstance(heads, dict):
        if heads and all(isinstance(k, str) and k in KINDS for k in heads):  # {kind: {layer: [heads]}}
            return [(kind, layer, h) for kind, layers in heads.items() for layer, hs in layers.items() for h in hs]
        if single is not None and all(not isinstance(k, tuple) for k in heads):  # {layer: [heads]}
            return [(single, layer, h) for layer, hs in heads.items() for h in hs]
        return [(*key, h) for key, hs in heads.items() for h in hs]
    return [(single, *pair) if single is not None and _is_pair(pair) else pair for pair in heads]


def _is_pair(head) -> bool:
    return isinstance(head, (tuple, list)) and len(head) == 2


def heads_by_site(space: HeadSpace, heads) -> Pruned:
    """Heads in any accepted form (module docstring) as a checked ``{(kind, layer): sorted heads}`` dict,
    sites in the flat order; a one-line error names the first head that is not in the space."""
    result: dict[Site, set[int]] = {}
    for triple in _triples(space, heads):
        try:
            kind, layer, head = triple
            layer, head = int(layer), int(head)
        except (TypeError, ValueError):
            raise HeadsieveError(f"head {triple!r} is not a (kind, layer, head) triple") from None
        if kind not in space:
            kinds = ", ".join(space.names)
            raise HeadsieveError(f"head {triple!r}: the model has no {kind!r} attention (kinds: {kinds})")
        n_layers, n_heads = space.shape(kind)
        if not 0 <= layer < n_layers:
            raise HeadsieveError(f"{kind} layer index {layer} out of range (the model has {n_layers} {kind} layers)")
        if not 0 <= head < n_heads:
            raise HeadsieveError(
                f"head index {head} ({kind} layer {layer}) out of range (the model has {n_heads} heads)"
            )
        result.setdefault((kind, layer), set()).add(head)
    return {site: sorted(hs) for site, hs in sorted(result.items(), key=_site_order)}


def normalise_heads(model, heads) -> Pruned:
    """:func:`heads_by_site` over the model's head space."""
    return heads_by_site(head_space(model), heads)


# --------------------------------------------------------------------------------------------------- gates


def make_gates(model, off=(), *, requires_grad: bool = False, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Gates ``{kind: [layers, heads]}`` of the model's original shape: ones, zeros at the heads ``off``."""
    gates = {kind: torch.ones(*shape, dtype=dtype) for kind, shape in head_space(model).shapes.items()}
    for (kind, layer), heads in normalise_heads(model, off).items():
        gates[kind][layer, heads] = 0.0
    return {kind: g.requires_grad_(requires_grad) for kind, g in gates.items()}


def check_gates(model, gates) -> None:
    """Fail with one line unless ``gates`` is ``{kind: float tensor [layers, heads]}`` of the model's shape."""
    shapes = head_space(model).shapes
    if not isinstance(gates, dict) or set(gates) != set(shapes):
        raise HeadsieveError(f"head gates must be a dict with the keys {', '.join(shapes)} (one tensor per kind)")
    for kind, shape in shapes.items():
        value = gates[kind]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise HeadsieveError(f"{kind} head gates must be a float tensor of shape {list(shape)}")
        if tuple(value.shape) != shape:
            raise HeadsieveError(f"{kind} head gates have shape {list(value.shape)}; the model needs {list(shape)}")


class HeadGates(GateHooks):
    """Per-head gates of every kind, applied through forward pre-hooks on the output projections.

    ``with HeadGates(model, gates): ...`` or :meth:`attach` / :meth:`remove`.  ``gates`` is
    ``{kind: [layers, heads]}`` in the original head indexing; the hooks read ``gates[kind]`` at every
    forward pass, so the tensors may be changed in place (or replaced in the dict) and may require grad.
    """

    check = staticmethod(check_gates)

    def hooks(self):
        sites = attention_sites(self.model)
        remaining = _check_record(self.model, sites)
        shapes = head_space(self.model).shapes
        hooks = []
        for site in sites:
            row = lambda kind=site.kind, layer=site.layer: self.gates[kind][layer]  # noqa: E731
            hook = gate_hook(site.label, remaining[site.site], site.head_dim, shapes[site.kind][1], row)
            hooks.append((site.output, hook))
        return hooks


def apply_head_gates(model, gates: dict[str, torch.Tensor]) -> HeadGates:
    """Attach gates to ``model`` and return the :class:`HeadGates` (call ``.remove()`` or use it in ``with``)."""
    return HeadGates(model, gates).attach()


# ------------------------------------------------------------------------------------------------- pruning


def _set_head_count(family: Family, site: AttentionSite, n_heads: int) -> None:
    """Update the attention module's head-count attributes after pruning."""
    if family.head_count is not None:
        setattr(site.attention, family.head_count, n_heads)
    if family.head_width is not None:
        setattr(site.attention, family.head_width, n_heads * site.head_dim)


def _finish(family: Family, sites: list[AttentionSite], remaining: Pruned, record: Pruned, space: HeadSpace) -> None:
    """The family's after-pruning step; by default, blocks without heads get the family's headless mixin."""
    if family.finish is not None:
        family.finish(sites, remaining, record, space)
        return
    for site in sites:
        if not remaining[site.site]:
            switch_class(site.attention, family.headless)


def prune_heads(model, heads) -> Pruned:
    """Physically remove heads (forms of :func:`heads_by_site`, original indices), in place.

    Heads pruned before are skipped; returns the heads newly removed per site.  The config record is
    updated.  Re-create optimizers afterwards (parameters are replaced).
    """
    family, space = model_family(model), head_space(model)
    request = heads_by_site(space, heads)
    sites = attention_sites(model)
    by_site = {site.site: site for site in sites}
    remaining = _check_record(model, sites)
    record = pruned_heads(model)
    removed: Pruned = {}
    for key, drop in request.items():
        drop = [h for h in drop if h in remaining[key]]
        if not drop:
            continue
        remaining[key] = slice_heads(by_site[key], remaining[key], drop)
        _set_head_count(family, by_site[key], len(remaining[key]))
        record[key] = sorted(set(record.get(key, [])) | set(drop))
        removed[key] = drop
    _set_pruned_heads(model, record)
    _finish(family, sites, remaining, record, space)
    return removed


# ------------------------------------------------------------------------------------------- save and load


def save_pruned(model, folder: str) -> None:
    """Save with ``save_pretrained`` (safetensors only); the config carries the pruned-heads record."""
    _check_record(model, attention_sites(model))
    _set_pruned_heads(model, pruned_heads(model))  # normalise the record's form before it is written
    save_safetensors(model, folder)


def stock_shape(model) -> tuple[int, int]:
    """(query heads, key-value heads) per layer of a pruned one-kind model that a stock config can state: the
    same in every layer, each key-value head left read by the same number of query heads; else one line."""
    family, space = model_family(model), head_space(model)
    if space.single is None or family.stock_head_size is None:
        raise HeadsieveError(
            f"model type '{model.config.model_type}': no stock config can state a pruned model of this family "
            f"(save it with save_pruned, load it with load_pruned)"
        )
    shapes = set()
    for site, groups in kv_head_map(model).items():
        sizes = {len(heads) for heads in groups.values()}
        if len(sizes) != 1:
            raise HeadsieveError(
                f"{site[0]} layer {site[1]}: no heads left or key-value groups of uneven sizes {sorted(sizes)}; "
                f"a stock config needs even groups (save it with save_pruned)"
            )
        shapes.add((sum(len(heads) for heads in groups.values()), len(groups)))
    if len(shapes) != 1:
        raise HeadsieveError(
            f"layers keep different numbers of (query, key-value) heads {sorted(shapes)}; a stock config needs the "
            f"same in every layer (save it with save_pruned)"
        )
    return shapes.pop()


def save_stock(model, folder: str) -> None:
    """Save a pruned model so that stock transformers ``from_pretrained`` loads it: the config states the
    heads left per layer (:func:`stock_shape`) with the head size pinned, and holds no pruned-heads record
    (the saved model is an unpruned model of the smaller shape; its heads are numbered from 0)."""
    import copy as copy_module

    family, (n_heads, n_kv) = model_family(model), stock_shape(model)
    _check_record(model, attention_sites(model))
    layout = family.kinds[0]
    config = copy_module.deepcopy(model.config)
    setattr(config, layout.heads[0], n_heads)
    if layout.kv_heads:
        setattr(config, layout.kv_heads[0], n_kv)
    setattr(config, family.stock_head_size, attention_sites(model)[0].head_dim)
    if hasattr(config, family.record.key):
        delattr(config, family.record.key)
    original = model.config
    model.config = config
    try:
        save_safetensors(model, folder)
    finally:
        model.config = original


def _not_saved(model, key: str) -> bool:
    """Whether ``save_pretrained`` leaves ``key`` out on purpose (e.g. Marian's sinusoidal position tables,
    which are rebuilt when the model is built from its config)."""
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    patterns = list(getattr(model, "_keys_to_ignore_on_load_missing", None) or ())
    return key in ignored or any(re.search(p, key) for p in patterns)


def record_key(config) -> str:
    """The config attribute holding the pruned-heads record of a model of this config's family."""
    return family_of(config).record.key


def load_pruned(folder: str, model_class=None, *, attn_implementation: str = "eager", device="cpu"):
    """Load a model saved by :func:`save_pruned` (or any saved model of a supported family): build it from
    its config, prune the recorded heads, load the safetensors weights.  Returned in eval mode.

    ``model_class``: a transformers class or auto class; by default the config's architecture.
    """
    model, record = build_unpruned(folder, record_key, model_class, attn_implementation)
    family = model_family(model)
    prune_heads(model, family.record.read(record, family.kind_names))
    load_weights(model, weight_files(folder), lambda key: _not_saved(model, key))
    return model.to(device).eval()


# ------------------------------------------------------------------------------- attention probabilities


def self_attention_probabilities(model, batch: dict) -> tuple[torch.Tensor, ...]:
    """The self-attention probabilities of a one-kind model (an encoder, a decoder-only LM) on ``batch``: one
    ``[batch, heads present, queries, keys]`` tensor per layer, without gradient.  They need eager attention
    (``attn_implementation="eager"``); a model that returns none gets a one-line error."""
    space = head_space(model)
    if space.single is None:
        kinds = ", ".join(space.names)
        raise HeadsieveError(f"self_attention_probabilities needs a one-kind model (this one has {kinds})")
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions
    if not attentions or len(attentions) != space.single.layers or any(a is None for a in attentions):
        implementation = getattr(model.config, "_attn_implementation", None)
        raise HeadsieveError(
            f"model type '{model.config.model_type}' with attn_implementation '{implementation}' returns no attention "
            f"probabilities (load it with attn_implementation='eager')"
        )
    return tuple(attentions)
