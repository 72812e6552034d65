"""Head-selection strategies (headsieve.pruning.strategies): sizes, determinism, semantics, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from headsieve.errors import HeadsieveError
from headsieve.pruning import strategies as S
from headsieve.pruning.strategies import ModelFacts, select_heads

SHAPES = [ModelFacts(6, 12), ModelFacts(12, 12)]
FRACTIONS = [0.0, 0.1, 0.5, 0.9]
RANDOMISED = ["random", "consecutive", "spread", "prune_role:local", "spare_role:local", "importance"]


def role_table(facts: ModelFacts, labelled: dict[tuple[int, int], float], role: str = "local") -> pd.DataFrame:
    """A role-test-like table: every head x (role, 'cls'); ``labelled`` heads hold ``role`` with that mean."""
    rows = []
    for layer in range(facts.n_layers):
        for head in range(facts.n_heads):
            for r in (role, "cls"):
                is_label = r == role and (layer, head) in labelled
                mean = labelled[(layer, head)] if is_label else 1.0 + 0.01 * head
                row = dict(layer=layer, head=head, role=r, n=50, mean=mean, label=is_label)
                rows.append(dict(model="m", corpus="ewt", **row))
    table = pd.DataFrame(rows)
    table["role"] = table["role"].astype("category")
    return table


def some_labels(facts: ModelFacts) -> pd.DataFrame:
    """A few labelled 'local' heads with distinct means."""
    heads = {(0, 1): 4.0, (1, 3): 9.0, (facts.n_layers - 1, 0): 6.0, (2, 5): 5.0}
    return role_table(facts, heads)


def random_importance(facts: ModelFacts, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((facts.n_layers, facts.n_heads))


def run(name, facts, fraction, seed=0, **kw):
    labels = some_labels(facts) if "role" in name else None
    importance = random_importance(facts) if name == "importance" else kw.pop("importance", None)
    return select_heads(name, facts, fraction, seed, labels=labels, importance=importance, **kw)


def layers_of(heads) -> list[int]:
    return sorted({layer for layer, _ in heads})


def full_layers(heads, facts) -> list[int]:
    return [l for l in layers_of(heads) if sum(1 for x, _ in heads if x == l) == facts.n_heads]


# ------------------------------------------------------------------------------------------- size, determinism

SIZED = ["random", "top", "bottom", "middle", "top_bottom", "consecutive", "spread",
         "prune_role:local", "spare_role:local", "importance"]


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f"{f.n_layers}x{f.n_heads}")
@pytest.mark.parametrize("name", SIZED)
def test_sizes_distinct_in_range_sorted(name, facts):
    for fraction in FRACTIONS:
        heads = run(name, facts, fraction)
        assert len(heads) == round(fraction * facts.n_total)
        assert len(set(heads)) == len(heads) and heads == sorted(heads)
        assert all(0 <= l < facts.n_layers and 0 <= h < facts.n_heads for l, h in heads)
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


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f"{f.n_layers}x{f.n_heads}")
def test_top_and_bottom_take_whole_layers(facts):
    one_layer = 1 / facts.n_layers
    top = run("top", facts, one_layer)
    assert top == [(facts.n_layers - 1, h) for h in range(facts.n_heads)]
    assert run("bottom", facts, one_layer) == [(0, h) for h in range(facts.n_heads)]
    # 1.5 layers: the top layer whole plus half of the next one
    heads = run("top", facts, 1.5 / facts.n_layers)
    assert full_layers(heads, facts) == [facts.n_layers - 1]
    assert layers_of(heads) == [facts.n_layers - 2, facts.n_layers - 1]


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f"{f.n_layers}x{f.n_heads}")
def test_middle_and_top_bottom(facts):
    L = facts.n_layers
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


@pytest.mark.parametrize("facts", SHAPES + [ModelFacts(7, 4)], ids=lambda f: f"{f.n_layers}x{f.n_heads}")
def test_consecutive_contiguous_spread_not_adjacent(facts):
    L, H = facts.n_layers, facts.n_heads
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


def inclusion_rates(name: str, facts: ModelFacts, fraction: float, draws: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Over ``draws`` seeds: the share of draws touching each layer, the mean number of its heads pruned, and
    the layer sets drawn."""
    touched = np.zeros(facts.n_layers)
    heads_per_layer = np.zeros(facts.n_layers)
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


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f"{f.n_layers}x{f.n_heads}")
@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.5, 0.6, 0.8])
def test_consecutive_and_spread_include_each_layer_equally_often(facts, fraction):
    """The confound of the old design (6 layers at 60%: the top layer in 35% of consecutive draws, 67% of
    spread draws) is gone: over many seeds each layer is touched, and loses heads, equally often in both."""
    L = facts.n_layers
    rc, hc, block_sets = inclusion_rates("consecutive", facts, fraction, DRAWS)
    rs, hs, spread_sets = inclusion_rates("spread", facts, fraction, DRAWS)
    assert equal_rates(rc, rs, DRAWS), (rc.round(3), rs.round(3))
    m = len(block_sets[0])
    design = S.layer_set_design(L, m)
    assert np.allclose(rc, design.inclusion, atol=4 * np.sqrt(0.25 / DRAWS))  # the draws follow the design
    # expected heads pruned per layer: the same up to sampling error (sd of a layer's count <= n_heads)
    assert np.abs(hc - hs).max() <= 4 * facts.n_heads * np.sqrt(2 / DRAWS)
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
    facts = ModelFacts(6, 4)
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
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
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
        assert heads == sorted(strongest[:k])
    heads = select_heads("prune_role:local", facts, 10 / facts.n_total, 0, labels=labels)
    assert set(strongest) <= set(heads) and len(heads) == 10


def test_prune_role_uses_labels_not_means():
    facts = SHAPES[0]
    labels = some_labels(facts)
    # an unlabelled row with a huge mean must not count
    labels.loc[(labels["layer"] == 3) & (labels["head"] == 3) & (labels["role"] == "local"), "mean"] = 99.0
    heads = select_heads("prune_role:local", facts, 1 / facts.n_total, 0, labels=labels)
    assert heads == [(1, 3)]


def test_prune_role_several_corpora_and_role_with_colon():
    facts = SHAPES[0]
    a = role_table(facts, {(0, 0): 5.0}, role="dep:nsubj")
    b = role_table(facts, {(4, 4): 7.0}, role="dep:nsubj").assign(corpus="pud")
    heads = select_heads("prune_role:dep:nsubj", facts, 2 / facts.n_total, 0, labels=pd.concat([a, b]))
    assert heads == [(0, 0), (4, 4)]


def test_spare_role_never_prunes_labelled_while_others_remain():
    facts = SHAPES[0]
    labels = some_labels(facts)
    labelled = {(0, 1), (1, 3), (5, 0), (2, 5)}
    n_free = facts.n_total - len(labelled)
    for n in (1, 10, 40, n_free):
        for seed in range(3):
            heads = select_heads("spare_role:local", facts, n / facts.n_total, seed, labels=labels)
            assert not labelled & set(heads)
    heads = select_heads("spare_role:local", facts, (n_free + 1) / facts.n_total, 0, labels=labels)
    assert labelled & set(heads) == {(0, 1)}  # the weakest labelled head goes first


# -------------------------------------------------------------------------------------- importance, keep_one


@pytest.mark.parametrize("facts", SHAPES, ids=lambda f: f"{f.n_layers}x{f.n_heads}")
def test_importance_prunes_lowest(facts):
    imp = random_importance(facts, 8)
    for fraction in (0.1, 0.5):
        heads = select_heads("importance", facts, fraction, 0, importance=imp)
        pruned = np.array([imp[l, h] for l, h in heads])
        kept = np.delete(imp.reshape(-1), [l * facts.n_heads + h for l, h in heads])
        assert pruned.max() < kept.min()


def test_keep_one():
    facts = SHAPES[1]
    imp = random_importance(facts)
    for layer in (0, 7, 11):
        heads = select_heads(f"keep_one:{layer}", facts, 0.0, 0, importance=imp)
        assert layers_of(heads) == [layer] and len(heads) == facts.n_heads - 1
        kept = ({h for h in range(facts.n_heads)} - {h for _, h in heads}).pop()
        assert kept == int(np.argmax(imp[layer]))
    heads = select_heads("keep_one:4", facts, 0.5, 0)  # fraction ignored, random survivor
    assert layers_of(heads) == [4] and len(heads) == facts.n_heads - 1
    survivors = {
        (set(range(12)) - {h for _, h in select_heads("keep_one:4", facts, 0.0, s)}).pop() for s in range(10)
    }
    assert len(survivors) >= 3


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, fraction, kw, message",
    [
        ("magic", 0.1, {}, r"unknown pruning strategy 'magic' \(known: .*bottom.*keep_one.*spread"),
        ("random", 1.0, {}, r"pruning fraction 1.0 is outside \[0, 1\)"),
        ("random", -0.1, {}, r"outside \[0, 1\)"),
        ("random", float("nan"), {}, r"not a number in \[0, 1\)"),
        ("random", "0.5", {}, r"not a number"),
        ("prune_role:local", 0.1, {}, r"'prune_role:local' needs the role labels table"),
        ("spare_role:local", 0.1, {}, r"needs the role labels table"),
        ("prune_role", 0.1, {}, r"'prune_role' needs a role argument"),
        ("keep_one", 0.1, {}, r"'keep_one' needs a layer argument"),
        ("keep_one:12", 0.1, {}, r"keep_one: layer 12 out of range \(the model has 12 layers"),
        ("keep_one:-1", 0.1, {}, r"layer -1 out of range"),
        ("keep_one:x", 0.1, {}, r"layer 'x' is not an integer"),
        ("importance", 0.1, {}, r"'importance' needs head importance scores"),
        ("importance", 0.1, {"importance": np.ones((3, 3))}, r"head importance has shape \[3, 3\]"),
        ("random:3", 0.1, {}, r"'random' takes no argument"),
        ("prune_role:nosuch", 0.1, {"labels": "table"}, r"role 'nosuch' is not in the role labels table"),
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
        select_heads("prune_role:local", ModelFacts(3, 12), 0.1, 0, labels=labels)
    with pytest.raises(HeadsieveError, match=r"seed -1"):
        select_heads("random", facts, 0.1, -1)


def test_layer_and_band_strategies_prune_whole_layers():
    from headsieve.pruning.strategies import FIXED_SIZE, ModelFacts, band_layers, select_heads

    facts = ModelFacts(12, 12)
    assert {"layer", "band"} <= FIXED_SIZE
    heads = select_heads("layer:4", facts, 0.0, seed=0)
    assert heads == [(4, h) for h in range(12)]
    assert band_layers("bottom", 12) == [0, 1, 2, 3] and band_layers("top", 12) == [8, 9, 10, 11]
    assert band_layers("middle", 6) == [2, 3]
    top = select_heads("band:top", facts, 0.0, seed=0)
    assert {l for l, _ in top} == {8, 9, 10, 11} and len(top) == 48
    with pytest.raises(HeadsieveError, match="band: 'upper' is not one of bottom, middle, top"):
        select_heads("band:upper", facts, 0.0, seed=0)
    with pytest.raises(HeadsieveError, match="layer: layer 12 out of range"):
        select_heads("layer:12", facts, 0.0, seed=0)
