"""What a model family description holds: the declarative facts the generic head code reads.

A family description (:class:`Family`, one module per family in this package) says, for the model types it
covers, where each attention kind's layer stack and attention module live (attribute paths), the names of
the query/key/value projections and of the output projection, which attributes hold the head count, the
head width and the head size, how to read the unpruned (layers, heads) of each kind from the config,
whether the model takes token type ids, and how the pruned heads are recorded in ``config.json``
(:class:`PrunedRecord`).  What is truly family-specific (a block left with no heads; T5's relative position
bias) is a small class or function of the family's module, named in the description.  The generic code
(:mod:`headsieve.models.heads`) never branches on a family's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from headsieve.errors import HeadsieveError


def first_set(config, names: tuple[str, ...]):
    """The value of the first of the config attributes ``names`` that is set (not None), else None."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class KindLayout:
    """Where one attention kind lives, and how the config states its unpruned shape.

    Paths are dotted attribute paths (``"layer.0.SelfAttention"``; digits index module lists): ``stack`` from
    the base model (``model.base_model``) to the list of layers, ``attention`` and ``output`` from one layer
    to the attention module (holding the query/key/value projections) and to the output projection (whose
    input is the concatenated per-head context).  ``layers`` and ``heads``: config attributes, the first
    one set wins.
    """

    kind: str  #: "encoder", "decoder" or "cross" (headsieve.models.headspace.KINDS)
    stack: str
    attention: str
    output: str
    layers: tuple[str, ...]
    heads: tuple[str, ...]
    #: config attributes holding the key-value heads per layer (grouped-query attention); empty: as many as heads
    kv_heads: tuple[str, ...] = ()

    def kv_count(self, config) -> int:
        """Key-value heads per layer of the unpruned model (its query heads without grouped-query attention)."""
        value = first_set(config, self.kv_heads) if self.kv_heads else None
        return self.shape(config)[1] if value is None else int(value)

    def shape(self, config) -> tuple[int, int]:
        """(layers, heads per layer) of the unpruned model, from its config."""
        n_layers, n_heads = first_set(config, self.layers), first_set(config, self.heads)
        if n_layers is None or n_heads is None:
            raise HeadsieveError(
                f"model config of type '{getattr(config, 'model_type', '?')}' names no {self.kind} layers or heads "
                f"(config keys {'/'.join(self.layers)}, {'/'.join(self.heads)})"
            )
        return int(n_layers), int(n_heads)


@dataclass(frozen=True)
class PrunedRecord:
    """How a model records its pruned heads in its config (and so in a saved ``config.json``).

    ``key``: the config attribute.  ``by_kind`` false: ``{"layer": [heads]}`` (a one-kind model: the
    encoders' record since headsieve first pruned them); true: ``{kind: {"layer": [heads]}}`` (the
    encoder-decoders' record).  Layers in order, heads sorted, empty layers left out; saved models and old
    checkpoints keep their bytes and load.
    """

    key: str
    by_kind: bool

    def read(self, record, kinds: tuple[str, ...]) -> dict[tuple[str, int], list[int]]:
        """``{(kind, layer): sorted heads}`` from a record (``kinds``: the model's kinds; a flat record is
        of its only kind)."""
        record = record or {}
        if self.by_kind:
            pairs = [(kind, layer, heads) for kind, layers in record.items() for layer, heads in layers.items()]
        else:
            pairs = [(kinds[0], layer, heads) for layer, heads in record.items()]
        return {(kind, int(layer)): sorted(int(h) for h in heads) for kind, layer, heads in pairs if heads}

    def write(self, pruned: dict[tuple[str, int], list[int]], kinds: tuple[str, ...]) -> dict:
        """The record of ``{(kind, layer): heads}`` (JSON-serialisable: string layer keys, sorted int lists)."""
        ordered = sorted(pruned.items(), key=lambda item: (kinds.index(item[0][0]), item[0][1]))
        if not self.by_kind:
            return {str(layer): sorted(int(h) for h in heads) for (_, layer), heads in ordered if heads}
        record: dict[str, dict[str, list[int]]] = {}
        for (kind, layer), heads in ordered:
            if heads:
                record.setdefault(kind, {})[str(layer)] = sorted(int(h) for h in heads)
        return record


#: the record of one-kind models (encoders): ``config.headsieve_pruned_heads = {"layer": [heads]}``
ENCODER_RECORD = PrunedRecord("headsieve_pruned_heads", by_kind=False)
#: the record of encoder-decoders: ``config.headsieve_pruned_seq2seq_heads = {kind: {"layer": [heads]}}``
SEQ2SEQ_RECORD = PrunedRecord("headsieve_pruned_seq2seq_heads", by_kind=True)


@dataclass(frozen=True)
class Family:
    """The description of one model family (see the module docstring)."""

    name: str
    model_types: tuple[str, ...]  #: config.model_type values the family covers
    kinds: tuple[KindLayout, ...]  #: in headsieve.models.headspace.KINDS order
    projections: tuple[str, str, str]  #: query, key, value projection names in the attention module
    head_count: str | None  #: attention-module attribute holding its number of heads (None: it has none)
    head_size: str  #: attention-module attribute holding the size of one head
    head_width: str | None  #: attention-module attribute holding heads x head size, if it has one
    token_types: bool  #: whether the model takes token type ids (then only if type_vocab_size > 1)
    record: PrunedRecord
    #: mixin for an attention module left with no heads (its forward yields the output projection's bias)
    headless: type
    #: ``finish(sites, remaining, record, space)`` run after every pruning instead of switching the headless blocks
    #: to ``headless`` (T5: the position bias); None for the default
    finish: Callable | None = None
    #: how the query/key/value projections hold the heads (headsieve.models.surgery.LAYOUTS): "separate" (three
    #: linear layers, rows = heads; key/value rows = key-value heads under grouped-query attention) or
    #: "fused_conv1d" (GPT-2: one Conv1D whose output columns are the query, key and value thirds)
    projection_layout: str = "separate"
    #: config attribute that pins the head size, so that a config with fewer heads per layer describes a pruned
    #: model stock transformers can load (headsieve.models.heads.save_stock); None: no such export
    stock_head_size: str | None = None

    @property
    def kind_names(self) -> tuple[str, ...]:
        return tuple(layout.kind for layout in self.kinds)
