"""The multilingual study's science against known cases and planted truth: linear CKA, random-mask
fraction curves with t intervals, the paired model comparison with Holm's correction, the test of
"the top layers are more influenced by fine-tuning", and the generated summary recomputed from its tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headsieve.errors import HeadsieveError
from headsieve.multilingual.analysis import (
    compare_models,
    fraction_curves,
    holm,
    influence_slopes,
    influence_tests,
    linear_cka,
    random_masks,
    summarise_curves,
    summary_markdown,
    t_interval,
)


# ------------------------------------------------------------------------------------------------ CKA


def test_cka_of_identical_representations_is_one():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert linear_cka(x, x) == pytest.approx(1.0)


def test_cka_is_invariant_to_orthogonal_transforms_scaling_and_shifts():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)
    y = rng.normal(size=(300, 8))
    assert linear_cka(x, y) == pytest.approx(linear_cka(x @ q, y))


def test_cka_of_independent_random_representations_is_near_zero():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    assert linear_cka(x, y) < 0.01  # expectation about d / n = 0.002


def test_cka_falls_as_noise_is_added_and_is_not_invariant_to_a_general_linear_map():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 10))
    values = [linear_cka(x, x + s * rng.normal(size=x.shape)) for s in (0.1, 1.0, 3.0)]
    assert values[0] > values[1] > values[2]
    stretch = np.diag([10.0] + [1.0] * 9)
    assert linear_cka(x, x @ stretch) < 0.9


def test_cka_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        linear_cka(np.ones((4, 2)), np.ones((5, 2)))


# --------------------------------------------------------------------------------- helpers: t, Holm


def test_t_interval_matches_scipy():
    v = np.array([0.1, 0.3, 0.2, 0.5])
    mean, low, high = t_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert mean == pytest.approx(v.mean()) and (low, high) == pytest.approx(ref)
    assert np.isnan(t_interval([1.0])[1])


def test_holm_against_hand_computation():
    p = np.array([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(holm(p)[3])


def test_random_masks_prune_the_share_asked_and_differ_by_seed():
    masks = random_masks(6, 12, [0.0, 0.25, 0.5], seed=1, draws=2)
    assert list(masks) == ["0.0000/0", "0.2500/0", "0.2500/1", "0.5000/0", "0.5000/1"]
    assert (masks["0.0000/0"] == 1).all()
    assert (masks["0.2500/0"] == 0).sum() == 18 and (masks["0.5000/1"] == 0).sum() == 36
    assert not np.array_equal(masks["0.2500/0"], masks["0.2500/1"])
    again = random_masks(6, 12, [0.25], seed=1)
    other = random_masks(6, 12, [0.25], seed=2)
    assert np.array_equal(again["0.2500/0"], masks["0.2500/0"]) and not np.array_equal(other["0.2500/0"], masks["0.2500/0"])


# ------------------------------------------------------------------------- fraction curves (planted)


def planted_evaluations(rng, slopes={"bert": 0.2, "multi": 0.6}, seeds=(1, 2, 3, 4, 5), tasks=("sst2", "mrpc"),
                        fractions=(0.0, 0.2, 0.4, 0.6), draws=2, noise=0.005) -> pd.DataFrame:  # fmt: skip
    """Accuracy = base x (1 - slope x fraction) + noise: the relative drop is slope x fraction."""
    rows = []
    for model, slope in slopes.items():
        for task in tasks:
            for seed in seeds:
                base = 0.8 + rng.normal(0, 0.02)
                for fraction in fractions:
                    for draw in range(1 if fraction == 0 else draws):
                        value = base if fraction == 0 else base * (1 - slope * fraction) + rng.normal(0, noise)
                        for metric, v in (("accuracy", value), ("f1", value + 0.05)):
                            rows.append({"model": model, "task": task, "seed": seed, "fraction": fraction, "draw": draw,
                                         "metric": metric, "value": v, "majority": 0.5})  # fmt: skip
    return pd.DataFrame(rows)


def test_fraction_curves_recover_the_planted_relative_drop():
    curves = fraction_curves(planted_evaluations(np.random.default_rng(0)), "accuracy")
    assert set(curves.metric) == {"accuracy"} and (curves.loc[curves.fraction > 0, "draws"] == 2).all()
    assert (curves.loc[curves.fraction == 0, "relative_drop"] == 0).all()
    expected = curves["model"].map({"bert": 0.2, "multi": 0.6}) * curves["fraction"]
    assert np.allclose(curves["relative_drop"], expected, atol=0.02)
    summary = summarise_curves(curves)
    assert len(summary) == 2 * 2 * 4 and (summary.seeds == 5).all()
    pruned = summary[summary.fraction > 0]
    truth = pruned["model"].map({"bert": 0.2, "multi": 0.6}) * pruned["fraction"]
    assert ((pruned.ci_low <= truth + 1e-3) & (truth - 1e-3 <= pruned.ci_high)).mean() >= 0.75
    assert (pruned.ci_low < pruned["mean"]).all() and (pruned["mean"] < pruned.ci_high).all()


def test_fraction_curves_need_the_unpruned_model_and_the_metric():
    evaluations = planted_evaluations(np.random.default_rng(0))
    with pytest.raises(HeadsieveError, match="matthews"):
        fraction_curves(evaluations, "matthews")
    with pytest.raises(HeadsieveError, match="unpruned"):
        fraction_curves(evaluations[~((evaluations.seed == 2) & (evaluations.fraction == 0))], "accuracy")


def test_model_comparison_finds_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(4)
    differ = compare_models(fraction_curves(planted_evaluations(rng), "accuracy"), "bert", "multi")
    assert len(differ) == 2 * 3 and set(differ.correction) == {"holm"}
    assert np.allclose(differ["difference"], -0.4 * differ["fraction"], atol=0.02)
    assert (differ.p_adj < 0.01).all() and (differ.p_adj >= differ.p).all()
    same = compare_models(fraction_curves(planted_evaluations(rng, slopes={"bert": 0.4, "multi": 0.4}), "accuracy"), "bert", "multi")
    assert (same.ci_low <= 0.01).all() and (same.ci_high >= -0.01).all()
    assert (same.p_adj > 0.05).mean() >= 0.8


# --------------------------------------------------------------------- fine-tuning influence (planted)


def planted_cka(rng, n_layers=6, rise=0.3, seeds=(1, 2, 3), model="bert", task="sst2", noise=0.01) -> pd.DataFrame:
    """1 - CKA = 0.05 + rise x depth + noise (layer 0: the embeddings)."""
    rows = []
    for seed in seeds:
        for layer in range(n_layers + 1):
            change = 0.05 + rise * layer / n_layers + rng.normal(0, noise)
            rows.append({"model": model, "task": task, "seed": seed, "layer": layer, "n_layers": n_layers, "cka": 1 - change})
    return pd.DataFrame(rows)


def test_influence_slope_recovers_the_planted_rise_and_the_tests_find_it():
    rng = np.random.default_rng(5)
    cka = pd.concat([planted_cka(rng, 6, 0.3, model="bert"), planted_cka(rng, 12, 0.0, model="multi")], ignore_index=True)
    slopes = influence_slopes(cka)
    assert np.allclose(slopes.loc[slopes.model == "bert", "slope"], 0.3, atol=0.05)
    assert np.allclose(slopes.loc[slopes.model == "multi", "slope"], 0.0, atol=0.05)
    tests = influence_tests(cka, permutations=2000).set_index("model")
    assert tests.loc["bert", "ci_low"] > 0 and tests.loc["bert", "p_permutation"] < 0.01 and tests.loc["bert", "p_t"] < 0.05
    assert tests.loc["multi", "ci_low"] < 0 < tests.loc["multi", "ci_high"]
    assert tests.loc["multi", "p_permutation"] > 0.05
    assert (tests.p_adj >= tests.p_permutation).all() and set(tests.correction) == {"holm"}


def test_influence_permutation_p_is_uniform_ish_under_the_null():
    rng = np.random.default_rng(6)
    ps = [influence_tests(planted_cka(rng, 6, 0.0, noise=0.05), permutations=400, seed=k)["p_permutation"].iloc[0] for k in range(40)]
    assert 0.0 <= np.mean(np.asarray(ps) < 0.05) <= 0.2


def test_a_top_heavy_rise_is_found_where_one_in_the_bottom_layers_is_not():
    rng = np.random.default_rng(7)
    bottom = planted_cka(rng, 6, 0.0)
    bottom.loc[bottom.layer == 1, "cka"] -= 0.3  # the first layer moves most
    assert influence_tests(bottom, permutations=1000)["slope"].iloc[0] < 0


# ------------------------------------------------------------------- summary.md recomputed from the tables


def _cells(text: str) -> set[str]:
    return {c.strip() for line in text.splitlines() if line.startswith("|") for c in line.strip("|").split("|")}


def test_summary_numbers_are_recomputed_from_the_tables():
    rng = np.random.default_rng(8)
    curves = fraction_curves(planted_evaluations(rng), "accuracy")
    summary = summarise_curves(curves)
    comparisons = compare_models(curves, "bert", "multi")
    cka = pd.concat([planted_cka(rng, 6, 0.3, model="bert"), planted_cka(rng, 12, 0.1, model="multi")], ignore_index=True)
    influence = influence_tests(cka, permutations=500)
    text = summary_markdown(curves, summary, comparisons, influence)
    cells = _cells(text)
    for (model, task), g in curves.groupby(["model", "task"]):
        v = g[g.fraction > 0]
        for fraction, h in v.groupby("fraction"):
            m, lo, hi = t_interval(h["relative_drop"])  # recomputed here from the curve table
            assert f"{m:.3f} [{lo:.3f}, {hi:.3f}]" in cells
        base = g[g.fraction == 0]["value"]
        assert f"{base.mean():.3f}" in cells and f"{base.min():.3f}" in cells
    for r in comparisons.itertuples():
        d = curves[(curves.fraction == r.fraction) & (curves.task == r.task)].pivot(index="seed", columns="model", values="relative_drop")
        diff = d["bert"] - d["multi"]
        assert f"{diff.mean():.3f}" in cells and f"{stats.ttest_rel(d['bert'], d['multi']).pvalue:.2g}" in cells
    for r in influence.itertuples():
        assert f"{r.slope:.3f}" in cells and f"{r.p_permutation:.2g}" in cells
    numbers = re.findall(r"\d+\.\d+", text)
    assert numbers and len(text.splitlines()) > 20
