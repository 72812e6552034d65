"""Which heads of an encoder-decoder model to prune: a registry of strategies over the three kinds.

A separate registry from :mod:`headsieve.pruning.strategies` (whose strategies pick ``(layer, head)``
pairs of one stack), with the same conventions: a strategy is a function
``(facts, fraction, rng, importance, arg) -> [(kind, layer, head), ...]`` that prunes
``n = round(fraction * N)`` heads, ``N`` being the number of heads of all three kinds together (so every
strategy compares at equal size), and a name may carry arguments after colons.  Randomness comes from
:func:`headsieve.pruning.strategies.strategy_rng`: one independent, stable stream per (seed, full
strategy name, fraction).

Strategies (``K`` one of ``encoder``, ``decoder``, ``cross``; ``ORDER`` one of ``top``, ``bottom``,
``middle``, ``top_bottom``, the layer orders of :func:`headsieve.pruning.strategies.layer_order`):

* ``random``: ``n`` heads uniformly among all heads of all kinds.
* ``importance``: lowest importance first over all kinds (ties at random).  Importance is
  ``{kind: [layers, heads]}`` (:func:`headsieve.translation.importance.head_importance`, normalised per
  layer within each kind), so values of different kinds are comparable in scale only roughly.
* ``kind:K``: heads of kind ``K`` first, in random order; only when ``n`` exceeds them, random heads of
  the other kinds.
* ``spare:K``: random heads of the other kinds; heads of ``K`` (random) only when those run out.  The
  test of the claim that kind ``K`` is the important one.
* ``layer:ORDER``: every kind loses its share of ``n`` (proportional to its size, largest remainder,
  ties in kind order), taken as in the encoder strategy ``ORDER``: whole layers in that order, then random
  heads of the next layer.
* ``layer:ORDER:K``: as ``layer:ORDER`` within kind ``K`` only; when ``n`` exceeds kind ``K``, random
  heads of the other kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from headsieve.errors import HeadsieveError
from headsieve.models.seq2seq_heads import KINDS, all_heads, head_shapes
from headsieve.pruning.strategies import check_fraction, fill_layers, layer_order, split_strategy, strategy_rng

Head = tuple[str, int, int]
LAYER_ORDERS = ("top", "bottom", "middle", "top_bottom")


@dataclass(frozen=True)
class Seq2SeqFacts:
    """The unpruned shape of each kind: (layers, heads per layer)."""

    encoder: tuple[int, int]
    decoder: tuple[int, int]
    cross: tuple[int, int]

    def shape(self, kind: str) -> tuple[int, int]:
        return getattr(self, kind)

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {kind: self.shape(kind) for kind in KINDS}

    def size(self, kind: str) -> int:
        layers, heads = self.shape(kind)
        return layers * heads

    @property
    def n_total(self) -> int:
        return sum(self.size(kind) for kind in KINDS)

    def heads(self) -> list[Head]:
        """Every head in flat order (kinds in :data:`KINDS` order, then layer, then head)."""
        return all_heads(self.shapes)

    @classmethod
    def from_model(cls, model) -> "Seq2SeqFacts":
        shapes = head_shapes(model)
        return cls(*(tuple(shapes[kind]) for kind in KINDS))

    @classmethod
    def from_shapes(cls, shapes: dict) -> "Seq2SeqFacts":
        return cls(*(tuple(int(x) for x in shapes[kind]) for kind in KINDS))


#: (facts, fraction, rng, importance, arg) -> heads to prune
Strategy = Callable[[Seq2SeqFacts, float, np.random.Generator, "dict | None", "str | None"], list[Head]]

#: strategy name -> function
STRATEGIES: dict[str, Strategy] = {}
#: strategy name -> description of its required argument
ARGUMENTS: dict[str, str] = {}


def register(name: str, argument: str | None = None):
    """Decorator adding a strategy to :data:`STRATEGIES`."""

    def add(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        if argument:
            ARGUMENTS[name] = argument
        return fn

    return add


# ------------------------------------------------------------------------------------------------- helpers


def n_to_prune(facts: Seq2SeqFacts, fraction: float) -> int:
    """``round(fraction * N)`` over the heads of all kinds."""
    return int(round(fraction * facts.n_total))


def _kind_heads(facts: Seq2SeqFacts, kinds) -> list[Head]:
    return [h for h in facts.heads() if h[0] in kinds]


def _draw(candidates: list[Head], n: int, rng: np.random.Generator) -> list[Head]:
    """``n`` heads drawn without replacement from ``candidates`` (in draw order)."""
    if n <= 0:
        return []
    return [candidates[int(i)] for i in rng.choice(len(candidates), n, replace=False)]


def _first_then_others(first: list[Head], n: int, facts: Seq2SeqFacts, rng: np.random.Generator) -> list[Head]:
    """``first`` (an ordered list) up to ``n``; the rest drawn at random from the heads not in it."""
    chosen = first[:n]
    taken = set(chosen)
    others = [h for h in facts.heads() if h not in taken]
    return chosen + _draw(others, n - len(chosen), rng)


def _fill_layers(kind: str, order: list[int], n: int, facts: Seq2SeqFacts, rng: np.random.Generator) -> list[Head]:
    """``n`` heads of ``kind``: whole layers in ``order``, then random heads of the next layer."""
    return [(kind, layer, head) for layer, head in fill_layers(order, n, facts.shape(kind)[1], rng)]


def proportional_shares(facts: Seq2SeqFacts, n: int) -> dict[str, int]:
    """``n`` split over the kinds in proportion to their sizes (largest remainder; ties in kind order)."""
    exact = {kind: n * facts.size(kind) / facts.n_total for kind in KINDS}
    shares = {kind: int(np.floor(exact[kind])) for kind in KINDS}
    rest = n - sum(shares.values())
    for kind in sorted(KINDS, key=lambda k: (-(exact[k] - shares[k]), KINDS.index(k)))[:rest]:
        shares[kind] += 1
    return shares


def parse_kind(arg: str | None, name: str) -> str:
    if arg not in KINDS:
        raise HeadsieveError(f"pruning strategy '{name}': kind '{arg}' is not one of {', '.join(KINDS)}")
    return arg


# -------------------------------------------------------------------------------------------- strategies


@register("random")
def random_heads(facts, fraction, rng, importance, arg) -> list[Head]:
    """``n`` heads uniformly among all kinds."""
    return _draw(facts.heads(), n_to_prune(facts, fraction), rng)


@register("importance")
def least_important(facts, fraction, rng, importance, arg) -> list[Head]:
    """The ``n`` heads of lowest importance over all kinds; equal values in random order."""
    heads = facts.heads()
    values = np.array([importance[kind][layer, head] for kind, layer, head in heads], dtype=float)
    perm = rng.permutation(len(heads))
    order = perm[np.argsort(values[perm], kind="stable")]
    return [heads[int(i)] for i in order[: n_to_prune(facts, fraction)]]


@register("kind", argument="kind")
def kind_first(facts, fraction, rng, importance, arg) -> list[Head]:
    """Heads of kind ``arg`` first (random order), then random others."""
    kind = parse_kind(arg, f"kind:{arg}")
    own = _kind_heads(facts, (kind,))
    return _first_then_others(_draw(own, len(own), rng), n_to_prune(facts, fraction), facts, rng)


@register("spare", argument="kind")
def spare_kind(facts, fraction, rng, importance, arg) -> list[Head]:
    """Random heads of the other kinds; kind ``arg`` only when they run out."""
    kind = parse_kind(arg, f"spare:{arg}")
    others = _kind_heads(facts, tuple(k for k in KINDS if k != kind))
    return _first_then_others(_draw(others, len(others), rng), n_to_prune(facts, fraction), facts, rng)


@register("layer", argument="order[:kind]")
def by_layer(facts, fraction, rng, importance, arg) -> list[Head]:
    """Whole layers in a fixed order, in every kind (proportional shares) or in one kind first."""
    order, _, kind = arg.partition(":")
    if order not in LAYER_ORDERS:
        raise HeadsieveError(f"pruning strategy 'layer:{arg}': order '{order}' is not one of {', '.join(LAYER_ORDERS)}")
    n = n_to_prune(facts, fraction)
    if kind:
        kind = parse_kind(kind, f"layer:{arg}")
        size = facts.size(kind)
        own = _fill_layers(kind, layer_order(order, facts.shape(kind)[0]), min(n, size), facts, rng)
        return _first_then_others(own, n, facts, rng)
    heads: list[Head] = []
    for k, share in proportional_shares(facts, n).items():
        heads += _fill_layers(k, layer_order(order, facts.shape(k)[0]), share, facts, rng)
    return heads


# ----------------------------------------------------------------------------------------------- selection


def parse_strategy(name: str) -> tuple[str, str | None]:
    """``'layer:top:cross'`` -> ``('layer', 'top:cross')``, checked against the registry."""
    return split_strategy(name, STRATEGIES, ARGUMENTS, "translation pruning strategy")


def check_importance(importance, facts: Seq2SeqFacts) -> dict[str, np.ndarray]:
    """``importance`` as ``{kind: finite float array [layers, heads]}``, else a one-line error."""
    if not isinstance(importance, dict) or set(importance) != set(KINDS):
        raise HeadsieveError(f"head importance must give one array per kind ({', '.join(KINDS)})")
    checked = {}
    for kind in KINDS:
        values = np.asarray(importance[kind], dtype=float)
        if values.shape != facts.shape(kind):
            raise HeadsieveError(
                f"{kind} head importance has shape {list(values.shape)}; the model needs {list(facts.shape(kind))}"
            )
        if not np.isfinite(values).all():
            raise HeadsieveError(f"{kind} head importance has non-finite values (NaN or inf)")
        checked[kind] = values
    return checked


def select_heads(
    name: str, facts: Seq2SeqFacts, fraction: float, seed: int, importance: dict | None = None
) -> list[Head]:
    """The heads (sorted ``(kind, layer, head)`` triples, kinds in :data:`KINDS` order) that strategy
    ``name`` prunes at ``fraction``, seeded by ``seed``; every user error is a one-line HeadsieveError."""
    base, arg = parse_strategy(name)
    fraction = check_fraction(fraction)
    if importance is not None:
        importance = check_importance(importance, facts)
    elif base == "importance":
        raise HeadsieveError(f"pruning strategy '{name}' needs head importance scores (none given)")
    rng = strategy_rng(seed, name, fraction)
    heads = STRATEGIES[base](facts, fraction, rng, importance, arg)
    return _check_result(heads, name, n_to_prune(facts, fraction), facts)


def check_strategy(name: str) -> None:
    """Fail with one line unless ``name`` and its argument are valid (tried on a small dummy model)."""
    facts = Seq2SeqFacts((2, 2), (2, 2), (2, 2))
    select_heads(name, facts, 0.5, 0, importance={kind: np.ones((2, 2)) for kind in KINDS})


def sort_heads(heads) -> list[Head]:
    """Triples sorted by kind (in :data:`KINDS` order), layer, head."""
    return sorted(((str(k), int(l), int(h)) for k, l, h in heads), key=lambda t: (KINDS.index(t[0]), t[1], t[2]))


def _check_result(heads, name: str, n: int, facts: Seq2SeqFacts) -> list[Head]:
    """Sorted triples; a programming error unless ``n`` distinct in-range heads."""
    heads = sort_heads(heads)
    valid = set(facts.heads())
    if len(set(heads)) != len(heads) or not set(heads) <= valid or len(heads) != n:
        raise RuntimeError(f"strategy '{name}' returned {len(heads)} heads, expected {n} distinct in-range heads")
    return heads
