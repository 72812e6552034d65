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

import functools
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


def _block_strategy(facts: ModelFacts, fraction: float, rng: np.random.Generator, spread: bool) -> Heads:
    """``consecutive`` or ``spread``: ``m`` layers from the matched design, ``k`` of them whole and one partial
    (drawn uniformly among the ``m``, in both strategies)."""
    n = n_to_prune(facts, fraction)
    whole, rest = divmod(n, facts.n_heads)
    m = whole + (rest > 0)
    if m == 0:
        return []
    design = layer_set_design(facts.n_layers, m)
    layers = draw_spread(design, rng) if spread else draw_block(design, rng)
    if rest:  # the partial layer goes last in the fill order
        partial = int(rng.integers(m))
        layers = layers[:partial] + layers[partial + 1 :] + [layers[partial]]
    return _fill_layers(layers, n, facts, rng)


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


#: strategies that take whole layers in a fixed order (:func:`layer_order`)
ORDERED = ("top", "bottom", "middle", "top_bottom")


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
def consecutive(facts, fraction, rng, labels, importance, arg) -> Heads:
    """A contiguous block of layers, placed by the matched design (whole layers plus one partial layer)."""
    return _block_strategy(facts, fraction, rng, spread=False)


@register("spread")
def spread(facts, fraction, rng, labels, importance, arg) -> Heads:
    """As many layers as ``consecutive``, with the same inclusion per layer, as few adjacent as possible."""
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
