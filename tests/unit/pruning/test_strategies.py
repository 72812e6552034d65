"""The one strategy registry (headsieve.pruning.strategies) over the head space: sizes, determinism, semantics,
kind-aware entries, errors; the masks table, heads_of and read_importance (headsieve.pruning.masks)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from headsieve.errors import HeadsieveError
from headsieve.models.headspace import KINDS, HeadSpace
from headsieve.pruning import strategies as S
from headsieve.pruning.strategies import select_heads
from support.paths import REPO

SHAPES = [HeadSpace.encoder(6, 12), HeadSpace.encoder(12, 12)]
FRACTIONS = [0.0, 0.1, 0.5, 0.9]
RANDOMISED = ["random", "consecutive", "spread", "prune_role:local", "spare_role:local", "importance"]


def role_table(facts: HeadSpace, labelled: dict[tuple[int, int], float], role: str = "local") -> pd.DataFrame:
    """A role-test-like table of an encoder: every head x (role, 'cls'); ``labelled`` heads hold ``role`` with
    that mean."""
    rows = []
    n_layers, n_heads = facts.shape("encoder")
    for layer in range(n_layers):
        for head in range(n_heads):
            for r in (role, "cls"):
                is_label = r == role and (layer, head) in labelled
                mean = labelled[(layer, head)] if is_label else 1.0 + 0.01 * head
                row = dict(layer=layer, head=head, role=r, n=50, mean=mean, label=is_label)
                rows.append(dict(model="m", corpus="ewt", **row))
    table = pd.DataFrame(rows)
    table["role"] = table["role"].astype("category")
    return table


def some_labels(facts: HeadSpace) -> pd.DataFrame:
    """A few labelled 'local' heads with distinct means."""
    heads = {(0, 1): 4.0, (1, 3): 9.0, (n_layers(facts) - 1, 0): 6.0, (2, 5): 5.0}
    return role_table(facts, heads)


def n_layers(space: HeadSpace) -> int:
    return space.shape("encoder")[0]


def n_heads(space: HeadSpace) -> int:
    return space.shape("encoder")[1]


def random_importance(facts: HeadSpace, seed: int = 3) -> dict[str, np.ndarray]:
    return {"encoder": np.random.default_rng(seed).random(facts.shape("encoder"))}


def run(name, facts, fraction, seed=0, **kw):
    labels = some_labels(facts) if "role" in name else None
    importance = random_importance(facts) if name == "importance" else kw.pop("importance", None)
    return pairs(select_heads(name, facts, fraction, seed, labels=labels, importance=importance, **kw))


def pairs(heads) -> list[tuple[int, int]]:
    """(layer, head) of an encoder's heads (every kind is 'encoder')."""
    assert {k for k, _, _ in heads} <= {"encoder"}
    return [(l, h) for _, l, h in heads]


def layers_of(heads) -> list[int]:
    return sorted({layer for layer, _ in heads})


def full_layers(heads, facts) -> list[int]:
    return [l for l in layers_of(heads) if sum(1 for x, _ in heads if x == l) == n_heads(facts)]


# ------------------------------------------------------------------------------------------- size, determinism

SIZED = ["random", "top", "bottom", "middle", "top_bottom", "consecutive", "spread",
         "prune_role:local", "spare_role:local", "importance"]


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: "x".join(map(str, f.shape("encoder"))))
@pytest.mark.parametrize("name", SIZED)
def test_sizes_distinct_in_range_sorted(name, facts):
    for fraction in FRACTIONS:
        heads = run(name, facts, fraction)
        assert len(heads) == round(fraction * facts.n_total)
        assert len(set(heads)) == len(heads) and heads == sorted(heads)
        assert all(0 <= l < n_layers(facts) and 0 <= h < n_heads(facts) for l, h in heads)
        assert all(type(l) is int and type(h) is int for l, h in heads)


@pytest.mark.parametrize("name", SIZED + ["keep_one:2"])
def test_same_seed_same_heads(name):
    facts = SHAPES[1]
    assert run(name, facts, 0.3, seed=5) == run(name, facts, 0.3, seed=5)


@pytest.mark.parametrize("name", ["random", "consecutive", "spread", "prune_role:local", "spare_role:local"])
def test_different_seeds_usually_differ(name):
    facts = SHAPES[1]
    # 0.37: partial layer for consecutive/spread, random remainder for prune_role, random choice for spare_role
    results = {tuple(run(name, facts, 0.37, seed=s)) for s in range(6)}
    assert len(results) >= 3


def test_streams_depend_on_name_and_fraction():
    facts = SHAPES[1]
    assert S.strategy_rng(0, "random", 0.1).random() != S.strategy_rng(0, "spread", 0.1).random()
    assert S.strategy_rng(0, "random", 0.1).random() != S.strategy_rng(0, "random", 0.2).random()
    assert S.strategy_rng(0, "prune_role:a", 0.1).random() != S.strategy_rng(0, "prune_role:b", 0.1).random()
    assert S.strategy_rng(4, "random", 0.1).random() == S.strategy_rng(4, "random", 0.1).random()
    assert run("random", facts, 0.5, seed=1) != run("random", facts, 0.5, seed=2)


# ------------------------------------------------------------------------------------------ layer strategies


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: "x".join(map(str, f.shape("encoder"))))
def test_top_and_bottom_take_whole_layers(facts):
    L, H = facts.shape("encoder")
    top = run("top", facts, 1 / L)
    assert top == [(L - 1, h) for h in range(H)]
    assert run("bottom", facts, 1 / L) == [(0, h) for h in range(H)]
    assert run("layer:top", facts, 1 / L) == top  # the translation name of the same strategy
    # 1.5 layers: the top layer whole plus half of the next one
    heads = run("top", facts, 1.5 / L)
    assert full_layers(heads, facts) == [L - 1]
    assert layers_of(heads) == [L - 2, L - 1]


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: "x".join(map(str, f.shape("encoder"))))
def test_middle_and_top_bottom(facts):
    L = n_layers(facts)
    for fraction in (0.1, 2 / L):
        mid = layers_of(run("middle", facts, fraction))
        assert 0 not in mid and L - 1 not in mid
        assert all(abs(2 * l - (L - 1)) <= 3 for l in mid)
        assert set(layers_of(run("top_bottom", facts, fraction))) <= {0, L - 1}
    assert layers_of(run("top_bottom", facts, 2 / L)) == [0, L - 1]
    # half the heads: top_bottom prunes the outer layers and spares the middle ones
    ends = layers_of(run("top_bottom", facts, 0.5))
    assert ends == sorted(S.layer_order("top_bottom", L)[: L // 2])
    assert (L // 2 - 1) not in ends and (L // 2) not in ends
    assert S.layer_order("middle", 12)[:4] == [5, 6, 4, 7]
    assert S.layer_order("top_bottom", 5) == [4, 0, 3, 1, 2]


@pytest.mark.parametrize("facts", SHAPES + [HeadSpace.encoder(7, 4)], ids=lambda f: "x".join(map(str, f.shape("encoder"))))
def test_consecutive_contiguous_spread_not_adjacent(facts):
    L, H = facts.shape("encoder")
    for n in range(0, facts.n_total):
        fraction = (n + 0.25) / facts.n_total  # rounds to n
        for seed in range(3):
            block = run("consecutive", facts, fraction, seed)
            spread = run("spread", facts, fraction, seed)
            assert len(block) == len(spread) == n
            m = -(-n // H)
            for heads in (block, spread):
                assert len(layers_of(heads)) == m and len(full_layers(heads, facts)) == n // H
            touched = layers_of(block)
            assert touched == list(range(touched[0], touched[0] + m)) if m else touched == []
            if 2 * m <= L:  # spread never holds adjacent layers where the matched design allows it
                gaps = np.diff(layers_of(spread))
                assert (gaps >= 2).all(), (n, seed, layers_of(spread))


def inclusion_rates(name: str, facts: HeadSpace, fraction: float, draws: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Over ``draws`` seeds: the share of draws touching each layer, the mean number of its heads pruned, and
    the layer sets drawn."""
    touched = np.zeros(n_layers(facts))
    heads_per_layer = np.zeros(n_layers(facts))
    sets = []
    for seed in range(draws):
        heads = run(name, facts, fraction, seed)
        layers = layers_of(heads)
        touched[layers] += 1
        for layer, _ in heads:
            heads_per_layer[layer] += 1
        sets.append(layers)
    return touched / draws, heads_per_layer / draws, sets


def equal_rates(a: np.ndarray, b: np.ndarray, draws: int, z: float = 4.0) -> bool:
    """Whether two per-layer inclusion rates, each from ``draws`` independent draws, agree within ``z`` standard
    errors of their difference at every layer (a two-proportion z test, |z| <= 4: with 6-12 layers the chance
    of a false alarm under equal rates is below 1e-3)."""
    pooled = (a + b) / 2
    se = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / draws)
    return bool((np.abs(a - b) <= z * se + 1e-12).all())


DRAWS = 1200


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: "x".join(map(str, f.shape("encoder"))))
@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.5, 0.6, 0.8])
def test_consecutive_and_spread_include_each_layer_equally_often(facts, fraction):
    """The confound of the old design (6 layers at 60%: the top layer in 35% of consecutive draws, 67% of
    spread draws) is gone: over many seeds each layer is touched, and loses heads, equally often in both."""
    L = n_layers(facts)
    rc, hc, block_sets = inclusion_rates("consecutive", facts, fraction, DRAWS)
    rs, hs, spread_sets = inclusion_rates("spread", facts, fraction, DRAWS)
    assert equal_rates(rc, rs, DRAWS), (rc.round(3), rs.round(3))
    m = len(block_sets[0])
    design = S.layer_set_design(L, m)
    assert np.allclose(rc, design.inclusion, atol=4 * np.sqrt(0.25 / DRAWS))  # the draws follow the design
    # expected heads pruned per layer: the same up to sampling error (sd of a layer's count <= n_heads)
    assert np.abs(hc - hs).max() <= 4 * n_heads(facts) * np.sqrt(2 / DRAWS)
    # top and bottom exposure and mean depth are the same
    assert abs(rc[0] - rc[-1]) <= 4 * np.sqrt(0.5 / DRAWS) and abs(rs[0] - rs[-1]) <= 4 * np.sqrt(0.5 / DRAWS)
    depth_c = np.mean([np.mean(s) for s in block_sets])
    depth_s = np.mean([np.mean(s) for s in spread_sets])
    assert abs(depth_c - depth_s) <= 4 * L / np.sqrt(12 * DRAWS)
    adjacent = [sum(np.diff(s) == 1) for s in spread_sets]
    assert all(sum(np.diff(s) == 1) == m - 1 for s in block_sets)  # every block is contiguous
    if 2 * m <= L:
        assert max(adjacent) == 0
    elif m < L - 1:
        assert np.mean(adjacent) < m - 1


def test_the_inclusion_check_catches_a_confounded_design():
    """The check of the test above has power: the old design (uniform block start against systematic
    sampling) fails it at the issue's example, 6 layers at 60% (m = 4 layers)."""
    L, m, draws = 6, 4, DRAWS
    rng = np.random.default_rng(0)
    old_block = np.zeros(L)
    old_spread = np.zeros(L)
    for _ in range(draws):
        start = rng.integers(L - m + 1)
        old_block[start : start + m] += 1
        c = rng.integers(L)
        old_spread[[(c + i * L) // m for i in range(m)]] += 1
    assert not equal_rates(old_block / draws, old_spread / draws, draws)


@pytest.mark.parametrize("n_layers", [5, 6, 7, 12, 24])
def test_design_matches_inclusion_exactly(n_layers):
    """By construction, not only in the draws: both strategies' inclusion probabilities are equal, sum to m,
    and are symmetric (top exposure = bottom exposure)."""
    for m in range(1, n_layers + 1):
        d = S.layer_set_design(n_layers, m)
        block = np.zeros(n_layers)
        for start, w in zip(d.starts, d.start_weights):
            block[start : start + m] += w
        spread = np.zeros(n_layers)
        stack = [((0, 0, 0), 1.0)]
        while stack:  # exact spread inclusion, walking the flow
            state, p = stack.pop()
            for take, nxt, q in d.edges.get(state, ()):
                if take:
                    spread[nxt[0] - 1] += p * q
                if nxt[0] < n_layers:
                    stack.append((nxt, p * q))
        assert np.allclose(block, spread, atol=1e-7) and np.allclose(block, d.inclusion)
        assert np.isclose(block.sum(), m) and np.allclose(block, block[::-1], atol=1e-7)
        if 2 * m <= n_layers:
            assert d.adjacent_pairs < 1e-7
        if n_layers % m == 0:
            assert np.allclose(block, m / n_layers, atol=1e-7)  # blocks tile the layers: uniform


def test_partial_layer_is_any_of_the_touched_layers():
    facts = HeadSpace.encoder(6, 4)
    seen = set()
    for seed in range(60):
        heads = run("consecutive", facts, 10 / 24, seed)  # 2 whole layers + 2 heads of a third
        touched = layers_of(heads)
        partial = (set(touched) - set(full_layers(heads, facts))).pop()
        seen.add(touched.index(partial))
    assert seen == {0, 1, 2}


def test_readme_states_the_layers_of_each_strategy():
    """README.md holds the generated tables verbatim: which layers top/bottom/middle/top_bottom and the bands
    mean for 6- and 12-layer models, and the matched consecutive/spread design for both."""

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert S.layer_markdown((6, 12)) in readme
    assert S.design_markdown(6) in readme and S.design_markdown(12) in readme


def test_ordered_strategies_prune_the_same_number_of_heads():
    for facts in SHAPES:
        for fraction in (0.1, 0.25, 0.4, 0.6, 0.8):
            sizes = {len(run(name, facts, fraction)) for name in S.ORDERED + ("consecutive", "spread", "random")}
            assert sizes == {S.n_to_prune(facts, fraction)}
    assert {len(run(f"band:{b}", SHAPES[1], 0.1)) for b in S.BANDS} == {4 * 12}


# ------------------------------------------------------------------------------------------------- roles


def test_prune_role_strongest_first_then_random():
    facts = SHAPES[0]
    labels = some_labels(facts)
    strongest = [(1, 3), (5, 0), (2, 5), (0, 1)]  # means 9, 6, 5, 4
    for k in range(1, 5):
        heads = select_heads("prune_role:local", facts, k / facts.n_total, 0, labels=labels)
        assert pairs(heads) == sorted(strongest[:k])
    heads = pairs(select_heads("prune_role:local", facts, 10 / facts.n_total, 0, labels=labels))
    assert set(strongest) <= set(heads) and len(heads) == 10


def test_prune_role_uses_labels_not_means():
    facts = SHAPES[0]
    labels = some_labels(facts)
    # an unlabelled row with a huge mean must not count
    labels.loc[(labels["layer"] == 3) & (labels["head"] == 3) & (labels["role"] == "local"), "mean"] = 99.0
    heads = select_heads("prune_role:local", facts, 1 / facts.n_total, 0, labels=labels)
    assert heads == [("encoder", 1, 3)]


def test_prune_role_several_corpora_and_role_with_colon():
    facts = SHAPES[0]
    a = role_table(facts, {(0, 0): 5.0}, role="dep:nsubj")
    b = role_table(facts, {(4, 4): 7.0}, role="dep:nsubj").assign(corpus="pud")
    heads = select_heads("prune_role:dep:nsubj", facts, 2 / facts.n_total, 0, labels=pd.concat([a, b]))
    assert pairs(heads) == [(0, 0), (4, 4)]


def test_spare_role_never_prunes_labelled_while_others_remain():
    facts = SHAPES[0]
    labels = some_labels(facts)
    labelled = {(0, 1), (1, 3), (5, 0), (2, 5)}
    n_free = facts.n_total - len(labelled)
    for n in (1, 10, 40, n_free):
        for seed in range(3):
            heads = pairs(select_heads("spare_role:local", facts, n / facts.n_total, seed, labels=labels))
            assert not labelled & set(heads)
    heads = pairs(select_heads("spare_role:local", facts, (n_free + 1) / facts.n_total, 0, labels=labels))
    assert labelled & set(heads) == {(0, 1)}  # the weakest labelled head goes first


def test_role_strategies_over_several_kinds_read_the_kind_column():
    """On an encoder-decoder the labels carry a kind column; the labelled heads of every kind are pruned
    strongest first, and a table without the column is refused in one line."""
    space = HeadSpace.from_shapes({"encoder": (2, 4), "decoder": (2, 4), "cross": (2, 4)})
    labelled = {("cross", 1, 2): 8.0, ("encoder", 0, 3): 6.0, ("decoder", 1, 0): 3.0}
    rows = [dict(kind=k, layer=l, head=h, role="align", mean=labelled.get((k, l, h), 1.0), label=(k, l, h) in labelled)
            for k, l, h in space.heads()]  # fmt: skip
    labels = pd.DataFrame(rows)
    assert select_heads("prune_role:align", space, 2 / 24, 0, labels=labels) == [("encoder", 0, 3), ("cross", 1, 2)]
    spared = select_heads("spare_role:align", space, 21 / 24, 0, labels=labels)
    assert not set(labelled) & set(spared)
    with pytest.raises(HeadsieveError, match="role labels table has no kind column") as err:
        select_heads("prune_role:align", space, 0.1, 0, labels=labels.drop(columns="kind"))
    assert "\n" not in str(err.value)
    with pytest.raises(HeadsieveError, match=r"head \(cross, 2, 0\) outside the model's"):
        select_heads("prune_role:align", space, 0.1, 0, labels=pd.concat([labels, labels.tail(1).assign(layer=2, head=0)]))


# -------------------------------------------------------------------------------------- importance, keep_one


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: "x".join(map(str, f.shape("encoder"))))
def test_importance_prunes_lowest(facts):
    imp = random_importance(facts, 8)
    values = imp["encoder"]
    for fraction in (0.1, 0.5):
        heads = pairs(select_heads("importance", facts, fraction, 0, importance=imp))
        pruned = np.array([values[l, h] for l, h in heads])
        kept = np.delete(values.reshape(-1), [l * n_heads(facts) + h for l, h in heads])
        assert pruned.max() < kept.min()


def test_keep_one():
    facts = SHAPES[1]
    imp = random_importance(facts)
    H = n_heads(facts)
    for layer in (0, 7, 11):
        heads = pairs(select_heads(f"keep_one:{layer}", facts, 0.0, 0, importance=imp))
        assert layers_of(heads) == [layer] and len(heads) == H - 1
        kept = ({h for h in range(H)} - {h for _, h in heads}).pop()
        assert kept == int(np.argmax(imp["encoder"][layer]))
    heads = pairs(select_heads("keep_one:4", facts, 0.5, 0))  # fraction ignored, random survivor
    assert layers_of(heads) == [4] and len(heads) == H - 1
    survivors = {
        (set(range(12)) - {h for _, _, h in select_heads("keep_one:4", facts, 0.0, s)}).pop() for s in range(10)
    }
    assert len(survivors) >= 3


# ------------------------------------------------------------------------------------ kind-aware strategies

FACTS = HeadSpace.from_shapes({"encoder": (6, 8), "decoder": (6, 8), "cross": (6, 8)})
UNEVEN = HeadSpace.from_shapes({"encoder": (4, 2), "decoder": (3, 4), "cross": (3, 4)})
KIND_AWARE = ["random", "importance", "kind:encoder", "kind:decoder", "kind:cross", "spare:cross", "spare:encoder",
              "layer:top", "layer:bottom", "layer:middle", "layer:top_bottom", "layer:top:cross",
              "layer:bottom:encoder", "top", "consecutive", "spread"]  # fmt: skip


def every_importance(space: HeadSpace, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.random(space.shape(k)) for k in space.names}


@pytest.mark.parametrize("space", [FACTS, UNEVEN], ids=["6x8x3", "uneven"])
@pytest.mark.parametrize("name", KIND_AWARE)
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.9])
def test_every_strategy_prunes_n_distinct_heads_of_every_kind(space, name, fraction):
    importance = every_importance(space)
    heads = select_heads(name, space, fraction, seed=3, importance=importance)
    assert len(heads) == len(set(heads)) == round(fraction * space.n_total)
    assert set(heads) <= set(space.heads()) and heads == sorted(heads, key=space.index)
    assert heads == select_heads(name, space, fraction, seed=3, importance=importance)  # seeded


def test_kind_and_spare_strategies():
    n = round(0.3 * FACTS.n_total)  # 43 < 48 heads of one kind
    assert {k for k, _, _ in select_heads("kind:cross", FACTS, 0.3, 1)} == {"cross"}
    assert "cross" not in {k for k, _, _ in select_heads("spare:cross", FACTS, 0.3, 1)}
    big = select_heads("kind:cross", FACTS, 0.5, 1)  # 72 > 48: every cross head, then 24 others
    assert sum(k == "cross" for k, _, _ in big) == 48 and len(big) == 72
    spared = select_heads("spare:cross", FACTS, 0.8, 1)  # 115 > 96 others: 19 cross heads
    assert sum(k == "cross" for k, _, _ in spared) == 115 - 96
    assert len(select_heads("kind:cross", FACTS, 0.3, 1)) == n


def test_layer_strategies_follow_the_layer_orders_in_every_kind():
    heads = select_heads("layer:top", FACTS, 1 / 3, 0)  # 48 heads: 16 per kind = the top two layers
    for kind in KINDS:
        assert {(l, h) for k, l, h in heads if k == kind} == {(l, h) for l in (4, 5) for h in range(8)}
    bottom = select_heads("layer:bottom:encoder", FACTS, 0.2, 0)  # 29: layers 0-2 whole, 5 heads of layer 3
    assert {k for k, _, _ in bottom} == {"encoder"}
    assert Counter(l for _, l, _ in bottom) == {0: 8, 1: 8, 2: 8, 3: 5}
    assert S.proportional_shares(UNEVEN, 10) == {"encoder": 2, "decoder": 4, "cross": 4}
    assert sum(S.proportional_shares(UNEVEN, 7).values()) == 7
    block = select_heads("consecutive", FACTS, 1 / 3, 0)  # 16 heads per kind: two whole adjacent layers each
    for kind in KINDS:
        layers = sorted({l for k, l, _ in block if k == kind})
        assert len(layers) == 2 and layers[1] - layers[0] == 1


def test_importance_strategy_takes_the_least_important_of_all_kinds():
    importance = {k: np.ones(FACTS.shape(k)) for k in KINDS}
    importance["cross"][2, 3] = 0.1
    importance["encoder"][5, 0] = 0.2
    importance["decoder"][0, 7] = 0.05
    heads = select_heads("importance", FACTS, 3 / 144, 0, importance=importance)
    assert heads == [("encoder", 5, 0), ("decoder", 0, 7), ("cross", 2, 3)]


def test_fixed_size_strategies_name_a_kind_on_several_kinds():
    assert select_heads("layer:2:cross", FACTS, 0.0, 0) == [("cross", 2, h) for h in range(8)]
    assert {k for k, _, _ in select_heads("band:top:decoder", FACTS, 0.0, 0)} == {"decoder"}
    kept = select_heads("keep_one:1:encoder", FACTS, 0.0, 0, importance=every_importance(FACTS))
    assert len(kept) == 7 and {(k, l) for k, l, _ in kept} == {("encoder", 1)}
    with pytest.raises(HeadsieveError, match=r"'layer:2' needs a kind on a model with several attention kinds"):
        select_heads("layer:2", FACTS, 0.0, 0)
    assert S.is_fixed_size("layer:2:cross") and S.is_fixed_size("keep_one:1") and S.is_fixed_size("band:top")
    assert not S.is_fixed_size("layer:top") and not S.is_fixed_size("layer:top:cross") and not S.is_fixed_size("random")


def test_strategies_are_independent_across_names_fractions_and_seeds():
    a = select_heads("random", FACTS, 0.3, 1)
    assert a != select_heads("random", FACTS, 0.3, 2)
    assert a != select_heads("spare:decoder", FACTS, 0.3, 1)
    assert set(a) != set(select_heads("random", FACTS, 0.31, 1)[: len(a)])


def test_an_encoder_is_the_single_kind_case():
    """On a one-kind space ``layer:top`` is ``top`` draw for draw given the same generator (through
    select_heads each name has its own stream), and a kind outside the space is refused."""
    space = SHAPES[0]
    top = S.top(S.Ask(space, 0.3, S.strategy_rng(0, "x", 0.3)))
    assert top == S.by_layer(S.Ask(space, 0.3, S.strategy_rng(0, "x", 0.3), arg="top"))
    assert len({l for _, l, _ in top}) == 2  # 22 heads of 6 x 12: the top layer whole and 10 heads of the next
    assert len(select_heads("kind:encoder", space, 0.3, 0)) == S.n_to_prune(space, 0.3)
    with pytest.raises(HeadsieveError, match="kind 'cross' is not one of encoder"):
        select_heads("kind:cross", space, 0.3, 0)


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, fraction, kw, message",
    [
        ("magic", 0.1, {}, r"unknown pruning strategy 'magic' \(known: .*bottom.*keep_one.*kind.*spare.*spread"),
        ("random", 1.0, {}, r"pruning fraction 1.0 is outside \[0, 1\)"),
        ("random", -0.1, {}, r"outside \[0, 1\)"),
        ("random", float("nan"), {}, r"not a number in \[0, 1\)"),
        ("random", "0.5", {}, r"not a number"),
        ("prune_role:local", 0.1, {}, r"'prune_role:local' needs the role labels table"),
        ("spare_role:local", 0.1, {}, r"needs the role labels table"),
        ("prune_role", 0.1, {}, r"'prune_role' needs a role argument"),
        ("keep_one", 0.1, {}, r"'keep_one' needs a layer\[:kind\] argument"),
        ("keep_one:12", 0.1, {}, r"keep_one: layer 12 out of range \(the model has 12 layers"),
        ("keep_one:-1", 0.1, {}, r"layer -1 out of range"),
        ("keep_one:x", 0.1, {}, r"layer 'x' is not an integer"),
        ("keep_one:3:cross", 0.1, {}, r"kind 'cross' is not one of encoder"),
        ("importance", 0.1, {}, r"'importance' needs head importance scores"),
        ("importance", 0.1, {"importance": {"encoder": np.ones((3, 3))}}, r"encoder head importance has shape \[3, 3\]"),
        ("importance", 0.1, {"importance": np.ones((12, 12))}, r"head importance must give one array per kind \(encoder\)"),
        ("importance", 0.1, {"importance": {"encoder": np.full((12, 12), np.nan)}}, r"non-finite"),
        ("random:3", 0.1, {}, r"'random' takes no argument"),
        ("prune_role:nosuch", 0.1, {"labels": "table"}, r"role 'nosuch' is not in the role labels table"),
        ("layer:sideways", 0.1, {}, r"'sideways' is neither a layer index nor an order \(top, bottom"),
        ("kind", 0.1, {}, r"'kind' needs a kind argument"),
        ("spare:self", 0.1, {}, r"kind 'self' is not one of encoder"),
    ],
)
def test_errors_are_one_line(name, fraction, kw, message):
    facts = SHAPES[1]
    if kw.get("labels") == "table":
        kw = dict(kw, labels=some_labels(facts))
    with pytest.raises(HeadsieveError, match=message) as err:
        select_heads(name, facts, fraction, 0, **kw)
    assert "\n" not in str(err.value)


def test_label_table_errors():
    facts = SHAPES[0]
    labels = some_labels(facts)
    with pytest.raises(HeadsieveError, match=r"lacks column\(s\) mean"):
        select_heads("prune_role:local", facts, 0.1, 0, labels=labels.drop(columns="mean"))
    two = pd.concat([labels, labels.assign(model="other")])
    with pytest.raises(HeadsieveError, match=r"several models \(m, other\)"):
        select_heads("prune_role:local", facts, 0.1, 0, labels=two)
    with pytest.raises(HeadsieveError, match=r"outside the model's 3 x 12 heads"):
        select_heads("prune_role:local", HeadSpace.encoder(3, 12), 0.1, 0, labels=labels)
    with pytest.raises(HeadsieveError, match=r"seed -1"):
        select_heads("random", facts, 0.1, -1)


def test_layer_and_band_strategies_prune_whole_layers():
    from headsieve.models.headspace import band_layers

    facts = HeadSpace.encoder(12, 12)
    heads = select_heads("layer:4", facts, 0.0, seed=0)
    assert heads == [("encoder", 4, h) for h in range(12)]
    assert band_layers("bottom", 12) == [0, 1, 2, 3] and band_layers("top", 12) == [8, 9, 10, 11]
    assert band_layers("middle", 6) == [2, 3]
    top = select_heads("band:top", facts, 0.0, seed=0)
    assert {l for _, l, _ in top} == {8, 9, 10, 11} and len(top) == 48
    with pytest.raises(HeadsieveError, match="band: 'upper' is not one of bottom, middle, top"):
        select_heads("band:upper", facts, 0.0, seed=0)
    with pytest.raises(HeadsieveError, match="layer: layer 12 out of range"):
        select_heads("layer:12", facts, 0.0, seed=0)


def test_registry_lists_every_entry_and_its_argument():
    """The registry is the one list: names, arguments, which read labels; check_strategy tries a name on a
    small encoder-decoder (the translation settings' check)."""
    assert {"random", "top", "consecutive", "spread", "prune_role", "importance", "keep_one", "layer", "band",
            "kind", "spare"} <= set(S.STRATEGIES)  # fmt: skip
    assert S.STRATEGIES["prune_role"].argument == "role" and S.STRATEGIES["random"].argument is None
    assert S.needs_role_labels(["random", "spare_role:local"]) and not S.needs_role_labels(["random", "kind:cross"])
    S.check_strategy("layer:top:cross")
    for name, message in [("kind:self", "kind 'self'"), ("layer:1", "needs a kind"), ("nope", "unknown pruning strategy"),
                          ("prune_role:local", "needs the role labels table")]:  # fmt: skip
        with pytest.raises(HeadsieveError, match=message) as err:
            S.check_strategy(name)
        assert "\n" not in str(err.value)
    S.check_strategy("prune_role:local", labels=True)


# ------------------------------------------------------------------------------------------ the masks table


def test_mask_table_of_an_encoder_and_of_an_encoder_decoder(tmp_path):
    from headsieve.pruning.masks import MASK_COLUMNS, heads_of, mask_table

    space = HeadSpace.encoder(3, 4)
    table = mask_table(space, ["random", "layer:1"], [0.0, 0.5], seed=2)
    assert list(table.columns) == MASK_COLUMNS
    numeric = {c: str(t) for c, t in table.dtypes.items() if c not in ("strategy", "kind")}
    assert numeric == {"fraction": "float64", "seed": "int32", "layer": "int16", "head": "int16"}
    empty = table[(table.strategy == "random") & (table.fraction == 0.0)]
    assert empty[["kind", "layer", "head"]].values.tolist() == [["", -1, -1]]
    assert heads_of(table, "random", 0.0) == []
    assert heads_of(table, "random", 0.5) == select_heads("random", space, 0.5, 2)
    assert set(table.loc[table.layer >= 0, "kind"]) == {"encoder"}
    assert heads_of(table, "layer:1", None) == [("encoder", 1, h) for h in range(4)]  # fixed size: its own fraction
    assert table.loc[table.strategy == "layer:1", "fraction"].unique().tolist() == [round(4 / 12, 4)]
    seq2seq = HeadSpace.from_shapes({"encoder": (2, 2), "decoder": (2, 2), "cross": (2, 2)})
    table = mask_table(seq2seq, ["kind:cross"], [0.25], seed=0)
    assert heads_of(table, "kind:cross", 0.25) == select_heads("kind:cross", seq2seq, 0.25, 0)
    assert {k for k, _, _ in heads_of(table, "kind:cross", 0.25)} == {"cross"}
    with pytest.raises(HeadsieveError, match="no mask for strategy 'top' at fraction 0.5"):
        heads_of(table, "top", 0.5)
    two = mask_table(space, ["random"], [0.25, 0.5], seed=0)
    with pytest.raises(HeadsieveError, match="several fractions"):
        heads_of(two, "random", None)


def test_read_importance_covers_the_space(tmp_path):
    """select-masks reads importance.parquet: every head of the model, none outside it (no silent zeros); an
    encoder's table may leave out the kind column, an encoder-decoder's may not."""
    from headsieve.pruning.masks import read_importance

    space = HeadSpace.encoder(3, 4)
    full = pd.DataFrame([(l, h, float(l * 4 + h)) for l in range(3) for h in range(4)], columns=["layer", "head", "importance"])
    path = tmp_path / "importance.parquet"
    full.to_parquet(path)
    np.testing.assert_array_equal(read_importance(path, space)["encoder"], np.arange(12.0).reshape(3, 4))
    full.drop(index=5).to_parquet(path)
    with pytest.raises(HeadsieveError, match="no importance for encoder layer 1 head 1"):
        read_importance(path, space)
    full.to_parquet(path)
    with pytest.raises(HeadsieveError, match=r"head \(2, 0\) does not fit the model"):
        read_importance(path, HeadSpace.encoder(2, 4))
    seq2seq = HeadSpace.from_shapes({"encoder": (3, 4), "decoder": (1, 2), "cross": (1, 2)})
    with pytest.raises(HeadsieveError, match="no kind column"):
        read_importance(path, seq2seq)
    rows = [(k, l, h, 0.5 + l + 10 * h) for k, l, h in seq2seq.heads()]
    pd.DataFrame(rows, columns=["kind", "layer", "head", "importance"]).to_parquet(path)
    scores = read_importance(path, seq2seq)
    assert scores["cross"][0, 1] == 10.5 and scores["encoder"].shape == (3, 4)
    assert select_heads("importance", seq2seq, 1 / 16, 0, importance=scores) == [("encoder", 0, 0)]
