"""End to end: the roles stage through the real snakemake on the real minilm over real UD sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from support.workflow import sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def roles_run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("roles")
    config = sample_config(data, n=80, roles={"models": ["minilm"], "corpora": ["ewt", "rte"], "stability": {"bootstrap": 20}})
    config["corpora"]["rte"] = {"format": "glue", "task": "rte", "path": "glue/RTE/dev.tsv", "max_sentences": 40}
    path = write_config(workdir, config)
    proc = snakemake(workdir, config=path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir / "results/minilm/ewt/roles"


def test_scores_table(roles_run):
    scores = pd.read_parquet(roles_run / "scores.parquet")
    assert list(scores.columns)[:11] == [
        "model", "corpus", "sentence_index", "layer", "head", "role", "family", "score", "n_queries",
        "n_undefined", "form",
    ]  # fmt: skip
    assert scores.sentence_index.nunique() == 80
    roles = set(scores.role.astype(str))
    assert {"local", "cls", "sep", "delimiter", "syntactic", "dep:nsubj", "dep:obj", "dep:det"} <= roles
    assert "block" not in roles  # single sentences have no second segment
    # every (sentence, role) has all 72 heads; relations enter only sentences that have them
    per = scores.groupby(["sentence_index", "role"], observed=True).size()
    assert set(per) == {72}
    assert per.xs("local", level="role").size == 80 and per.xs("dep:iobj", level="role").size < 80
    # mass score: NaN exactly where no query of the input is defined (uniform share above the cap)
    defined = scores.n_queries > 0
    assert np.isfinite(scores.score[defined]).all() and (scores.score[defined] >= 0).all()
    assert scores.score[~defined].isna().all() and (scores.n_undefined[~defined] > 0).all()
    assert set(scores.form.astype(str)) == {"mass"}


def test_tests_table_and_labels(roles_run):
    tests = pd.read_parquet(roles_run / "tests.parquet")
    assert {"n", "mean", "sd", "ci_low", "ci_high", "t", "p", "p_adj", "label", "tau", "alpha", "correction"} <= set(
        tests.columns
    )
    assert len(tests.drop_duplicates(["layer", "head", "role"])) == len(tests)
    assert (tests.label == (tests.p_adj < 0.05)).all()
    tested = tests.p.notna()  # untested (e.g. no spread) rows have no p
    assert (tests.correction == "bh").all() and (tests.p_adj[tested] >= tests.p[tested] - 1e-12).all()
    assert ((tests.ci_low <= tests["mean"]) & (tests["mean"] <= tests.ci_high))[tested].all()
    # a real model has [CLS]-heavy heads; the delimiter union is found where cls or sep is
    labelled = tests[tests.label]
    assert (labelled.role.astype(str) == "cls").sum() > 10


def test_head_stats(roles_run):
    stats = pd.read_parquet(roles_run / "head_stats.parquet")
    piece = stats[stats.stat != "accuracy"]
    assert set(piece.stat) == {"cls", "sep", "punct", "self", "prev", "next", "entropy", "entropy_uniform"}
    assert len(piece) == 8 * 72
    entropy = piece[piece.stat == "entropy"].value.to_numpy()
    uniform = piece[piece.stat == "entropy_uniform"].value.to_numpy()
    assert (entropy <= uniform + 1e-6).all()  # no head is more spread out than uniform
    acc = stats[stats.stat == "accuracy"]
    det = acc[acc.relation == "det"]
    assert len(det) == 72 and det.value.max() > det.baseline.iloc[0]  # some head beats the fixed offset


def test_figures_and_summary(roles_run):
    for name in ("role_map", "relation_map", "heads_per_layer", "pvalues", "colocation"):
        for ext in ("png", "pdf"):
            path = roles_run / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 5000, path
    summary = (roles_run / "summary.md").read_text()
    assert "| role | tau | heads | share | bottom | middle | top |" in summary
    assert "heads with at least one role" in summary
    colocation = pd.read_parquet(roles_run / "colocation.parquet")
    assert {"local", "syntactic"} <= set(colocation.role_a) | set(colocation.role_b)
    assert not ((colocation.role_a == "cls") & (colocation.role_b == "delimiter")).any()  # nested: not tested
    assert (colocation.observed <= colocation[["n_a", "n_b"]].min(axis=1)).all()
    stability = pd.read_parquet(roles_run / "stability.parquet")
    assert {"local", "delimiter", "syntactic", "all"} <= set(stability.family)
    assert (stability.sentences_a + stability.sentences_b == 80).all()
    assert "label stability" in summary


def test_pairs_without_trees(roles_run):
    """A GLUE pair corpus: block is scored, no relation exists, and the report is complete."""
    pairs = roles_run.parents[1] / "rte" / "roles"
    roles = set(pd.read_parquet(pairs / "tests.parquet").role.astype(str))
    assert "block" in roles and not any(r.startswith("dep:") for r in roles)
    for name in ("role_map", "relation_map", "colocation"):
        assert (pairs / "figures" / f"{name}.png").stat().st_size > 3000
    assert "block" in set(pd.read_parquet(pairs / "stability.parquet").family)


def test_report_has_every_figure_captioned(roles_run, data, tmp_path):
    workdir = roles_run.parents[3]
    config = workdir / "config.yaml"
    report = tmp_path / "report.html"
    proc = snakemake(workdir, "--report", str(report), config=config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = report.read_text(errors="replace")
    for name in ("role_map", "relation_map", "heads_per_layer", "pvalues", "colocation", "summary.md"):
        assert name in html, name
    # captions say what and from which config (tau null: each score form's default)
    assert "Mean sieve score" in html and "score mass" in html and "H0 mean &lt;= tau" in html


def test_positional_control_columns(roles_run):
    """scores.parquet has the syntactic roles' decoy score; tests.parquet the controlled label beside the
    reference label (roles/controls.py), for the syntactic roles only and never without the reference."""
    from headsieve.roles.controls import CONTROL_COLUMNS

    scores = pd.read_parquet(roles_run / "scores.parquet", columns=["family", "control"])
    syntactic = scores.family.astype(str) == "syntactic"
    assert scores.control[~syntactic].isna().all() and scores.control[syntactic].notna().mean() > 0.5
    tests = pd.read_parquet(roles_run / "tests.parquet")
    columns = list(tests.columns)
    assert columns[columns.index("label") + 1 :][: len(CONTROL_COLUMNS)] == list(CONTROL_COLUMNS)
    role = tests.role.astype(str)
    syntactic = role.str.startswith("dep:") | (role == "syntactic")
    assert (tests.diff_n[syntactic] > 0).mean() > 0.8 and (tests.diff_n[~syntactic] == 0).all()
    assert tests.diff_p[~syntactic].isna().all() and not tests.label_controlled[~syntactic].any()
    assert (tests.label_controlled == (tests.label & (tests.diff_p_adj < 0.05))).all()
