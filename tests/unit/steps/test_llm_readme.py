"""README.md quotes what the default run's SmolLM2 pruning says about role strategies against random: the lines
:func:`headsieve.steps.llm.findings_lines` writes into that run's summary, recomputed here from the run's own
tables (copied verbatim to docs/llm/: role tests, evaluations and comparisons of results/llm/smollm2/)."""

from __future__ import annotations

import pandas as pd

from headsieve.io.provenance import read_file_provenance
from headsieve.steps import llm as S

from support.paths import REPO

DOCS = REPO / "docs" / "llm"
BEGIN, END = "<!-- llm findings (generated): begin -->", "<!-- llm findings (generated): end -->"


def test_readme_quotes_the_findings_of_the_default_run_tables():
    tests = pd.read_parquet(DOCS / "role_tests.parquet")
    evaluations = pd.read_parquet(DOCS / "evaluations.parquet")
    comparisons = pd.read_parquet(DOCS / "comparisons.parquet")
    lines = S.findings_lines(tests, evaluations, comparisons)
    assert len(lines) >= 4  # induction and sink, each on several metrics
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)]
    quoted = [line for line in block.splitlines() if line.startswith("- `")]
    assert quoted == lines


def test_the_quoted_tables_are_the_default_runs_smollm2_stand_in():
    for name in ("role_tests", "evaluations", "comparisons"):
        record = read_file_provenance(DOCS / f"{name}.parquet", name, "")
        assert record["model"] == "smollm2" and "Q4_1" in record["stand_in"], name
    evaluations = pd.read_parquet(DOCS / "evaluations.parquet")
    assert sorted(evaluations["seed"].unique()) == [1, 2, 3, 4, 5]
    assert set(evaluations["strategy"]) == {"random", "prune_role:causal:induction", "prune_role:causal:sink"}


def test_the_readme_reading_of_the_findings_matches_the_tables():
    """The paragraph after the quoted lines: labelled counts, the one verdict, whole-needle retrieval at 0."""
    tests = pd.read_parquet(DOCS / "role_tests.parquet")
    evaluations = pd.read_parquet(DOCS / "evaluations.parquet")
    comparisons = pd.read_parquet(DOCS / "comparisons.parquet")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reading = " ".join(readme[readme.index(END) :].split("\n\n")[1].split())
    labelled = tests[tests["label"].astype(bool)].groupby("role").size()
    heads = tests.groupby("role").size()
    assert f"only {labelled['causal:induction']} of its {heads['causal:induction']} query heads" in reading
    assert f"{labelled['causal:sink']} of {heads['causal:sink']} heads carry" in reading
    found = comparisons[comparisons["p_adj"] < comparisons["alpha"]]
    assert len(found) == 1  # the one verdict the paragraph reads
    row = found.iloc[0]
    assert (row.strategy, row.metric, row.fraction) == ("prune_role:causal:sink", "copying_loss", 0.25)
    assert f"by {row.mean_diff:.1f} nats more than random (Holm p {row.p_adj:.2g})" in reading
    unpruned = evaluations[(evaluations.fraction == 0) & (evaluations.metric == "retrieval_accuracy")]
    assert len(unpruned) and (unpruned["value"] == 0).all()  # "whole-needle retrieval is 0 ... on every needle"
    assert "Whole-needle retrieval is 0 for the unpruned stand-in" in reading
