"""Which heads to prune: one registry of selection strategies over a model's head space.

A strategy is one function ``(ask: Ask) -> [(kind, layer, head), ...]`` returning the heads to prune. ``Ask``
holds its inputs: the model's :class:`~headsieve.models.headspace.HeadSpace` (an encoder: the single kind
``encoder``; an encoder-decoder: ``encoder``, ``decoder``, ``cross``), the fraction, the random generator,
the role labels, the head importance (``{kind: array [layers, heads]}``) and the strategy's argument.  Every
strategy prunes ``n = round(fraction * N)`` heads, ``N`` being the heads of all kinds (:func:`n_to_prune`),
unless it is fixed-size (``keep_one``, ``layer:L``, ``band``).  In a config a strategy name may carry one
argument after a colon, which may itself hold colons: ``prune_role:syntactic``, ``spare_role:dep:nsubj``,
``keep_one:3``, ``layer:top:cross``.  Adding a strategy = one function under :func:`register` plus tests.

Strategies (``L`` layers of ``H`` heads, ``n`` heads to prune; ``K`` a kind; on a model with several kinds, a
strategy that works on layers gives each kind its share of ``n``, :func:`proportional_shares`, unless ``K``
names one):

* ``random``: ``n`` heads drawn uniformly without replacement among all heads.
* ``top``, ``bottom``, ``middle``, ``top_bottom``: layers in a fixed order, whole layers first, then the
  next layer in the order partially (its heads drawn at random).  Orders: ``top`` L-1, L-2, ..., 0;
  ``bottom`` 0, 1, ...; ``middle`` by distance from the centre (L-1)/2, the lower layer first on ties
  (12 layers: 5, 6, 4, 7, 3, 8, ...); ``top_bottom`` L-1, 0, L-2, 1, ... (spares the middle).
  ``layer:ORDER`` is the same strategy under its translation name; ``layer:ORDER:K`` takes the layers of kind
  ``K`` only and, when ``n`` exceeds that kind, random heads of the other kinds.
* ``consecutive``, ``spread``: ``k, r = divmod(n, H)``; ``k`` whole layers plus ``r`` random heads of one
  more layer, so ``m = ceil(n / H)`` layers are touched; the partial layer is drawn uniformly among the ``m``
  in both.  The two are a matched design (:func:`layer_set_design`), so that they differ in contiguity only,
  not in depth: every layer is touched with the SAME probability by both (hence also the same expected
  number of its heads pruned), and the block weights are symmetric under top <-> bottom reflection (equal top
  and bottom exposure).  ``consecutive``: a contiguous block of ``m`` layers, its first layer drawn from the
  design's weights.  ``spread``: a set of ``m`` layers drawn from a distribution found by linear programming
  over all ``m``-sets (as a flow over layers), with (1) the fewest expected adjacent pairs that equal
  inclusion allows, then (2) inclusion as close to uniform ``m / L`` as blocks allow, then (3) the fewest
  pairs two layers apart.  When ``L / m`` is a whole number the inclusion is uniform (blocks tile the
  layers); whenever ``2m <= L`` spread never holds adjacent layers (6 layers: m <= 3; 12 layers: m <= 6).
  With ``2m > L`` every block contains the middle layers, so both strategies always include them and
  ``spread`` holds as few adjacent pairs as that allows (at most, and while ``m < L - 1`` fewer than, a
  block's ``m - 1``).
  :func:`design_table` lists the inclusion and adjacency of every ``m`` for a given ``L``.
* ``prune_role:R``: heads labelled with role R, strongest mean score first; then random others.
* ``spare_role:R``: random heads not labelled R; only when those run out, labelled ones, weakest mean
  score first.  Decoder-only models: R is a causal role (``prune_role:causal:induction``,
  ``spare_role:causal:sink``), or its short name when the labels table holds the causal role
  (``prune_role:induction``, ``sink``, ``prev``); labels per key-value group (a ``kv_group`` column instead
  of ``head``) prune or spare whole groups (:func:`query_head_labels`).
* ``importance``: lowest importance first over all kinds (ties broken at random).
* ``kind:K``: heads of kind ``K`` first, in random order; only when ``n`` exceeds them, random heads of
  the other kinds.  ``spare:K``: random heads of the other kinds; heads of ``K`` only when those run out.
* ``keep_one:L[:K]`` (fixed-size): every head of layer L except the most important one (or a random one
  when no importance is given); ``fraction`` is validated but otherwise ignored.
* ``layer:L[:K]`` (fixed-size): every head of layer L.  ``band:B[:K]`` (fixed-size): every head of the
  bottom, middle or top third of the layers (B in bottom, middle, top).  ``K`` may be left out on a model with
  one kind.

Role labels come from the role-test table (:func:`headsieve.roles.tests.role_tests`: columns layer,
head, role, label, mean, ... and, for a model with several kinds, kind), filtered to one model.  A head holds
role R when any of its rows for R is labelled (several corpora may be present); its strength is the largest
mean among those labelled rows.

Randomness: :func:`select_heads` seeds ``np.random.default_rng([seed, crc32(name), crc32(fraction)])``
where ``name`` is the full strategy name with its argument and ``fraction`` is taken by its ``repr``.
Each (seed, strategy, fraction) thus has its own independent stream: two strategies (or two roles, or
two fractions) never reuse the same draws, so their results are not coupled by shared randomness; in
particular the heads of one strategy at two fractions are independent draws, not nested sets.  The
same triple always gives the same heads (stable across processes: crc32, not ``hash``).  Random draws are
made over the flat head order of :meth:`HeadSpace.heads` (kinds, then layer, then head).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from numbers import Real
from typing import Callable

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.models.headspace import BANDS, KINDS, Head, HeadSpace, band_layers

Heads = list[Head]


@dataclass(frozen=True)
class Ask:
    """The inputs of one strategy call."""

    space: HeadSpace
    fraction: float
    rng: np.random.Generator
    labels: pd.DataFrame | None = None  #: the role-test table (role strategies only)
    importance: dict[str, np.ndarray] | None = None  #: ``{kind: [layers, heads]}``, checked
    arg: str | None = None  #: the text after the first colon of the strategy name

    @property
    def n(self) -> int:
        """The number of heads a strategy that is not fixed-size prunes."""
        return n_to_prune(self.space, self.fraction)


#: (ask) -> heads to prune
Strategy = Callable[[Ask], Heads]


@dataclass(frozen=True)
class Entry:
    """A registered strategy: its function, what its (required) argument is, whether it reads the role
    labels, and whether it prunes a fixed set of heads whatever the fraction (a predicate on its argument)."""

    name: str
    fn: Strategy
    argument: str | None = None
    uses_labels: bool = False
    fixed_size: Callable[[str | None], bool] = lambda arg: False


#: strategy name -> entry
STRATEGIES: dict[str, Entry] = {}


def register(name: str, argument: str | None = None, uses_labels: bool = False, fixed_size=False):
    """Decorator adding a strategy to :data:`STRATEGIES`.  ``argument`` names its required argument;
    ``fixed_size`` is True, or a predicate on the argument (``layer:3`` is fixed-size, ``layer:top`` not)."""

    def add(fn: Strategy) -> Strategy:
        fixed = fixed_size if callable(fixed_size) else (lambda arg, value=bool(fixed_size): value)
        STRATEGIES[name] = Entry(name, fn, argument, uses_labels, fixed)
        return fn

    return add


def needs_role_labels(strategies) -> bool:
    """Whether any of these strategy names (``name[:argument]``) reads the role labels."""
    return any(STRATEGIES[base].uses_labels for base in (str(s).split(":")[0] for s in strategies) if base in STRATEGIES)


def is_fixed_size(name: str) -> bool:
    """Whether strategy ``name`` (with its argument) prunes a fixed set of heads whatever the fraction."""
    base, arg = parse_strategy(name)
    return STRATEGIES[base].fixed_size(arg)


# ------------------------------------------------------------------------------------------------- helpers


def n_to_prune(space: HeadSpace, fraction: float) -> int:
    """``round(fraction * N)`` over the heads of all kinds (Python's round: exact halves to the even integer)."""
    return int(round(fraction * space.n_total))


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


def _fill_kind(kind: str, order, n: int, space: HeadSpace, rng: np.random.Generator) -> Heads:
    """``n`` heads of ``kind`` taken from its layers in ``order`` (:func:`fill_layers`)."""
    return [(kind, layer, head) for layer, head in fill_layers(order, n, space.shape(kind)[1], rng)]


def _draw(candidates: list, n: int, rng: np.random.Generator) -> list:
    """``n`` items drawn without replacement from ``candidates`` (in draw order)."""
    if n <= 0:
        return []
    return [candidates[int(i)] for i in rng.choice(len(candidates), n, replace=False)]


def _first_then_others(first: Heads, n: int, space: HeadSpace, rng: np.random.Generator) -> Heads:
    """``first`` (an ordered list) up to ``n``; the rest drawn at random from the heads not in it."""
    chosen = first[:n]
    taken = set(chosen)
    others = [h for h in space.heads() if h not in taken]
    return chosen + _draw(others, n - len(chosen), rng)


def proportional_shares(space: HeadSpace, n: int) -> dict[str, int]:
    """``n`` split over the kinds in proportion to their sizes (largest remainder; ties in kind order)."""
    names = space.names
    exact = {kind: n * space.size(kind) / space.n_total for kind in names}
    shares = {kind: int(np.floor(exact[kind])) for kind in names}
    rest = n - sum(shares.values())
    for kind in sorted(names, key=lambda k: (-(exact[k] - shares[k]), KINDS.index(k)))[:rest]:
        shares[kind] += 1
    return shares


def parse_kind(kind: str | None, space: HeadSpace, name: str) -> str:
    """``kind`` checked to be one of the model's kinds."""
    if kind not in space.names:
        raise HeadsieveError(f"pruning strategy '{name}': kind '{kind}' is not one of {', '.join(space.names)}")
    return kind


def one_kind(kind: str | None, space: HeadSpace, name: str) -> str:
    """The kind a one-kind strategy works on: ``kind`` if given, else the model's only kind."""
    if kind:
        return parse_kind(kind, space, name)
    if space.single is None:
        raise HeadsieveError(
            f"pruning strategy '{name}' needs a kind on a model with several attention kinds "
            f"(e.g. {name}:{space.names[0]})"
        )
    return space.single.kind


def parse_layer(text: str, space: HeadSpace, kind: str, strategy: str) -> int:
    """A layer index argument, checked to be in range of ``kind``."""
    try:
        layer = int(text)
    except (TypeError, ValueError):
        raise HeadsieveError(f"{strategy}: layer '{text}' is not an integer (e.g. {strategy}:3)") from None
    n_layers = space.shape(kind)[0]
    if not 0 <= layer < n_layers:
        where = "the model" if space.single else f"the {kind} stack"
        raise HeadsieveError(
            f"{strategy}: layer {layer} out of range ({where} has {n_layers} layers, 0..{n_layers - 1})"
        )
    return layer


# -------------------------------------------------------------------------------------- random and layers


@register("random")
def random_heads(ask: Ask) -> Heads:
    """``n`` heads uniformly at random among all heads."""
    return _draw(ask.space.heads(), ask.n, ask.rng)


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


#: strategies that take whole layers in a fixed order (:func:`layer_order`)
ORDERED = ("top", "bottom", "middle", "top_bottom")


def ordered_layers(order: str, ask: Ask, kind: str | None = None) -> Heads:
    """Whole layers in ``order``, then random heads of the next layer: in every kind (its proportional share
    of ``n``), or, with ``kind``, in that kind first and random heads of the others beyond it."""
    space, n = ask.space, ask.n
    if kind:
        own = _fill_kind(kind, layer_order(order, space.shape(kind)[0]), min(n, space.size(kind)), space, ask.rng)
        return _first_then_others(own, n, space, ask.rng)
    heads: Heads = []
    for k, share in proportional_shares(space, n).items():
        heads += _fill_kind(k, layer_order(order, space.shape(k)[0]), share, space, ask.rng)
    return heads


#: the whole-layer strategies, one per layer order of :data:`ORDERED`, registered under the order's name: whole
#: layers from the top down (``top``), from layer 0 up (``bottom``), from the middle outwards (``middle``), or
#: alternately from the top and the bottom, sparing the middle (``top_bottom``); the partial layer's heads at random
top, bottom, middle, top_bottom = (register(order)(functools.partial(ordered_layers, order)) for order in ORDERED)


# ------------------------------------------------------------------------- consecutive against spread


@dataclass(frozen=True)
class LayerSetDesign:
    """The matched design of ``consecutive`` and ``spread`` for ``m`` of ``n_layers`` layers.

    ``starts``/``start_weights``: the first layer of a ``consecutive`` block and its probability.
    ``edges``: the ``spread`` sets as a flow over states ``(layer, taken so far, distance to the last taken
    layer)``: ``state -> [(take, next state, probability)]``; walking it from ``(0, 0, 0)`` draws one set.
    ``inclusion``: the probability that each layer is among the ``m`` (the same for both strategies).
    """

    n_layers: int
    m: int
    starts: tuple[int, ...]
    start_weights: tuple[float, ...]
    edges: dict
    inclusion: tuple[float, ...]
    adjacent_pairs: float  # expected number of adjacent layer pairs in a spread set


#: distance states of the spread flow: 0 = nothing taken yet, 1 = the previous layer was taken,
#: 2 = the one before it, 3 = three or more layers back
_FAR = 3


def _flow_edges(n_layers: int, m: int) -> list[tuple[tuple, tuple, bool]]:
    """Every edge ``(state, next state, take)`` of the spread flow that can still end with ``m`` taken."""
    edges, frontier = [], {(0, 0, 0)}
    for layer in range(n_layers):
        following = set()
        for state in sorted(frontier):
            _, k, d = state
            if k < m:  # take this layer
                edges.append((state, (layer + 1, k + 1, 1), True))
                following.add((layer + 1, k + 1, 1))
            if m - k <= n_layers - layer - 1:  # skip it (enough layers left)
                nxt = (layer + 1, k, 0 if d == 0 else min(d + 1, _FAR))
                edges.append((state, nxt, False))
                following.add(nxt)
        frontier = following
    return edges


def _solve_stage(c, a_ub, b_ub, a_eq, b_eq, n_vars):
    from scipy.optimize import linprog

    result = linprog(c, A_ub=a_ub or None, b_ub=b_ub or None, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * n_vars,
                     method="highs")  # fmt: skip
    if result.status != 0:
        raise RuntimeError(f"layer-set design LP failed: {result.message}")
    return result


@functools.lru_cache(maxsize=None)
def layer_set_design(n_layers: int, m: int) -> LayerSetDesign:
    """The matched design of ``consecutive`` and ``spread`` for ``m`` of ``n_layers`` layers (see the module doc).

    Three linear programs over (block start weights, spread flow, t), each keeping the optimum of the one
    before: equal per-layer inclusion for both strategies throughout, block weights symmetric under
    top <-> bottom reflection; (1) fewest expected adjacent pairs in a spread set; (2) inclusion as close to
    uniform ``m / L`` as possible (smallest largest deviation t); (3) fewest pairs two layers apart.
    """
    L = n_layers
    starts = list(range(L - m + 1))
    edges = _flow_edges(L, m)
    nb, ne = len(starts), len(edges)
    n_vars = nb + ne + 1  # block weights, edge flows, t
    a_eq, b_eq = [], []

    def row():
        return np.zeros(n_vars)

    r = row()
    r[:nb] = 1
    a_eq.append(r), b_eq.append(1.0)
    for s in starts:  # reflection symmetry of the blocks
        if s < L - m - s:
            r = row()
            r[s], r[L - m - s] = 1, -1
            a_eq.append(r), b_eq.append(0.0)
    nodes = sorted({e[0] for e in edges} | {e[1] for e in edges})
    for node in nodes:  # flow conservation; one unit leaves the source
        if node[0] == L:
            continue
        r = row()
        for j, (src, dst, _) in enumerate(edges):
            r[nb + j] += (src == node) - (dst == node)
        a_eq.append(r), b_eq.append(1.0 if node == (0, 0, 0) else 0.0)
    block_inclusion = np.array([[float(s <= l < s + m) for s in starts] for l in range(L)])
    for layer in range(L):  # the same inclusion probability for both strategies
        r = row()
        r[:nb] = block_inclusion[layer]
        for j, (src, _, take) in enumerate(edges):
            if take and src[0] == layer:
                r[nb + j] = -1
        a_eq.append(r), b_eq.append(0.0)
    a_ub, b_ub = [], []
    for layer in range(L):  # |inclusion - m / L| <= t
        for sign in (1, -1):
            r = row()
            r[:nb] = sign * block_inclusion[layer]
            r[-1] = -1
            a_ub.append(r), b_ub.append(sign * m / L)
    adjacent, two_apart = row(), row()
    for j, (src, _, take) in enumerate(edges):
        adjacent[nb + j] = float(take and src[2] == 1)
        two_apart[nb + j] = float(take and src[2] == 2)
    deviation = row()
    deviation[-1] = 1
    for objective in (adjacent, deviation, two_apart):
        result = _solve_stage(objective, a_ub, b_ub, a_eq, b_eq, n_vars)
        a_ub.append(objective), b_ub.append(result.fun + 1e-9)
    x = np.clip(result.x, 0, None)
    weights = x[:nb] / x[:nb].sum()
    flows: dict = {}
    for j, (src, dst, take) in enumerate(edges):
        flows.setdefault(src, []).append((take, dst, x[nb + j]))
    choices = {}
    for src, out in flows.items():  # solver noise (< 1e-9) dropped, then each state's choices sum to 1
        out = [(take, dst, f) for take, dst, f in out if f > 1e-9]
        total = sum(f for *_, f in out)
        if out:
            choices[src] = tuple((take, dst, f / total) for take, dst, f in out)
    inclusion = block_inclusion @ weights
    return LayerSetDesign(L, m, tuple(starts), tuple(float(w) for w in weights), choices,
                          tuple(float(p) for p in inclusion), max(float(adjacent @ x), 0.0))  # fmt: skip


def draw_block(design: LayerSetDesign, rng: np.random.Generator) -> list[int]:
    """A ``consecutive`` layer set: a block of ``m`` layers, its first layer drawn from the design's weights."""
    weights = np.where(np.asarray(design.start_weights) > 1e-9, design.start_weights, 0.0)
    start = design.starts[int(rng.choice(len(design.starts), p=weights / weights.sum()))]
    return list(range(start, start + design.m))


def draw_spread(design: LayerSetDesign, rng: np.random.Generator) -> list[int]:
    """A ``spread`` layer set: one walk through the design's flow, layer by layer."""
    state, layers = (0, 0, 0), []
    while state[0] < design.n_layers:
        options = design.edges[state]
        k = int(rng.choice(len(options), p=np.array([p for *_, p in options])))
        take, state, _ = options[k]
        if take:
            layers.append(state[0] - 1)
    return layers


def _block_strategy(ask: Ask, spread: bool) -> Heads:
    """``consecutive`` or ``spread`` in every kind (its proportional share of ``n``): ``m`` layers from the
    matched design, ``k`` of them whole and one partial (drawn uniformly among the ``m``, in both)."""
    heads: Heads = []
    for kind, n in proportional_shares(ask.space, ask.n).items():
        n_layers, n_heads = ask.space.shape(kind)
        whole, rest = divmod(n, n_heads)
        m = whole + (rest > 0)
        if m == 0:
            continue
        design = layer_set_design(n_layers, m)
        layers = draw_spread(design, ask.rng) if spread else draw_block(design, ask.rng)
        if rest:  # the partial layer goes last in the fill order
            partial = int(ask.rng.integers(m))
            layers = layers[:partial] + layers[partial + 1 :] + [layers[partial]]
        heads += _fill_kind(kind, layers, n, ask.space, ask.rng)
    return heads


def design_table(n_layers: int) -> pd.DataFrame:
    """The matched ``consecutive``/``spread`` design for every number ``m`` of touched layers of a model with
    ``n_layers`` layers: columns m, layer, inclusion (the same for both strategies), and the expected number
    of adjacent pairs of a consecutive block (``m - 1``) and of a spread set."""
    rows = []
    for m in range(1, n_layers + 1):
        design = layer_set_design(n_layers, m)
        for layer, p in enumerate(design.inclusion):
            rows.append({"m": m, "layer": layer, "inclusion": round(p, 9), "adjacent_consecutive": m - 1,
                         "adjacent_spread": round(design.adjacent_pairs, 9)})  # fmt: skip
    return pd.DataFrame(rows)


def layer_markdown(layer_counts=(6, 12)) -> str:
    """The README's table of which layers ``top``, ``bottom``, ``middle``, ``top_bottom`` and the bands take,
    for models of ``layer_counts`` layers (generated here; a test checks the README holds it verbatim)."""
    head = "| strategy | " + " | ".join(f"{n} layers" for n in layer_counts) + " |"
    lines = [head, "|---" * (len(layer_counts) + 1) + "|"]
    for name in ORDERED:
        cells = [", ".join(str(l) for l in layer_order(name, n)) for n in layer_counts]
        lines.append(f"| `{name}` (order) | " + " | ".join(cells) + " |")
    for band in BANDS:
        cells = [", ".join(str(l) for l in band_layers(band, n)) for n in layer_counts]
        lines.append(f"| `band:{band}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def design_markdown(n_layers: int) -> str:
    """The README's table of the matched consecutive/spread design for ``n_layers`` layers: per number of
    touched layers, each layer's inclusion probability (both strategies) and the expected adjacent pairs."""
    table = design_table(n_layers)
    lines = [f"| m of {n_layers} | inclusion of layers 0..{n_layers - 1} | adjacent pairs: consecutive / spread |",
             "|---:|---|---|"]  # fmt: skip
    for m, sub in table.groupby("m"):
        probs = " ".join(f"{p:.2f}" for p in sub["inclusion"])
        adj = sub["adjacent_spread"].iloc[0]
        lines.append(f"| {m} | {probs} | {m - 1} / {adj:.2f} |")
    return "\n".join(lines)


@register("consecutive")
def consecutive(ask: Ask) -> Heads:
    """A contiguous block of layers, placed by the matched design (whole layers plus one partial layer)."""
    return _block_strategy(ask, spread=False)


@register("spread")
def spread(ask: Ask) -> Heads:
    """As many layers as ``consecutive``, with the same inclusion per layer, as few adjacent as possible."""
    return _block_strategy(ask, spread=True)


# --------------------------------------------------------------------------------------------------- roles

LABEL_COLUMNS = ("layer", "head", "role", "label", "mean")


def label_kinds(labels: pd.DataFrame, space: HeadSpace) -> np.ndarray:
    """The kind of every row of a role labels table: its ``kind`` column, else the model's only kind."""
    if "kind" in labels.columns:
        return labels["kind"].astype(str).to_numpy()
    if space.single is None:
        raise HeadsieveError(
            f"role labels table has no kind column; a model with kinds {', '.join(space.names)} needs one"
        )
    return np.full(len(labels), space.single.kind, dtype=object)


def check_labels(labels: pd.DataFrame, space: HeadSpace) -> None:
    """Fail with one line unless ``labels`` is a role-test table of one model that fits ``space``."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise HeadsieveError(f"role labels table lacks column(s) {', '.join(missing)} (expected the role-test table)")
    if "model" in labels.columns and labels["model"].astype(str).nunique() > 1:
        models = ", ".join(sorted(labels["model"].astype(str).unique()))
        raise HeadsieveError(f"role labels table holds several models ({models}); filter it to the pruned model")
    kinds = label_kinds(labels, space)
    layer, head = labels["layer"].to_numpy(), labels["head"].to_numpy()
    for kind, l, h in zip(kinds, layer, head):
        n_layers, n_heads = space.shape(kind) if kind in space else (0, 0)
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            where = f"({int(l)}, {int(h)})" if space.single else f"({kind}, {int(l)}, {int(h)})"
            size = " + ".join(f"{L} x {H}" for L, H in space.shapes.values())
            raise HeadsieveError(f"role labels table has head {where} outside the model's {size} heads (labels of another model?)")


def flat_index(space: HeadSpace, kinds, layers, heads) -> np.ndarray:
    """Flat positions (:meth:`HeadSpace.index`) of the heads given as three parallel arrays."""
    offsets, widths, start = {}, {}, 0
    for k in space.kinds:
        offsets[k.kind], widths[k.kind], start = start, k.heads, start + k.size
    off = np.array([offsets[k] for k in kinds], dtype=np.int64)
    width = np.array([widths[k] for k in kinds], dtype=np.int64)
    return off + np.asarray(layers, dtype=np.int64) * width + np.asarray(heads, dtype=np.int64)


#: prefix of the decoder-only roles (``causal:induction``; :mod:`headsieve.roles.causal`)
CAUSAL_PREFIX = "causal:"


def table_role(roles: pd.Series, role: str) -> str:
    """``role`` as a labels table names it: itself, or, when the table holds no such role but its causal
    namesake, ``causal:<role>`` (a decoder's labels: ``prune_role:induction`` means ``causal:induction``)."""
    present = set(roles.unique())
    if role not in present and CAUSAL_PREFIX + role in present:
        return CAUSAL_PREFIX + role
    return role


def query_head_labels(labels: pd.DataFrame, space: HeadSpace) -> pd.DataFrame:
    """Role labels per query head.  A table of key-value group results (:func:`headsieve.roles.kv_groups.
    kv_group_tests`: a ``kv_group`` column, no ``head``) gives each query head of a group its group's row, so
    that role strategies prune or spare whole groups (a pruned group's keys and values go with it)."""
    if "head" in labels.columns or "kv_group" not in labels.columns:
        return labels
    kinds = label_kinds(labels, space)
    size = np.array([space.kind(k).group_size if k in space else 1 for k in kinds], dtype=np.int64)
    group = labels["kv_group"].to_numpy(dtype=np.int64)
    rows = np.repeat(np.arange(len(labels)), size)
    offset = np.concatenate([np.arange(n) for n in size]) if len(size) else np.zeros(0, dtype=np.int64)
    out = labels.iloc[rows].reset_index(drop=True)
    out["head"] = np.repeat(group * size, size) + offset
    return out


def role_strength(labels: pd.DataFrame, role: str, space: HeadSpace) -> dict[int, float]:
    """Flat index -> strength (largest mean of its labelled rows) of the heads labelled ``role``
    (:func:`table_role`: a decoder's table may be asked for ``induction``, ``sink``, ``prev``)."""
    roles = labels["role"].astype(str)
    role = table_role(roles, role)
    if not (roles == role).any():
        known = sorted(roles.unique())
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise HeadsieveError(f"role '{role}' is not in the role labels table (roles there: {shown})")
    keep = ((roles == role) & labels["label"].astype(bool)).to_numpy()
    rows = labels[keep]
    flat = flat_index(space, label_kinds(labels, space)[keep], rows["layer"].astype(int), rows["head"].astype(int))
    strength = rows["mean"].astype(float).groupby(flat).max()
    return {int(k): float(v) for k, v in strength.items()}


def _heads_at(space: HeadSpace, flat) -> Heads:
    every = space.heads()
    return [every[int(i)] for i in flat]


@register("prune_role", argument="role", uses_labels=True)
def prune_role(ask: Ask) -> Heads:
    """Heads labelled ``arg``, strongest first (ties by flat index); then random unlabelled heads."""
    n = ask.n
    strength = role_strength(ask.labels, ask.arg, ask.space)
    labelled = sorted(strength, key=lambda i: (-strength[i], i))
    chosen = labelled[:n]
    others = [i for i in range(ask.space.n_total) if i not in strength]
    return _heads_at(ask.space, chosen + _random_flat(others, n - len(chosen), ask.rng))


@register("spare_role", argument="role", uses_labels=True)
def spare_role(ask: Ask) -> Heads:
    """Random heads not labelled ``arg``; labelled ones (weakest first) only when those run out."""
    n = ask.n
    strength = role_strength(ask.labels, ask.arg, ask.space)
    others = [i for i in range(ask.space.n_total) if i not in strength]
    chosen = _random_flat(others, min(n, len(others)), ask.rng)
    labelled = sorted(strength, key=lambda i: (strength[i], i))
    return _heads_at(ask.space, chosen + labelled[: n - len(chosen)])


def _random_flat(candidates: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` flat indices drawn without replacement from ``candidates`` (in draw order)."""
    if n <= 0:
        return []
    return [int(i) for i in rng.choice(np.asarray(candidates, dtype=np.int64), n, replace=False)]


# ------------------------------------------------------------------------------------------- kinds


@register("kind", argument="kind")
def kind_first(ask: Ask) -> Heads:
    """Heads of kind ``arg`` first (random order), then random others."""
    kind = parse_kind(ask.arg, ask.space, f"kind:{ask.arg}")
    own = ask.space.heads([kind])
    return _first_then_others(_draw(own, len(own), ask.rng), ask.n, ask.space, ask.rng)


@register("spare", argument="kind")
def spare_kind(ask: Ask) -> Heads:
    """Random heads of the other kinds; kind ``arg`` only when they run out."""
    kind = parse_kind(ask.arg, ask.space, f"spare:{ask.arg}")
    others = ask.space.heads([k for k in ask.space.names if k != kind])
    return _first_then_others(_draw(others, len(others), ask.rng), ask.n, ask.space, ask.rng)


# ---------------------------------------------------------------------------------------------- importance


def check_importance(importance, space: HeadSpace) -> dict[str, np.ndarray]:
    """``importance`` as ``{kind: finite float array [layers, heads]}`` for every kind, else a one-line error."""
    if not isinstance(importance, dict) or set(importance) != set(space.names):
        raise HeadsieveError(f"head importance must give one array per kind ({', '.join(space.names)})")
    checked = {}
    for kind in space.names:
        values = np.asarray(importance[kind], dtype=float)
        if values.shape != space.shape(kind):
            raise HeadsieveError(
                f"{kind} head importance has shape {list(values.shape)}; the model needs {list(space.shape(kind))}"
            )
        if not np.isfinite(values).all():
            raise HeadsieveError(f"{kind} head importance has non-finite values (NaN or inf)")
        checked[kind] = values
    return checked


@register("importance")
def least_important(ask: Ask) -> Heads:
    """The ``n`` heads of lowest importance over all kinds; equal values are ordered at random."""
    values = np.concatenate([ask.importance[kind].reshape(-1) for kind in ask.space.names])
    perm = ask.rng.permutation(ask.space.n_total)
    order = perm[np.argsort(values[perm], kind="stable")]
    return _heads_at(ask.space, order[: ask.n])


# ---------------------------------------------------------------------------------------------- fixed size


def _layer_and_kind(ask: Ask, strategy: str) -> tuple[str, int]:
    """``L[:K]`` -> (kind, layer), checked."""
    text, _, kind = ask.arg.partition(":")
    kind = one_kind(kind, ask.space, f"{strategy}:{ask.arg}")
    return kind, parse_layer(text, ask.space, kind, strategy)


@register("keep_one", argument="layer[:kind]", fixed_size=True)
def keep_one(ask: Ask) -> Heads:
    """Every head of layer ``L`` but one: the most important (first on ties), else a random one."""
    kind, layer = _layer_and_kind(ask, "keep_one")
    n_heads = ask.space.shape(kind)[1]
    importance = ask.importance
    keep = int(np.argmax(importance[kind][layer])) if importance is not None else int(ask.rng.integers(n_heads))
    return [(kind, layer, h) for h in range(n_heads) if h != keep]


def _is_layer_index(arg: str | None) -> bool:
    return arg is not None and arg.partition(":")[0].lstrip("-").isdigit()


@register("layer", argument="layer or order[:kind]", fixed_size=_is_layer_index)
def by_layer(ask: Ask) -> Heads:
    """``layer:L[:K]`` (fixed-size): every head of layer ``L``; ``layer:ORDER[:K]``: whole layers in that
    order (:func:`ordered_layers`)."""
    first, _, kind = ask.arg.partition(":")
    if _is_layer_index(ask.arg):
        kind, layer = _layer_and_kind(ask, "layer")
        return [(kind, layer, h) for h in range(ask.space.shape(kind)[1])]
    if first not in ORDERED:
        raise HeadsieveError(
            f"pruning strategy 'layer:{ask.arg}': '{first}' is neither a layer index nor an order "
            f"({', '.join(ORDERED)})"
        )
    if kind:
        kind = parse_kind(kind, ask.space, f"layer:{ask.arg}")
    return ordered_layers(first, ask, kind or None)


@register("band", argument="band[:kind]", fixed_size=True)
def layer_band(ask: Ask) -> Heads:
    """Every head of the bottom, middle or top third of the layers."""
    band, _, kind = ask.arg.partition(":")
    if band not in BANDS:
        raise HeadsieveError(f"band: '{band}' is not one of {', '.join(BANDS)} (e.g. band:top)")
    kind = one_kind(kind, ask.space, f"band:{ask.arg}")
    n_layers, n_heads = ask.space.shape(kind)
    return [(kind, layer, h) for layer in band_layers(band, n_layers) for h in range(n_heads)]


# ----------------------------------------------------------------------------------------------- selection


def parse_strategy(name: str) -> tuple[str, str | None]:
    """``'prune_role:dep:nsubj'`` -> ``('prune_role', 'dep:nsubj')``, checked: a registered name, and an
    argument exactly when the strategy takes one."""
    base, sep, arg = str(name).strip().partition(":")
    if base not in STRATEGIES:
        raise HeadsieveError(f"unknown pruning strategy '{name}' (known: {', '.join(sorted(STRATEGIES))})")
    need = STRATEGIES[base].argument
    if need:
        if not arg.strip():
            raise HeadsieveError(f"pruning strategy '{base}' needs a {need} argument (e.g. {base}:<{need}>)")
        return base, arg.strip()
    if sep:
        raise HeadsieveError(f"pruning strategy '{base}' takes no argument (got '{name}')")
    return base, None


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


def _check_result(heads, name: str, n: int | None, space: HeadSpace) -> Heads:
    """The strategy's heads as sorted ``(kind, layer, head)``; a programming error unless distinct, in the
    space and ``n`` of them."""
    heads = [(str(k), int(l), int(h)) for k, l, h in heads]
    valid = set(space.heads())
    if len(set(heads)) != len(heads) or not set(heads) <= valid or (n is not None and len(heads) != n):
        raise RuntimeError(f"strategy '{name}' returned {len(heads)} heads, expected {n} distinct in-range heads")
    return sorted(heads, key=space.index)


def select_heads(
    name: str,
    space: HeadSpace,
    fraction: float,
    seed: int,
    labels: pd.DataFrame | None = None,
    importance: dict | None = None,
) -> Heads:
    """The heads (``(kind, layer, head)`` in flat order) that strategy ``name`` prunes at ``fraction``, seeded
    by ``seed``.  ``importance``: ``{kind: [layers, heads]}``.

    Checks the name and its argument, the fraction, and the labels table / importance the strategy needs;
    every problem is a one-line :class:`HeadsieveError`.
    """
    base, arg = parse_strategy(name)
    fraction = check_fraction(fraction)
    entry = STRATEGIES[base]
    if entry.uses_labels:
        if labels is None:
            raise HeadsieveError(f"pruning strategy '{name}' needs the role labels table (role tests of this model)")
        labels = query_head_labels(labels, space)
        check_labels(labels, space)
    if importance is not None:
        importance = check_importance(importance, space)
    elif base == "importance":
        raise HeadsieveError(f"pruning strategy '{name}' needs head importance scores (none given)")
    ask = Ask(space, fraction, strategy_rng(seed, name, fraction), labels, importance, arg)
    heads = entry.fn(ask)
    return _check_result(heads, name, None if entry.fixed_size(arg) else ask.n, space)


#: the small model :func:`check_strategy` tries a strategy on
CHECK_SPACE = HeadSpace.from_shapes({kind: (2, 2) for kind in KINDS})


def check_strategy(name: str, space: HeadSpace = CHECK_SPACE, labels: bool = False) -> None:
    """Fail with one line unless ``name`` and its argument are valid (tried on ``space``, by default a small
    encoder-decoder, with importance); a role strategy fails unless ``labels`` says role labels are given."""
    base, _ = parse_strategy(name)
    if STRATEGIES[base].uses_labels:
        if not labels:
            raise HeadsieveError(f"pruning strategy '{name}' needs the role labels table (role tests of this model)")
        return
    select_heads(name, space, 0.5, 0, importance={kind: np.ones(space.shape(kind)) for kind in space.names})
