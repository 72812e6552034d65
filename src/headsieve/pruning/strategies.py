"""Which heads to prune: a registry of selection strategies.

A strategy is one function ``(facts, fraction, rng, labels, importance, arg) -> [(layer, head), ...]``
returning the heads to prune, sorted.  It prunes ``round(fraction * n_layers * n_heads)`` heads (see
:func:`n_to_prune`) unless it is fixed-size (``keep_one``).  In a config a strategy name may carry one
argument after a colon: ``prune_role:syntactic``, ``spare_role:dep:nsubj``, ``keep_one:3``.

Strategies (``L`` layers of ``H`` heads, ``n`` heads to prune):

* ``random``: ``n`` heads drawn uniformly without replacement.
* ``top``, ``bottom``, ``middle``, ``top_bottom``: layers in a fixed order, whole layers first, then the
  next layer in the order partially (its heads drawn at random).  Orders: ``top`` L-1, L-2, ..., 0;
  ``bottom`` 0, 1, ...; ``middle`` by distance from the centre (L-1)/2, the lower layer first on ties
  (12 layers: 5, 6, 4, 7, 3, 8, ...); ``top_bottom`` L-1, 0, L-2, 1, ... (spares the middle).
* ``consecutive``, ``spread``: ``k, r = divmod(n, H)``; ``k`` whole layers plus ``r`` random heads of one
  more layer, so ``m = ceil(n / H)`` layers are touched.  ``consecutive``: the ``m`` layers form a
  contiguous block at a uniformly drawn position; the partial layer is one end of the block (drawn).
  ``spread``: systematic sampling, layers ``(c + i * L) // m`` for ``i < m`` with ``c`` drawn uniformly
  in ``[0, L)``: gaps differ by at most one, no two layers are adjacent when ``L / m >= 2``, and when
  ``L == 2m - 1`` (the only other case where that is possible) the even layers are taken; the partial
  layer is drawn among the ``m``.  Both prune exactly ``n`` heads, so they compare at equal size.
* ``prune_role:R``: heads labelled with role R, strongest mean score first; then random others.
* ``spare_role:R``: random heads not labelled R; only when those run out, labelled ones, weakest mean
  score first.
* ``importance``: lowest importance first (ties broken at random).
* ``keep_one:L`` (fixed-size): every head of layer L except the most important one (or a random one
  when no importance is given); ``fraction`` is validated but otherwise ignored.
* ``layer:L`` (fixed-size): every head of layer L.  ``band:B`` (fixed-size): every head of the bottom,
  middle or top third of the layers (B in bottom, middle, top).

Role labels come from the role-test table (:func:`headsieve.roles.tests.role_tests`: columns layer,
head, role, label, mean, ...), filtered to one model.  A head holds role R when any of its rows for R is
labelled (several corpora may be present); its strength is the largest mean among those labelled rows.

Randomness: :func:`select_heads` seeds ``np.random.default_rng([seed, crc32(name), crc32(fraction)])``
where ``name`` is the full strategy name with its argument and ``fraction`` is taken by its ``repr``.
Each (seed, strategy, fraction) thus has its own independent stream: two strategies (or two roles, or
two fractions) never reuse the same draws, so their results are not coupled by shared randomness; in
particular the heads of one strategy at two fractions are independent draws, not nested sets.  The
same triple always gives the same heads (stable across processes: crc32, not ``hash``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from numbers import Real
from typing import Callable

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError

Heads = list[tuple[int, int]]


@dataclass(frozen=True)
class ModelFacts:
    """What a strategy needs to know about a model: its (original) number of layers and heads per layer."""

    n_layers: int
    n_heads: int

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads

    @classmethod
    def from_model(cls, model) -> "ModelFacts":
        """The facts of a transformers encoder (unpruned shape, from its config)."""
        from headsieve.models.heads import head_shape

        return cls(*head_shape(model))


#: (facts, fraction, rng, labels, importance, arg) -> sorted heads to prune
Strategy = Callable[
    [ModelFacts, float, np.random.Generator, "pd.DataFrame | None", "np.ndarray | None", "str | None"], Heads
]

#: strategy name -> function
STRATEGIES: dict[str, Strategy] = {}
#: strategy name -> what its (required) argument is, for strategies that take one
ARGUMENTS: dict[str, str] = {}
#: strategies that prune a fixed number of heads whatever the fraction
FIXED_SIZE: set[str] = set()


#: strategies that read the role labels (the pre-trained model's role tests)
ROLE_STRATEGIES = ("prune_role", "spare_role")


def needs_role_labels(strategies) -> bool:
    """Whether any of these strategy names (``name[:argument]``) reads the role labels."""
    return any(str(s).split(":")[0] in ROLE_STRATEGIES for s in strategies)


def register(name: str, argument: str | None = None, fixed_size: bool = False):
    """Decorator adding a strategy to :data:`STRATEGIES` (with its argument's meaning, if it takes one)."""

    def add(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        if argument:
            ARGUMENTS[name] = argument
        if fixed_size:
            FIXED_SIZE.add(name)
        return fn

    return add


# ------------------------------------------------------------------------------------------------- helpers


def n_to_prune(facts: ModelFacts, fraction: float) -> int:
    """``round(fraction * n_layers * n_heads)`` (Python's round: exact halves go to the even integer)."""
    return int(round(fraction * facts.n_total))


def _unflatten(flat, facts: ModelFacts) -> Heads:
    """Flat head indices (``layer * n_heads + head``) as sorted (layer, head) pairs."""
    return sorted((int(i) // facts.n_heads, int(i) % facts.n_heads) for i in flat)


def fill_layers(order, n: int, n_heads: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` (layer, head) pairs taken from the layers in ``order``, each of ``n_heads`` heads: whole layers,
    then random heads of the next one (in that order)."""
    heads: list[tuple[int, int]] = []
    for layer in order:
        if n <= 0:
            break
        take = min(n, n_heads)
        chosen = range(n_heads) if take == n_heads else rng.choice(n_heads, take, replace=False)
        heads += [(int(layer), int(h)) for h in chosen]
        n -= take
    return heads


def _fill_layers(order, n: int, facts: ModelFacts, rng: np.random.Generator) -> Heads:
    """``n`` heads taken from the layers in ``order`` (:func:`fill_layers`), sorted."""
    return sorted(fill_layers(order, n, facts.n_heads, rng))


def _random_from(candidates: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` flat indices drawn without replacement from ``candidates`` (in draw order)."""
    if n <= 0:
        return []
    return [int(i) for i in rng.choice(np.asarray(candidates, dtype=np.int64), n, replace=False)]


# -------------------------------------------------------------------------------------- random and layers


@register("random")
def random_heads(facts, fraction, rng, labels, importance, arg) -> Heads:
    """``n`` heads uniformly at random."""
    return _unflatten(rng.choice(facts.n_total, n_to_prune(facts, fraction), replace=False), facts)


def layer_order(name: str, n_layers: int) -> list[int]:
    """The layer order of ``top``, ``bottom``, ``middle`` or ``top_bottom``."""
    layers = range(n_layers)
    if name == "top":
        return list(reversed(layers))
    if name == "bottom":
        return list(layers)
    if name == "middle":
        return sorted(layers, key=lambda l: (abs(2 * l - (n_layers - 1)), l))
    if name == "top_bottom":
        order = []
        for lo, hi in zip(layers, reversed(layers)):
            if lo > hi:
                break
            order += [hi] if lo == hi else [hi, lo]
        return order
    raise ValueError(name)


@register("top")
def top(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Whole layers from the top down; the partial layer's heads at random."""
    return _fill_layers(layer_order("top", facts.n_layers), n_to_prune(facts, fraction), facts, rng)


@register("bottom")
def bottom(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Whole layers from layer 0 up; the partial layer's heads at random."""
    return _fill_layers(layer_order("bottom", facts.n_layers), n_to_prune(facts, fraction), facts, rng)


@register("middle")
def middle(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Whole layers from the middle outwards; the partial layer's heads at random."""
    return _fill_layers(layer_order("middle", facts.n_layers), n_to_prune(facts, fraction), facts, rng)


@register("top_bottom")
def top_bottom(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Whole layers alternately from the top and the bottom, sparing the middle."""
    return _fill_layers(layer_order("top_bottom", facts.n_layers), n_to_prune(facts, fraction), facts, rng)


def spread_layers(m: int, n_layers: int, offset: int) -> list[int]:
    """``m`` layers spread evenly by systematic sampling from ``offset`` in ``[0, n_layers)``.

    Gaps differ by at most one; no two are adjacent when that is possible (``L / m >= 2``, or ``L == 2m-1``).
    """
    if m <= 0:
        return []
    if m > 1 and n_layers == 2 * m - 1:
        return list(range(0, n_layers, 2))
    return [(offset + i * n_layers) // m for i in range(m)]


def _block_strategy(facts: ModelFacts, fraction: float, rng: np.random.Generator, spread: bool) -> Heads:
    """``consecutive`` or ``spread``: ``k`` whole layers plus a partial one, placed as the strategy says."""
    n = n_to_prune(facts, fraction)
    whole, rest = divmod(n, facts.n_heads)
    m = whole + (rest > 0)
    if m == 0:
        return []
    if spread:
        layers = spread_layers(m, facts.n_layers, int(rng.integers(facts.n_layers)))
        partial = int(rng.integers(m)) if rest else None
    else:
        start = int(rng.integers(facts.n_layers - m + 1))
        layers = list(range(start, start + m))
        partial = (0 if rng.integers(2) == 0 else m - 1) if rest else None
    if partial is not None:  # the partial layer goes last in the fill order
        layers = layers[:partial] + layers[partial + 1 :] + [layers[partial]]
    return _fill_layers(layers, n, facts, rng)


@register("consecutive")
def consecutive(facts, fraction, rng, labels, importance, arg) -> Heads:
    """A contiguous block of layers at a random position (whole layers plus one partial end layer)."""
    return _block_strategy(facts, fraction, rng, spread=False)


@register("spread")
def spread(facts, fraction, rng, labels, importance, arg) -> Heads:
    """As many layers as ``consecutive``, spread evenly (not adjacent when possible)."""
    return _block_strategy(facts, fraction, rng, spread=True)


# --------------------------------------------------------------------------------------------------- roles

LABEL_COLUMNS = ("layer", "head", "role", "label", "mean")


def check_labels(labels: pd.DataFrame, facts: ModelFacts) -> None:
    """Fail with one line unless ``labels`` is a role-test table of one model that fits ``facts``."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise HeadsieveError(f"role labels table lacks column(s) {', '.join(missing)} (expected the role-test table)")
    if "model" in labels.columns and labels["model"].astype(str).nunique() > 1:
        models = ", ".join(sorted(labels["model"].astype(str).unique()))
        raise HeadsieveError(f"role labels table holds several models ({models}); filter it to the pruned model")
    layer, head = labels["layer"].to_numpy(), labels["head"].to_numpy()
    bad = (layer < 0) | (layer >= facts.n_layers) | (head < 0) | (head >= facts.n_heads)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise HeadsieveError(
            f"role labels table has head ({int(layer[k])}, {int(head[k])}) outside the model's "
            f"{facts.n_layers} x {facts.n_heads} heads (labels of another model?)"
        )


def role_strength(labels: pd.DataFrame, role: str, facts: ModelFacts) -> dict[int, float]:
    """Flat index -> strength (largest mean of its labelled rows) of the heads labelled ``role``."""
    roles = labels["role"].astype(str)
    if not (roles == role).any():
        known = sorted(roles.unique())
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise HeadsieveError(f"role '{role}' is not in the role labels table (roles there: {shown})")
    rows = labels[(roles == role) & labels["label"].astype(bool)]
    flat = rows["layer"].astype(int) * facts.n_heads + rows["head"].astype(int)
    strength = rows["mean"].astype(float).groupby(flat.to_numpy()).max()
    return {int(k): float(v) for k, v in strength.items()}


@register("prune_role", argument="role")
def prune_role(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Heads labelled ``arg``, strongest first (ties by index); then random unlabelled heads."""
    n = n_to_prune(facts, fraction)
    strength = role_strength(labels, arg, facts)
    labelled = sorted(strength, key=lambda i: (-strength[i], i))
    chosen = labelled[:n]
    others = [i for i in range(facts.n_total) if i not in strength]
    return _unflatten(chosen + _random_from(others, n - len(chosen), rng), facts)


@register("spare_role", argument="role")
def spare_role(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Random heads not labelled ``arg``; labelled ones (weakest first) only when those run out."""
    n = n_to_prune(facts, fraction)
    strength = role_strength(labels, arg, facts)
    others = [i for i in range(facts.n_total) if i not in strength]
    chosen = _random_from(others, min(n, len(others)), rng)
    labelled = sorted(strength, key=lambda i: (strength[i], i))
    return _unflatten(chosen + labelled[: n - len(chosen)], facts)


# ---------------------------------------------------------------------------------------------- importance


def check_importance(importance, facts: ModelFacts) -> np.ndarray:
    """``importance`` as a finite float array of shape [layers, heads], else a one-line error."""
    values = np.asarray(importance, dtype=float)
    if values.shape != (facts.n_layers, facts.n_heads):
        raise HeadsieveError(
            f"head importance has shape {list(values.shape)}; the model needs [{facts.n_layers}, {facts.n_heads}]"
        )
    if not np.isfinite(values).all():
        raise HeadsieveError("head importance has non-finite values (NaN or inf)")
    return values


@register("importance")
def least_important(facts, fraction, rng, labels, importance, arg) -> Heads:
    """The ``n`` heads of lowest importance; equal values are ordered at random."""
    n = n_to_prune(facts, fraction)
    perm = rng.permutation(facts.n_total)
    order = perm[np.argsort(importance.reshape(-1)[perm], kind="stable")]
    return _unflatten(order[:n], facts)


@register("keep_one", argument="layer", fixed_size=True)
def keep_one(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Every head of layer ``arg`` but one: the most important (first on ties), else a random one."""
    layer = parse_layer(arg, facts)
    keep = int(np.argmax(importance[layer])) if importance is not None else int(rng.integers(facts.n_heads))
    return [(layer, h) for h in range(facts.n_heads) if h != keep]


@register("layer", argument="layer", fixed_size=True)
def whole_layer(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Every head of layer ``arg`` (layer-by-layer prunability)."""
    layer = parse_layer(arg, facts, "layer")
    return [(layer, h) for h in range(facts.n_heads)]


BANDS = ("bottom", "middle", "top")


def band_layers(band: str, n_layers: int) -> list[int]:
    """The bottom, middle or top third of the layers (12 layers: 0-3, 4-7, 8-11)."""
    return [layer for layer in range(n_layers) if BANDS[layer * 3 // n_layers] == band]


@register("band", argument="band", fixed_size=True)
def layer_band(facts, fraction, rng, labels, importance, arg) -> Heads:
    """Every head of the bottom, middle or top third of the layers."""
    if arg not in BANDS:
        raise HeadsieveError(f"band: '{arg}' is not one of {', '.join(BANDS)} (e.g. band:top)")
    return [(layer, h) for layer in band_layers(arg, facts.n_layers) for h in range(facts.n_heads)]


def parse_layer(arg: str, facts: ModelFacts, strategy: str = "keep_one") -> int:
    """A layer index argument, checked to be in range."""
    try:
        layer = int(arg)
    except (TypeError, ValueError):
        raise HeadsieveError(f"{strategy}: layer '{arg}' is not an integer (e.g. {strategy}:3)") from None
    if not 0 <= layer < facts.n_layers:
        raise HeadsieveError(
            f"{strategy}: layer {layer} out of range (the model has {facts.n_layers} layers, 0..{facts.n_layers - 1})"
        )
    return layer


# ----------------------------------------------------------------------------------------------- selection


def split_strategy(name: str, known: dict, arguments: dict[str, str], what: str = "pruning strategy"):
    """``'base:arg'`` -> ``(base, arg or None)``, checked: ``base`` in ``known``, an argument exactly when
    ``arguments`` names one for ``base``.  ``what`` names the strategy kind in errors."""
    base, sep, arg = str(name).strip().partition(":")
    if base not in known:
        raise HeadsieveError(f"unknown {what} '{name}' (known: {', '.join(sorted(known))})")
    if base in arguments:
        if not arg.strip():
            need = arguments[base]
            raise HeadsieveError(f"{what} '{base}' needs a {need} argument (e.g. {base}:<{need}>)")
        return base, arg.strip()
    if sep:
        raise HeadsieveError(f"{what} '{base}' takes no argument (got '{name}')")
    return base, None


def parse_strategy(name: str) -> tuple[str, str | None]:
    """``'prune_role:dep:nsubj'`` -> ``('prune_role', 'dep:nsubj')``, checked against the registry."""
    return split_strategy(name, STRATEGIES, ARGUMENTS)


def check_fraction(fraction) -> float:
    """``fraction`` as a float in [0, 1), else a one-line error."""
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not math.isfinite(fraction):
        raise HeadsieveError(f"pruning fraction {fraction!r} is not a number in [0, 1)")
    if not 0 <= fraction < 1:
        raise HeadsieveError(f"pruning fraction {fraction} is outside [0, 1)")
    return float(fraction)


def strategy_rng(seed: int, name: str, fraction: float) -> np.random.Generator:
    """The generator of one (seed, full strategy name, fraction): independent streams, stable across runs."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HeadsieveError(f"pruning seed {seed!r} is not a non-negative integer")
    tag = zlib.crc32(str(name).strip().encode("utf-8"))
    frac = zlib.crc32(repr(float(fraction)).encode("ascii"))
    return np.random.default_rng([int(seed), tag, frac])


def _check_result(heads: Heads, name: str, n: int | None, facts: ModelFacts) -> Heads:
    """The strategy's heads as sorted int pairs; a programming error unless distinct, in range, ``n`` of them."""
    heads = sorted((int(l), int(h)) for l, h in heads)
    ok = len(set(heads)) == len(heads) and all(0 <= l < facts.n_layers and 0 <= h < facts.n_heads for l, h in heads)
    if not ok or (n is not None and len(heads) != n):
        raise RuntimeError(f"strategy '{name}' returned {len(heads)} heads, expected {n} distinct in-range heads")
    return heads


def select_heads(
    name: str,
    facts: ModelFacts,
    fraction: float,
    seed: int,
    labels: pd.DataFrame | None = None,
    importance: np.ndarray | None = None,
) -> Heads:
    """The heads (sorted (layer, head) pairs) that strategy ``name`` prunes at ``fraction``, seeded by ``seed``.

    Checks the name and its argument, the fraction, and the labels table / importance the strategy needs;
    every problem is a one-line :class:`HeadsieveError`.
    """
    base, arg = parse_strategy(name)
    fraction = check_fraction(fraction)
    if base in ("prune_role", "spare_role"):
        if labels is None:
            raise HeadsieveError(f"pruning strategy '{name}' needs the role labels table (role tests of this model)")
        check_labels(labels, facts)
    if importance is not None:
        importance = check_importance(importance, facts)
    elif base == "importance":
        raise HeadsieveError(f"pruning strategy '{name}' needs head importance scores (none given)")
    rng = strategy_rng(seed, name, fraction)
    heads = STRATEGIES[base](facts, fraction, rng, labels, importance, arg)
    expected = None if base in FIXED_SIZE else n_to_prune(facts, fraction)
    return _check_result(heads, name, expected, facts)
