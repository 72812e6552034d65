"""End to end: the llm rules through the real snakemake on a tiny random Llama with grouped-query attention saved
as a model folder (role scores, tests, importance, masks and evaluations of 5 seeds, report), then a rerun that
does nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from support.llm import tiny_decoder_folder, tiny_llm_section
from support.workflow import job_counts, snakemake, write_config

pytestmark = pytest.mark.e2e

EWT = "ud/UD_English-EWT/en_ewt-ud-{}.conllu"
JOBS = {"llm_role_scores": 1, "llm_role_tests": 1, "llm_importance": 1, "llm_masks": 5, "llm_evaluate": 5, "llm_report": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("llm_workflow")
    folder = tiny_decoder_folder(workdir / "tiny_model", "llama", data / EWT.format("dev"))
    config = {
        "data_dir": str(data),
        "models": {"tiny": {"source": str(folder)}},
        "corpora": {split: {"format": "conllu", "path": EWT.format(split.split("_")[1])} for split in ("ewt_dev", "ewt_test")},
        "llm": dict(tiny_llm_section(), models=["tiny"]),
    }
    config["llm"]["pruning"]["strategies"].append("importance")
    path = write_config(workdir, config)
    proc = snakemake(workdir, config=path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, path, proc


def test_every_llm_rule_ran_once_per_model_or_seed(run):
    workdir, _, proc = run
    counts = job_counts(proc.stdout + proc.stderr)
    assert {rule: counts.get(rule) for rule in JOBS} == JOBS
    for name in ("role_scores", "role_tests", "report"):
        assert (workdir / f"logs/llm/tiny/{name}.log").exists() and (workdir / f"benchmarks/llm/tiny/{name}.tsv").exists()


def test_the_report_holds_every_artifact(run):
    workdir = run[0]
    out = workdir / "results/llm/tiny"
    tests = pd.read_parquet(out / "role_tests.parquet")
    assert {"causal:induction", "causal:sink", "causal:retrieval", "causal:head"} <= set(tests["role"])
    assert len(pd.read_parquet(out / "kv_group_tests.parquet")) == len(tests) // 2  # 4 query heads, 2 groups
    evaluations = pd.read_parquet(out / "evaluations.parquet")
    assert sorted(evaluations["seed"].unique()) == [1, 2, 3, 4, 5]
    metrics = {"perplexity", "copying_loss", "retrieval_accuracy", "retrieval_token_accuracy"}
    assert set(evaluations["metric"]) == metrics
    assert len(pd.read_parquet(out / "comparisons.parquet")) == len(metrics) * 2 * 3  # x shares above 0 x strategies
    for name in ["role_map", *metrics]:
        assert (out / f"figures/{name}.png").exists() and (out / f"figures/{name}.pdf").exists()
    assert (out / "summary.md").read_text().startswith("# Decoder-only language model: tiny")


def test_a_second_run_has_nothing_to_do(run):
    workdir, path, _ = run
    proc = snakemake(workdir, "-n", config=path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout) == {}, proc.stdout[-2000:]


def test_the_html_report_holds_the_captioned_llm_figures(run):
    workdir, path, _ = run
    proc = snakemake(workdir, "--report", str(workdir / "report.html"), config=path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (workdir / "report.html").read_text(encoding="utf-8", errors="replace")
    assert "Decoder-only language models" in html and "copying_loss.png" in html and "role_map.png" in html
