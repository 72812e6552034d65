"""The head space of a model: its attention kinds and, for each, (layers, query heads per layer, key-value heads).

Every algorithm that selects, masks, prunes or scores heads works in this one space, whatever the
architecture:

* an encoder (BERT, DistilBERT, ...) has the single kind ``encoder``;
* an encoder-decoder (Marian, BART, T5, ...) has ``encoder``, ``decoder`` (decoder self-attention) and
  ``cross`` (encoder-decoder attention);
* a decoder-only language model has the single kind ``decoder`` (causal self-attention).

A head is ``(kind, layer, head)`` with the *original* (unpruned) indices.  Heads are ordered kinds first (in
:data:`KINDS` order), then layer, then head: the flat order of :meth:`HeadSpace.heads` is the order every
table, gate stack and random draw uses.

Grouped-query attention: ``kv_heads`` is the number of key-value heads of a kind (equal to the number of query
heads without grouping); query head ``h`` reads key-value head ``h // (heads // kv_heads)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from headsieve.errors import HeadsieveError

#: every attention kind, in the order of the flat head order
KINDS = ("encoder", "decoder", "cross")

Head = tuple[str, int, int]  #: (kind, layer, head), original indices


@dataclass(frozen=True)
class KindShape:
    """The unpruned shape of one attention kind."""

    kind: str
    layers: int
    heads: int  #: query heads per layer
    kv_heads: int  #: key-value heads per layer (== heads without grouped-query attention)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise HeadsieveError(f"unknown attention kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        if self.layers < 1 or self.heads < 1 or self.kv_heads < 1 or self.heads % self.kv_heads:
            raise HeadsieveError(
                f"attention kind {self.kind}: bad shape {self.layers} layers x {self.heads} heads "
                f"({self.kv_heads} key-value heads): need positive sizes and heads divisible by key-value heads"
            )

    @property
    def size(self) -> int:
        return self.layers * self.heads

    @property
    def group_size(self) -> int:
        """Query heads per key-value head."""
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class HeadSpace:
    """The kinds of attention of a model with their unpruned shapes, kinds in :data:`KINDS` order."""

    kinds: tuple[KindShape, ...]

    def __post_init__(self):
        names = [k.kind for k in self.kinds]
        if not names or names != [k for k in KINDS if k in names]:
            raise HeadsieveError(f"head space kinds {names}: need at least one kind, each once, in order {KINDS}")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_shapes(cls, shapes: dict, kv_heads: dict | None = None) -> "HeadSpace":
        """From ``{kind: (layers, heads)}`` (and, with grouped-query attention, ``{kind: kv_heads}``)."""
        kv_heads = kv_heads or {}
        unknown = sorted(set(shapes) - set(KINDS))
        if unknown:
            raise HeadsieveError(f"unknown attention kind(s) {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
        kinds = []
        for kind in KINDS:
            if kind in shapes:
                layers, heads = (int(x) for x in shapes[kind])
                kinds.append(KindShape(kind, layers, heads, int(kv_heads.get(kind, heads))))
        return cls(tuple(kinds))

    @classmethod
    def encoder(cls, layers: int, heads: int) -> "HeadSpace":
        """The head space of an encoder: the single kind ``encoder``."""
        return cls.from_shapes({"encoder": (layers, heads)})

    # ------------------------------------------------------------------ queries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.kind for k in self.kinds)

    def __contains__(self, kind: str) -> bool:
        return kind in self.names

    def kind(self, kind: str) -> KindShape:
        for k in self.kinds:
            if k.kind == kind:
                return k
        raise HeadsieveError(f"this model has no {kind!r} attention (kinds: {', '.join(self.names)})")

    def shape(self, kind: str) -> tuple[int, int]:
        k = self.kind(kind)
        return k.layers, k.heads

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {k.kind: (k.layers, k.heads) for k in self.kinds}

    def size(self, kind: str) -> int:
        return self.kind(kind).size

    @property
    def n_total(self) -> int:
        return sum(k.size for k in self.kinds)

    @property
    def single(self) -> KindShape | None:
        """The only kind of a one-kind model (an encoder, a decoder-only LM); None for an encoder-decoder."""
        return self.kinds[0] if len(self.kinds) == 1 else None

    def heads(self, kinds=None) -> list[Head]:
        """Every head in flat order (kinds in :data:`KINDS` order, then layer, then head); only ``kinds`` if
        given."""
        wanted = self.names if kinds is None else tuple(kinds)
        return [(k.kind, l, h) for k in self.kinds if k.kind in wanted for l in range(k.layers) for h in range(k.heads)]

    def index(self, head: Head) -> int:
        """Position of ``head`` in the flat order."""
        kind, layer, h = head
        offset = 0
        for k in self.kinds:
            if k.kind == kind:
                if not (0 <= layer < k.layers and 0 <= h < k.heads):
                    raise HeadsieveError(f"head {kind} {layer}:{h} is outside {k.layers} layers x {k.heads} heads")
                return offset + layer * k.heads + h
            offset += k.size
        raise HeadsieveError(f"this model has no {kind!r} attention (kinds: {', '.join(self.names)})")


# ------------------------------------------------------------------ layer bands (pure layer helpers)

#: the thirds of a layer stack, bottom to top
BANDS = ("bottom", "middle", "top")


def band_layers(band: str, n_layers: int) -> list[int]:
    """The bottom, middle or top third of ``n_layers`` layers (12 layers: 0-3, 4-7, 8-11)."""
    return [layer for layer in range(n_layers) if BANDS[layer * 3 // n_layers] == band]
