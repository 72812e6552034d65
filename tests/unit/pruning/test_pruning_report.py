"""Pruning comparisons (headsieve.pruning.report): intervals, corrected p values and the minimal detectable
difference checked against planted truth and simulation; protocols kept apart; the report command."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from support.cli import run_cli
from headsieve.errors import HeadsieveError
from headsieve.pruning.compensation import spread_summary
from headsieve.steps.pruning import write_made_from
from headsieve.pruning.report import (
    DEFAULT_PROTOCOL,
    adjust,
    compensation_lines,
    minimal_detectable_difference,
    paired_comparisons,
    paired_difference,
    curve_table,
    results_markdown,
    summary_lines,
)


def evaluations(shifts: dict[str, float], seeds=range(1, 9), fractions=(0.0, 0.25, 0.5), noise=0.01, seed=0,
                protocol=None, finetuned=False) -> pd.DataFrame:  # fmt: skip
    """Accuracy of ``random`` (varying by seed) and of strategies ``random + shift + noise`` at every fraction
    above 0; the unpruned model (``none``) at fraction 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        base = 0.8 + rng.normal(0, 0.03)
        rows.append(dict(strategy="none", fraction=0.0, seed=s, value=base))
        for fraction in fractions:
            if fraction == 0:
                continue
            level = base - 0.3 * fraction
            rows.append(dict(strategy="random", fraction=fraction, seed=s, value=level))
            for name, shift in shifts.items():
                rows.append(dict(strategy=name, fraction=fraction, seed=s, value=level + shift + rng.normal(0, noise)))
    frame = pd.DataFrame(rows).assign(task="sst2", finetuned=finetuned, metric="accuracy", primary=True, n=872)
    if protocol is not None:
        frame["protocol"] = protocol
    return frame


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, written from its definition."""
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_planted_difference_found_with_interval_and_null_kept():
    table = paired_comparisons(evaluations({"good": 0.05, "same": 0.0}))
    assert list(table.columns) == [
        "task", "protocol", "finetuned", "fraction", "strategy", "against", "seeds", "mean_diff", "sd_diff",
        "ci_low", "ci_high", "t", "df", "p", "p_adj", "correction", "alpha", "power", "mdd",
    ]  # fmt: skip
    assert (table["protocol"] == DEFAULT_PROTOCOL).all() and (table["correction"] == "holm").all()
    good = table[table.strategy == "good"]
    assert len(good) == 2 and (good.seeds == 8).all() and (good.df == 7).all()
    assert ((good.ci_low < 0.05) & (good.ci_high > 0.05)).all() and (good.ci_low > 0.03).all()
    assert (good.p_adj < 1e-4).all() and (good.p_adj >= good.p).all()
    assert (good.mdd > 0).all() and (good.mdd < 0.05).all()  # the planted gain is above what 8 seeds can detect
    same = table[table.strategy == "same"]
    assert (same.p_adj > 0.05).all() and ((same.ci_low < 0) & (same.ci_high > 0)).all()


def test_statistics_match_their_definitions():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1, 1, 6), rng.normal(0.5, 1, 6)
    out = paired_difference(a, b)
    d = a - b
    se = d.std(ddof=1) / np.sqrt(6)
    assert out["mean_diff"] == pytest.approx(d.mean()) and out["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert out["t"] == pytest.approx(stats.ttest_rel(a, b).statistic) and out["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["ci_high"] - out["mean_diff"] == pytest.approx(stats.t.ppf(0.975, 5) * se)
    # the minimal detectable difference has the stated power: at that true difference the paired t test
    # rejects in 80% of simulated designs (5,000 draws: within 3 binomial standard errors)
    mdd = minimal_detectable_difference(6, 0.02)
    sims = np.random.default_rng(1).normal(mdd, 0.02, size=(5000, 6))
    t = sims.mean(1) / (sims.std(1, ddof=1) / np.sqrt(6))
    rate = np.mean(2 * stats.t.sf(np.abs(t), 5) < 0.05)
    assert abs(rate - 0.8) < 3 * np.sqrt(0.8 * 0.2 / 5000)
    assert minimal_detectable_difference(12, 0.02) < mdd  # more seeds, smaller detectable difference
    assert np.isnan(minimal_detectable_difference(1, 0.02)) and np.isnan(minimal_detectable_difference(5, 0.0))


def test_interval_covers_the_truth_at_its_level():
    """Over 2,000 simulated five-seed designs the 95% interval covers the true difference 95% of the time."""
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(2000):
        a = rng.normal(0.1, 0.05, 5)
        out = paired_difference(a, np.zeros(5))
        covered += out["ci_low"] <= 0.1 <= out["ci_high"]
    assert abs(covered / 2000 - 0.95) < 3 * np.sqrt(0.95 * 0.05 / 2000)


def test_correction_spans_every_comparison_of_the_report():
    frames = [evaluations({"good": 0.02, "same": 0.0, "top": 0.0, "bottom": 0.01}, protocol=p, seed=k)
              for k, p in enumerate(("finetune_then_prune", "prune_then_finetune"))]  # fmt: skip
    table = paired_comparisons(pd.concat(frames, ignore_index=True))
    assert set(table.protocol) == {"finetune_then_prune", "prune_then_finetune"}
    assert not table.duplicated(["protocol", "fraction", "strategy", "against"]).any()
    assert len(table) == 2 * 2 * 5  # 2 protocols x 2 fractions x (4 against random + top vs bottom)
    tested = table.p.notna()
    assert np.allclose(table.p_adj[tested], holm(table.p[tested].to_numpy()))
    bh = paired_comparisons(pd.concat(frames, ignore_index=True), correction="bh")
    assert (bh.correction == "bh").all() and (bh.p_adj <= table.p_adj + 1e-12).all()
    p = bh.p[tested].to_numpy()
    order = np.argsort(p)
    expected = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    assert np.allclose(np.sort(bh.p_adj[tested].to_numpy()), np.minimum(expected, 1))


def test_protocols_are_compared_separately():
    masked = evaluations({"good": 0.05}, protocol="finetune_then_prune")
    trained = evaluations({"good": -0.05}, protocol="prune_then_finetune", seed=3)
    table = paired_comparisons(pd.concat([masked, trained], ignore_index=True)).set_index(["protocol", "fraction"])
    good = table[table.strategy == "good"]
    assert (good.loc["finetune_then_prune", "mean_diff"] > 0.04).all()
    assert (good.loc["prune_then_finetune", "mean_diff"] < -0.04).all()


def test_no_variation_is_not_certainty():
    frame = evaluations({"same": 0.0}, noise=0.0)
    table = paired_comparisons(frame)
    same = table[table.strategy == "same"]
    assert (same.mean_diff == 0).all() and same[["p", "p_adj", "ci_low", "ci_high", "mdd", "t"]].isna().all().all()
    one_seed = paired_comparisons(evaluations({"good": 0.05}, seeds=[1]))
    assert (one_seed.seeds == 1).all() and one_seed.p_adj.isna().all()
    assert adjust(pd.Series([np.nan, 0.01, 0.04]), "holm").tolist()[1:] == pytest.approx([0.02, 0.04])


def test_unknown_correction_is_one_line():
    with pytest.raises(HeadsieveError, match="'sidak' is not one of holm, bh") as err:
        paired_comparisons(evaluations({"good": 0.05}), correction="sidak")
    assert "\n" not in str(err.value)


def test_summary_lines_state_the_detectable_difference_from_the_table():
    table = paired_comparisons(evaluations({"good": 0.05, "same": 0.0}))
    lines = summary_lines(table)
    mdd = table.mdd.dropna()
    assert f"{mdd.min():.3f} to {mdd.max():.3f}, median {mdd.median():.3f}" in lines[1]
    assert "power 0.8" in lines[1] and "8 seeds" in lines[1]
    assert lines[0].startswith(f"{len(table)} comparisons") and "holm" in lines[0]
    assert f"{int((table.p_adj < 0.05).sum())} with p_adj < 0.05" in lines[0]


def compensation_tables(seeds=(1, 2)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-head changes of one strategy at 0.5 (change concentrated in layer 3 for jsd, even for
    jsd_retraining) and their spread summaries, as the compensation step writes them."""
    rng = np.random.default_rng(0)
    layer, head = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pruned = (layer == 1) & (head < 4)
    heads, summaries = [], []
    for seed in seeds:
        jsd = rng.uniform(0.9, 1.1, layer.shape) * np.where(layer == 3, 5.0, 1.0)
        even = rng.uniform(0.9, 1.1, layer.shape)
        frame = pd.DataFrame({"strategy": "random", "fraction": 0.5, "layer": layer.ravel(), "head": head.ravel(),
                              "pruned": pruned.ravel(), "jsd": np.where(pruned, np.nan, jsd).ravel(),
                              "jsd_retraining": np.where(pruned, np.nan, even).ravel(), "seed": seed})  # fmt: skip
        heads.append(frame)
        for measure in ("jsd", "jsd_retraining"):
            summaries.append(dict(strategy="random", fraction=0.5, seed=seed, **spread_summary(frame, measure, seed=seed)))
    return pd.concat(heads, ignore_index=True), pd.DataFrame(summaries)


def test_compensation_lines_state_the_permutation_tests_per_seed():
    _, summary = compensation_tables()
    lines = compensation_lines(summary)
    assert len(lines) == 2 and lines[0].startswith("compensation, random at 0.5, jsd:")
    concentrated = summary[summary.measure == "jsd"].sort_values("seed")
    shown = ", ".join(f"{v:.3g}" for v in concentrated.p_layers_differ)
    combined = stats.combine_pvalues(concentrated.p_layers_differ, method="fisher")[1]
    assert f"the change differs between layers: p = {shown} (2 of 2 seeds < 0.05; Fisher combined p = {combined:.3g})" in lines[0]
    assert "(0 of 2 seeds < 0.05;" in lines[0]  # not concentrated in layer 1, the pruned one
    assert "differs between layers: p = " in lines[1] and "(2 of 2" not in lines[1].split(";")[0]


def digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_command_writes_table_summary_and_figures(tmp_path):
    frame = pd.concat([evaluations({"good": 0.05, "top": -0.1, "bottom": 0.0}, protocol="finetune_then_prune"),
                       evaluations({"good": 0.01}, protocol="prune_then_finetune", seed=9)], ignore_index=True)  # fmt: skip
    made = {"model": "m", "task": {"max_length": 32}}  # what collect_pruning and compensation record
    write_made_from(frame, tmp_path / "evaluations.parquet", made)
    heads, summary = compensation_tables()
    compensation = {"heads": [], "summary": []}
    for seed in sorted(set(heads.seed)):  # one compensation run per seed
        for kind, table in (("heads", heads), ("summary", summary)):
            compensation[kind] += [str(tmp_path / f"compensation_{kind}_{seed}.parquet")]
            write_made_from(table[table.seed == seed], compensation[kind][-1], dict(made, seed=int(seed)))
    outputs = {}
    for run in ("a", "b"):
        out = tmp_path / run
        proc = run_cli("pruning-report", "--evaluations", str(tmp_path / "evaluations.parquet"),
                       "--comparisons", str(out / "comparisons.parquet"), "--figures", str(out / "figures"),
                       "--title", "m on t", "--correction", "bh", "--summary", str(out / "summary.md"),
                       "--compensation", *compensation["heads"], "--compensation-summary", *compensation["summary"])  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[run] = digest(out)
    assert outputs["a"] == outputs["b"]  # deterministic: same inputs, same bytes
    table = pd.read_parquet(tmp_path / "a" / "comparisons.parquet")
    assert (table.correction == "bh").all() and {"ci_low", "ci_high", "p_adj", "mdd"} <= set(table.columns)
    text = (tmp_path / "a" / "summary.md").read_text()
    assert "minimal detectable difference" in text and "protocol=prune_then_finetune" in text
    assert "compensation, random at 0.5, jsd:" in text
    for name in ("metric_by_fraction", "strategy_comparisons", "compensation"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "a" / "figures" / f"{name}.{ext}").stat().st_size > 5000


def test_report_command_rejects_an_unknown_correction(tmp_path):
    proc = run_cli("pruning-report", "--evaluations", "x", "--comparisons", "y", "--figures", "z", "--title", "t",
                   "--correction", "sidak")  # fmt: skip
    assert proc.returncode == 2 and "invalid choice: 'sidak'" in proc.stderr


def test_results_summary_is_computed_from_the_tables():
    """Every figure of the generated summary comes from the evaluations and comparisons tables: the baseline
    over seeds, the curves with their intervals, and each comparison row with its corrected p."""
    frame = evaluations({"good": 0.05, "top": -0.1}, seeds=range(1, 6), protocol="prune_then_finetune")
    comparisons = paired_comparisons(frame)
    text = "\n".join(results_markdown(frame, comparisons, "m on sst2"))
    base = frame[frame["fraction"] == 0].sort_values("seed")["value"]
    assert (f"unpruned baseline (sst2, accuracy, 5 seeds 1, 2, 3, 4, 5): mean {base.mean():.3f}, "
            f"sd {base.std(ddof=1):.3f}, range {base.min():.3f} to {base.max():.3f}") in text  # fmt: skip
    curves = curve_table(frame)
    good = curves[(curves["strategy"] == "good") & (curves["fraction"] == 0.5)].iloc[0]
    values = frame[(frame["strategy"] == "good") & (frame["fraction"] == 0.5)]["value"]
    assert good["seeds"] == 5 and np.isclose(good["mean"], values.mean())
    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) / np.sqrt(5)
    assert f"{values.mean():.3f} [{values.mean() - half:.3f}, {values.mean() + half:.3f}]" in text
    assert "| none | " in text  # the unpruned start once, not once per strategy
    for r in comparisons.itertuples():
        assert (f"| sst2 | prune_then_finetune | {r.fraction:.0%} | {r.strategy} | {r.against} | {r.seeds} | "
                f"{r.mean_diff:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.p:.3g} | {r.p_adj:.3g} | {r.mdd:.3f} |") in text  # fmt: skip
