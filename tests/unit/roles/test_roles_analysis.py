"""Analyses of role labels on planted truth: co-location against chance, split-half stability, the paired
fine-tuning change over seeds; the report and compare commands (pairs without trees included); error logs."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from support.cli import run_cli
from headsieve.roles.analysis import (
    change_agreement,
    change_by_layer,
    colocation_tests,
    finetuning_change,
    hypergeom_tails,
    label_stability,
    map_agreement,
    paired_change,
    score_cube,
    split_halves,
    summary_markdown,
    weighted_labels,
)
from headsieve.roles.registry import nested, role_family
from headsieve.roles.tests import role_tests
from support.paths import REPO

L, H = 4, 6


def synthetic_scores(rng, n_sent=60, roles=("local", "prev", "cls", "delimiter", "syntactic", "dep:det"),
                     planted=None, base=0.2, sd=0.08, sparse=("dep:det",), model="m", corpus="c"):  # fmt: skip
    """Per-sentence scores of every head and role: ``base`` plus the planted shift of (layer, head, role),
    plus normal noise; roles in ``sparse`` have no score (NaN) in about a third of the sentences."""
    planted = planted or {}
    grid = np.meshgrid(np.arange(n_sent), np.arange(L), np.arange(H), np.arange(len(roles)), indexing="ij")
    s, layer, head, role = grid
    s, layer, head, role = s.ravel(), layer.ravel(), head.ravel(), role.ravel()
    names = np.array(roles)[role]
    shift = np.array([planted.get((int(a), int(b), str(r)), 0.0) for a, b, r in zip(layer, head, names)])
    score = base + shift + rng.normal(0, sd, len(s))
    for r in sparse:
        if r in roles:
            missing = np.isin(s, rng.choice(n_sent, n_sent // 3, replace=False)) & (names == r)
            score[missing] = np.nan
    return pd.DataFrame(
        {
            "model": model, "corpus": corpus, "sentence_index": s.astype(np.int32), "layer": layer.astype(np.int16),
            "head": head.astype(np.int16), "role": pd.Categorical(names), "family": [role_family(r) for r in names],
            "score": score.astype(np.float32), "n_queries": 5, "form": "mass",
        }
    )  # fmt: skip


def label_table(labels: dict[str, set], layers=6, heads=12, alpha=0.05) -> pd.DataFrame:
    """A tests table whose labels are the given (layer, head) sets per role."""
    rows = [
        {"model": "m", "corpus": "c", "layer": a, "head": b, "role": role, "label": (a, b) in held,
         "alpha": alpha, "correction": "bh"}
        for role, held in labels.items() for a in range(layers) for b in range(heads)
    ]  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- co-location


def test_colocation_against_chance_on_planted_labels():
    rng = np.random.default_rng(0)
    heads = [(a, b) for a in range(6) for b in range(12)]
    shared = set(heads[::7])  # 11 heads holding both local and block
    early = {h for h in heads if h[0] < 3}
    late = {h for h in heads if h[0] >= 3}
    labels = {
        "local": shared,
        "block": shared,
        "prev": set(shared),  # nested in local by definition: never tested against it
        "cls": early,
        "delimiter": early,  # cls is nested in delimiter
        "syntactic": late,  # half the heads each, never together: depleted
        "dep:det": set(map(tuple, rng.permutation(heads)[:20].tolist())),
    }
    table = colocation_tests(label_table(labels))
    pairs = set(zip(table.role_a, table.role_b))
    for a, b in pairs:
        assert not nested(a, b)
    for a, b in (("local", "prev"), ("prev", "local"), ("cls", "delimiter"), ("syntactic", "dep:det")):
        assert (a, b) not in pairs
    overall = table[table.scope == "all"].set_index(["role_a", "role_b"])
    lb = overall.loc[("local", "block")]
    assert lb.observed == 11 and lb.n_heads == 72 and lb.expected == pytest.approx(11 * 11 / 72)
    assert lb.enriched and not lb.depleted
    cs = overall.loc[("cls", "syntactic")]
    assert cs.observed == 0 and cs.expected == pytest.approx(18) and cs.depleted and not cs.enriched
    # exact p values from the definition: P(X >= k) for k heads shared out of N, n_a, n_b
    for r in overall.reset_index().itertuples():
        if np.isnan(r.p):
            continue
        N, a, b, k = r.n_heads, r.n_a, r.n_b, r.observed
        upper = sum(comb(a, x) * comb(N - a, b - x) for x in range(k, min(a, b) + 1)) / comb(N, b)
        lower = sum(comb(a, x) * comb(N - a, b - x) for x in range(max(0, a + b - N), k + 1)) / comb(N, b)
        assert r.p == pytest.approx(upper, rel=1e-9, abs=1e-15)
        assert r.p_depleted == pytest.approx(lower, rel=1e-9, abs=1e-15)
    assert (overall.p_adj >= overall.p - 1e-12).all()
    # per layer: the population is that layer's heads
    per_layer = table[table.scope == "layer"]
    assert set(per_layer.layer) == set(range(6)) and (per_layer.n_heads == 12).all()
    layer0 = per_layer[(per_layer.layer == 0)].set_index(["role_a", "role_b"]).loc[("cls", "syntactic")]
    assert layer0.n_a == 12 and layer0.n_b == 0 and np.isnan(layer0.p)  # margins fix the count: no test
    assert table.loc[table.scope == "all", "layer"].isna().all()


def test_colocation_with_the_positionally_controlled_labels():
    """Syntactic labels that do not survive the positional control do not count in the controlled table."""
    heads = [(a, b) for a in range(6) for b in range(12)]
    local = set(heads[:12])
    tests = label_table({"local": local, "syntactic": local | set(heads[60:62]), "cls": set(heads[30:40])})
    survives = tests["role"].eq("syntactic") & tests.apply(lambda r: (r.layer, r["head"]) in set(heads[60:62]), axis=1)
    tests["label_controlled"] = survives  # as the control writes it: False for roles without a control
    reference = colocation_tests(tests).set_index(["scope", "role_a", "role_b"])
    controlled = colocation_tests(tests, controlled=True).set_index(["scope", "role_a", "role_b"])
    assert (reference["labels"] == "reference").all() and (controlled["labels"] == "controlled").all()
    assert reference.loc[("all", "local", "syntactic"), "observed"] == 12
    assert reference.loc[("all", "local", "syntactic"), "enriched"]
    assert controlled.loc[("all", "local", "syntactic"), "observed"] == 0
    assert controlled.loc[("all", "local", "syntactic"), "n_b"] == 2
    assert controlled.loc[("all", "local", "cls"), "n_a"] == 12  # roles without a control keep their labels


def test_colocation_null_rate_at_most_alpha():
    """Roles that fall on heads independently are called enriched at most at the nominal rate."""
    rng = np.random.default_rng(1)
    N, trials = 72, 2000
    n_a, n_b = rng.integers(5, 40, trials), rng.integers(5, 40, trials)
    observed = np.array(
        [len(set(rng.choice(N, a, replace=False)) & set(rng.choice(N, b, replace=False))) for a, b in zip(n_a, n_b)]
    )
    upper, lower = hypergeom_tails(observed, np.full(trials, N), n_a, n_b)
    assert (upper < 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / trials)
    assert (lower < 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / trials)


# ---------------------------------------------------------------- stability


def planted_run(seed=0, n_sent=60, strong=0.5):
    rng = np.random.default_rng(seed)
    planted = {(0, 1, "local"): strong, (1, 2, "local"): strong, (2, 3, "cls"): strong, (3, 0, "delimiter"): strong,
               (1, 4, "syntactic"): strong, (2, 5, "dep:det"): strong}  # fmt: skip
    scores = synthetic_scores(rng, n_sent=n_sent, planted=planted)
    return scores, role_tests(scores, tau=0.4, alpha=0.05, correction="bh"), planted


def test_weighted_labels_reproduce_role_tests():
    scores, tests, planted = planted_run()
    cube = score_cube(scores, tests)
    every = weighted_labels(cube, np.ones((len(cube.sentences), 1)))[:, 0]
    assert (every == tests["label"].to_numpy()).all()
    held = tests[tests.label]
    labelled = {(a, b, str(r)) for a, b, r in zip(held.layer, held["head"], held.role.astype(str))}
    assert {(a, b, r) for (a, b, r) in planted} <= labelled
    a, _ = split_halves(cube.sentences, 3)
    w = np.zeros((len(cube.sentences), 1))
    w[a] = 1
    half = weighted_labels(cube, w)[:, 0]
    direct = role_tests(scores[scores.sentence_index.isin(cube.sentences[a])], tau=0.4, alpha=0.05, correction="bh")
    direct = direct.assign(role=direct.role.astype(str))
    merged = cube.units.assign(half=half).merge(direct, on=["layer", "head", "role"])
    assert len(merged) == len(cube.units) and (merged["half"] == merged["label"]).all()
    assert merged["label"].sum() >= len(planted)
    # a sentence counted twice weighs as two copies of it
    w2 = np.ones((len(cube.sentences), 1))
    w2[0] = 2
    doubled = pd.concat([scores, scores[scores.sentence_index == cube.sentences[0]]])
    again = role_tests(doubled, tau=0.4, alpha=0.05, correction="bh")
    assert (weighted_labels(cube, w2)[:, 0] == again["label"].to_numpy()).all()


def test_split_halves_disjoint_and_seeded():
    sentences = np.arange(101)
    a, b = split_halves(sentences, 7)
    assert len(a) == 50 and len(b) == 51 and not set(a) & set(b) and set(a) | set(b) == set(range(101))
    a2, _ = split_halves(sentences, 7)
    a3, _ = split_halves(sentences, 8)
    assert (a == a2).all() and not (a == a3).all()


def test_stability_of_planted_labels():
    scores, tests, planted = planted_run(n_sent=80)
    table = label_stability(scores, tests, seed=0, n_boot=50)
    assert list(table.family) == ["local", "delimiter", "syntactic", "all"]
    row = table.set_index("family")
    for family in ("local", "delimiter", "syntactic"):
        assert row.loc[family, "jaccard"] == 1.0  # strong planted heads: the same labels in both halves
        assert row.loc[family, "ci_low"] >= 0.5 and row.loc[family, "ci_high"] == 1.0
    assert row.loc["all", "labels_a"] == len(planted) == row.loc["all", "shared"]
    assert (table.sentences_a + table.sentences_b == 80).all()
    assert table.equals(label_stability(scores, tests, seed=0, n_boot=50))  # deterministic
    # no planted head: nothing labelled in either half, so no Jaccard
    rng = np.random.default_rng(5)
    null_scores = synthetic_scores(rng, n_sent=40)
    null = label_stability(null_scores, role_tests(null_scores, tau=0.4), seed=0, n_boot=10)
    assert null["jaccard"].isna().all() and (null.labels_a == 0).all()


def test_stability_of_a_corpus_too_small_to_split():
    rng = np.random.default_rng(8)
    scores = synthetic_scores(rng, n_sent=1, planted={(0, 0, "local"): 0.5})
    table = label_stability(scores, role_tests(scores, tau=0.4), seed=0, n_boot=5)
    assert (table.sentences_a == 0).all() and (table.labels_a == 0).all() and table.jaccard.isna().all()


def test_stability_falls_for_heads_near_the_threshold():
    """Heads whose mean sits at the edge of detection in a half are labelled in one half and not the other."""
    rng = np.random.default_rng(2)
    planted = {(a, b, "local"): 0.2 + 0.012 for a in range(L) for b in range(H)}  # mean 0.412 vs tau 0.4
    scores = synthetic_scores(rng, n_sent=200, roles=("local", "cls"), planted=planted, sd=0.05)
    tests = role_tests(scores, tau=0.4)
    table = label_stability(scores, tests, seed=0, n_boot=40).set_index("family")
    assert 0 < row_value(table, "local", "jaccard") < 1
    assert table.loc["local", "ci_low"] <= table.loc["local", "ci_high"] < 1


def row_value(table, family, column):
    return float(table.loc[family, column])


# ---------------------------------------------------------------- fine-tuning change


def finetuned(rng, before, shift: dict, noise=0.03):
    """A fine-tuned model's scores: the pre-trained ones plus per-sentence noise and the planted shifts."""
    after = before.copy()
    keys = zip(after.layer, after["head"], after.role.astype(str))
    delta = np.array([shift.get((int(a), int(b), r), 0.0) for a, b, r in keys])
    after["score"] = (after["score"] + delta + rng.normal(0, noise, len(after))).astype(np.float32)
    return after


def test_paired_change_over_seeds_on_planted_shifts():
    rng = np.random.default_rng(3)
    before = synthetic_scores(rng, n_sent=50)
    top = {(3, h, r): 0.1 for h in range(H) for r in ("local", "cls")}  # the top layer moves; the rest does not
    top[(0, 0, "prev")] = -0.1
    after = {seed: finetuned(rng, before, top) for seed in (1, 2, 3)}
    change = finetuning_change(before, after, "sst2", alpha=0.05, correction="bh")
    assert set(change.seed) == {1, 2, 3} and (change.task == "sst2").all() and (change.form == "mass").all()
    # the paired t test is Student's paired test on the same sentences
    one = change[(change.seed == 2) & (change.layer == 1) & (change["head"] == 3) & (change.role == "local")].iloc[0]
    x = before[(before.layer == 1) & (before["head"] == 3) & (before.role == "local")].sort_values("sentence_index")
    y = after[2][(after[2].layer == 1) & (after[2]["head"] == 3) & (after[2].role == "local")]
    y = y.sort_values("sentence_index")
    ref = stats.ttest_rel(y.score.astype(float), x.score.astype(float))
    assert one.t == pytest.approx(ref.statistic) and one.p == pytest.approx(ref.pvalue)
    assert one.ci_low <= one.change <= one.ci_high
    agree = change_agreement(change).set_index(["layer", "head", "role"])
    for (a, b, r), delta in top.items():
        assert agree.loc[(a, b, r), "agrees"] and agree.loc[(a, b, r), "direction"] == ("up" if delta > 0 else "down")
    others = agree.drop(index=list(top))
    assert others["agrees"].sum() == 0
    nulls = change.set_index(["layer", "head", "role"]).drop(index=list(top))
    assert nulls["significant"].mean() <= 0.05
    by_layer = change_by_layer(change)
    assert {"change", "abs_change", "standardised", "abs_standardised", "share_significant"} == set(by_layer.measure)
    every = by_layer[(by_layer.role == "all") & (by_layer.measure == "abs_standardised")].set_index("layer")
    assert (every.seeds == 3).all()
    assert every.loc[3, "ci_low"] > every.loc[[0, 1, 2], "ci_high"].max()  # the top layer changes most
    assert ((every.ci_low <= every["mean"]) & (every["mean"] <= every.ci_high)).all()
    local3 = by_layer[(by_layer.role == "local") & (by_layer.measure == "change") & (by_layer.layer == 3)].iloc[0]
    assert local3.ci_low < 0.1 < local3.ci_high


def test_paired_change_sentences_undefined_do_not_pair():
    rng = np.random.default_rng(4)
    before = synthetic_scores(rng, n_sent=30, roles=("local", "dep:det"))
    after = finetuned(rng, before, {})
    table = paired_change(before, after)
    det = table[table.role == "dep:det"]
    assert (det.n == 20).all() and (table[table.role == "local"].n == 30).all()


# ---------------------------------------------------------------- the commands


def write_run(tmp_path, scores, name="run"):
    folder = tmp_path / name
    folder.mkdir()
    scores.to_parquet(folder / "scores.parquet")
    role_tests(scores, tau=0.4).to_parquet(folder / "tests.parquet")
    return folder


def test_report_on_pairs_without_trees(tmp_path):
    """A pair corpus (GLUE, no trees): piece roles and block only, no relation; the report still draws everything."""
    rng = np.random.default_rng(6)
    planted = {(0, 1, "block"): 0.5, (1, 1, "local"): 0.5, (2, 2, "sep"): 0.5, (2, 2, "delimiter"): 0.5}
    piece_roles = ("local", "prev", "next", "self", "cls", "sep", "delimiter", "block")
    scores = synthetic_scores(rng, n_sent=40, roles=piece_roles, planted=planted)
    run = write_run(tmp_path, scores)
    log = tmp_path / "report.log"
    proc = run_cli(
        "--log", str(log), "roles-report", "--tests", str(run / "tests.parquet"),
        "--scores", str(run / "scores.parquet"),
        "--figures", str(run / "figures"), "--tables", str(run), "--summary", str(run / "summary.md"),
        "--bootstrap", "20",
    )  # fmt: skip
    assert proc.returncode == 0, log.read_text()
    for name in ("role_map", "relation_map", "heads_per_layer", "pvalues", "colocation"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 3000
        assert (run / "figures" / f"{name}.pdf").exists()
    colocation = pd.read_parquet(run / "colocation.parquet")
    assert not colocation.role_a.str.startswith("dep:").any() and len(colocation)
    stability = pd.read_parquet(run / "stability.parquet")
    assert set(stability.family) == {"local", "delimiter", "block", "all"}
    summary = (run / "summary.md").read_text()
    assert "label stability" in summary and "roles sharing heads against chance" in summary
    assert "block:" in summary


def test_compare_command_over_seeds(tmp_path):
    rng = np.random.default_rng(7)
    before = synthetic_scores(rng, n_sent=30)
    paths = []
    for seed in (1, 2, 3):
        path = tmp_path / f"after{seed}.parquet"
        finetuned(rng, before, {(3, 0, "cls"): 0.2}).to_parquet(path)
        paths.append(str(path))
    before.to_parquet(tmp_path / "before.parquet")
    out = tmp_path / "cmp"
    args = ["roles-compare", "--before", str(tmp_path / "before.parquet"), "--after", *paths, "--task", "sst2",
            "--output", str(out / "change.parquet"), "--agreement", str(out / "agreement.parquet"),
            "--by-layer", str(out / "by_layer.parquet"), "--summary", str(out / "summary.md"),
            "--figure", str(out / "change"), "--title", "m on c"]  # fmt: skip
    proc = run_cli(*args, "--seeds", "1", "2", "3")
    assert proc.returncode == 0, proc.stderr
    agreement = pd.read_parquet(out / "agreement.parquet")
    hit = agreement[agreement.agrees]
    assert set(zip(hit.layer, hit["head"], hit.role)) == {(3, 0, "cls")}
    assert (out / "change.png").stat().st_size > 3000 and "changed in every seed" in (out / "summary.md").read_text()
    bad = run_cli(*args, "--seeds", "1", "2")
    lines = [x for x in bad.stderr.splitlines() if x.strip()]
    assert bad.returncode == 2 and lines == [lines[-1]] and "one per seed" in lines[-1]


def test_failing_step_log_ends_with_traceback_and_error_line(tmp_path):
    """The terminal shows one line; the rule's log ends with the traceback and then that line."""
    not_parquet = tmp_path / "tests.parquet"
    not_parquet.write_text("not a parquet file\n")
    log = tmp_path / "step.log"
    proc = run_cli("--log", str(log), "roles-report", "--tests", str(not_parquet), "--scores", str(not_parquet),
                   "--figures", str(tmp_path / "f"), "--tables", str(tmp_path),
                   "--summary", str(tmp_path / "s.md"))  # fmt: skip
    assert proc.returncode != 0
    terminal = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(terminal) == 1 and terminal[0].startswith("headsieve: error: "), proc.stderr
    text = log.read_text().rstrip().splitlines()
    assert text[-1] == terminal[0]
    trace = "\n".join(text[:-1])
    assert "Traceback (most recent call last)" in trace and "headsieve/cli/" in trace  # through the command-line package
    assert not (tmp_path / "s.md").exists()


def test_one_line_errors_also_leave_their_traceback_in_the_log(tmp_path):
    empty = tmp_path / "tests.parquet"
    pd.DataFrame({"role": pd.Series([], dtype=str)}).to_parquet(empty)
    log = tmp_path / "step.log"
    proc = run_cli("--log", str(log), "roles-report", "--tests", str(empty), "--scores", str(empty),
                   "--figures", str(tmp_path / "f"), "--tables", str(tmp_path),
                   "--summary", str(tmp_path / "s.md"))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"headsieve: error: {empty}: no tests"
    text = log.read_text().rstrip().splitlines()
    assert text[-1] == proc.stderr.strip()
    assert any("Traceback (most recent call last)" in line for line in text[:-1])


def test_config_keys_of_the_report():
    from headsieve.config import validate_config
    from headsieve.errors import HeadsieveError

    schema = REPO / "workflow/schemas/config.schema.yaml"
    config = validate_config({"roles": {}}, schema)
    assert config["roles"]["finetuned_seeds"] == [1, 2, 3]
    assert config["roles"]["stability"] == {"seed": 0, "bootstrap": 200}
    with pytest.raises(HeadsieveError, match="roles.stability"):
        validate_config({"roles": {"stability": {"seeds": 1}}}, schema)
    with pytest.raises(HeadsieveError, match="finetuned_seeds"):
        validate_config({"roles": {"finetuned_seeds": [1, 1]}}, schema)


def test_finetuned_seeds_wiring_dry_run(tmp_path, data):
    """roles.finetuned_seeds: one fine-tuning, dump and scoring per seed (the first pruning seed under the plain
    <model>--<task> key), and one comparison reading every seed's scores."""
    from support.workflow import job_counts, sample_config, snakemake, write_config

    config = sample_config(
        data, n=10,
        roles={"models": ["minilm"], "corpora": ["ewt"], "finetuned": ["sst2"], "finetuned_seeds": [2, 5, 7]},
        tasks={"sst2": {"train": "sst2_train", "eval": "sst2_dev", "max_train": 32, "max_length": 32}},
        pruning={"seeds": [5]},
    )  # fmt: skip
    config["corpora"]["sst2_train"] = {"format": "glue", "task": "sst2", "path": "glue/SST-2/train.tsv"}
    config["corpora"]["sst2_dev"] = {"format": "glue", "task": "sst2", "path": "glue/SST-2/dev.tsv"}
    proc = snakemake(tmp_path, "-n", "-p", config=write_config(tmp_path, config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == 3 and counts["compare_finetuned_roles"] == 1
    assert counts["score_roles"] == 4  # the pre-trained model and three fine-tuned ones
    out = proc.stdout
    for seed in (2, 5, 7):
        assert f"results/minilm/sst2/seed{seed}/finetuned" in out
    for key in ("minilm--sst2--seed2", "minilm--sst2--seed7", "minilm--sst2/"):
        assert f"results/{key}" in out
    assert "minilm--sst2--seed5" not in out  # the first pruning seed keeps the plain key: computed once
    compare = [line for line in out.splitlines() if "roles-compare" in line][0]
    assert "--seeds 2 5 7" in compare and compare.count("scores.parquet") == 4
    after = compare.split("--after")[1].split("--seeds")[0]
    keys = ("minilm--sst2--seed2", "minilm--sst2", "minilm--sst2--seed7")
    positions = [after.index(f"results/{k}/ewt/") for k in keys]
    assert positions == sorted(positions)  # each table sits at its seed's place


def test_bad_arguments_give_one_line_in_the_terminal_and_the_log(tmp_path):
    log = tmp_path / "step.log"
    proc = run_cli("--log", str(log), "roles-report", "--tests", "t.parquet")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("headsieve: error: headsieve roles-report: the following arguments are required")
    assert log.read_text().rstrip().splitlines()[-1] == lines[0]


def test_summary_of_a_corpus_too_small_to_test_says_why():
    """One input (or copies of one, dropped at tokenize): no test can run; the summary says so and why, with
    no 'nan%' and no claim about p values."""
    scores = synthetic_scores(np.random.default_rng(3), n_sent=1)
    tests = role_tests(scores)
    assert (tests["untested_reason"] == "fewer than 2 inputs").all()
    text = summary_markdown(tests, "one sentence")
    assert "nan" not in text.lower()
    assert "p values: none" in text
    assert f"not tested: {len(tests)} of {len(tests)} head x role samples (fewer than 2 inputs: {len(tests)})" in text


# ---------------------------------------------------------------- two maps of one model (gold against parsed)


def test_map_agreement_counts_shared_labels_per_role_and_family():
    gold = label_table({"local": {(0, 1), (0, 2)}, "cls": {(3, 3)}, "syntactic": {(1, 0), (2, 5)}, "dep:obj": {(2, 5)}})
    parsed = label_table({"local": {(0, 1), (0, 2)}, "cls": {(3, 3), (4, 4)}, "syntactic": {(2, 5)}, "dep:dobj": {(2, 5)}})
    out = map_agreement(gold, parsed)
    assert set(out["labels"]) == {"reference"}  # no positional control in either map
    role = out[out["scope"] == "role"].set_index("role")
    assert role.loc["local", ["heads_a", "heads_b", "shared", "jaccard"]].tolist() == [2, 2, 2, 1.0]
    assert role.loc["cls", "jaccard"] == 0.5
    assert role.loc["syntactic", ["heads_a", "heads_b", "shared"]].tolist() == [2, 1, 1]
    assert (role.loc["dep:obj", "in_a"], role.loc["dep:obj", "in_b"]) == (True, False)
    assert (role.loc["dep:dobj", "in_a"], role.loc["dep:dobj", "in_b"]) == (False, True)
    family = out[out["scope"] == "family"].set_index("role")
    # families over the roles both maps tested: a relation of one scheme only does not count
    assert family.loc["syntactic", ["heads_a", "heads_b", "shared"]].tolist() == [2, 1, 1]
    assert family.loc["all", ["heads_a", "heads_b", "shared"]].tolist() == [5, 5, 4]
    assert family.loc["all", "jaccard"] == 4 / 6


def test_roles_agreement_command_refuses_maps_of_two_models(tmp_path):
    a, b = label_table({"local": {(0, 1)}}), label_table({"local": {(0, 1)}}).assign(model="other")
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    common = ["--name-a", "a", "--name-b", "b", "--title", "t", "--output", str(tmp_path / "o.parquet"),
              "--summary", str(tmp_path / "o.md")]  # fmt: skip
    proc = run_cli("roles-agreement", "--a", str(tmp_path / "a.parquet"), "--b", str(tmp_path / "b.parquet"), *common)
    assert proc.returncode == 2 and "role tests of model ['other'], not ['m']" in proc.stderr
    assert not (tmp_path / "o.parquet").exists()
    proc = run_cli("roles-agreement", "--a", str(tmp_path / "a.parquet"), "--b", str(tmp_path / "a.parquet"), *common)
    assert proc.returncode == 0, proc.stderr
    assert "| local | 1 | 1 | 1 | 1.00 |" in (tmp_path / "o.md").read_text()
