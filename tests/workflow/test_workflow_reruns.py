"""Incremental reruns and faults through the real snakemake: no-op reruns, what a setting change reruns,
and runs killed with SIGKILL mid-rule that resume and end byte-identical to an uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.workflow import job_counts, run_and_kill, sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e

N = 60


def roles_config(data, **changes):
    config = sample_config(data, n=N, roles={"models": ["minilm"], "corpora": ["ewt"]})
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def outputs(workdir: Path) -> dict[str, bytes]:
    """Every result file (Parquet tables, shards, summaries, figures) by relative path."""
    root = workdir / "results"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("baseline")
    proc = snakemake(workdir, config=write_config(workdir, roles_config(data)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_noop_rerun_runs_nothing_in_seconds(baseline, data):
    start = time.perf_counter()
    proc = snakemake(baseline, config=write_config(baseline, roles_config(data)))
    took = time.perf_counter() - start
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert took < 60, took  # seconds, not the minutes of a real run


@pytest.mark.parametrize("change", [{"roles.tau": 2.5}, {"roles.alpha": 0.01}, {"roles.correction": "holm"}])
def test_test_settings_rerun_tests_and_report_only(baseline, data, change):
    proc = snakemake(baseline, "-n", config=write_config(baseline, roles_config(data, **change)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the run's summary joins the report's: it follows
    assert job_counts(proc.stdout) == {"test_roles": 1, "report_roles": 1, "results_summary": 1, "all": 1, "total": 4}


def test_score_settings_rerun_scores_not_the_dump(baseline, data):
    proc = snakemake(baseline, "-n", config=write_config(baseline, roles_config(data, **{"roles.local_window": 3})))
    counts = job_counts(proc.stdout)
    assert counts == {
        "score_roles": 1, "test_roles": 1, "report_roles": 1, "results_summary": 1, "all": 1, "total": 5
    }  # fmt: skip


def test_speed_only_setting_reruns_nothing(baseline, data):
    proc = snakemake(baseline, "-n", config=write_config(baseline, roles_config(data, **{"attention.batch_tokens": 512})))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_model_change_reruns_what_depends_on_it(baseline, data, tiny_bert):
    config = roles_config(data)
    config["models"]["minilm"]["source"] = str(tiny_bert)
    counts = job_counts(snakemake(baseline, "-n", config=write_config(baseline, config)).stdout)
    assert counts == {
        "tokenize": 1, "dump_attention": 1, "score_roles": 1, "test_roles": 1, "report_roles": 1, "results_summary": 1,
        "all": 1, "total": 7,
    }  # fmt: skip


def test_corpus_change_reruns_what_depends_on_it(baseline, data):
    config = roles_config(data)
    config["corpora"]["ewt"]["max_sentences"] = N - 10
    counts = job_counts(snakemake(baseline, "-n", config=write_config(baseline, config)).stdout)
    assert counts["tokenize"] == 1 and counts["dump_attention"] == 1 and counts["total"] == 7


def log_says(rule_log: str, text: str):
    def check(workdir: Path) -> bool:
        path = workdir / rule_log
        return path.exists() and text in path.read_text(errors="replace")

    return check


@pytest.mark.parametrize(
    "moment",
    [
        log_says("logs/minilm/ewt/dump_attention.log", "dumping"),  # mid-dump
        log_says("logs/minilm/ewt/score_roles.log", "roles:"),  # mid-scoring
    ],
    ids=["during-dump", "during-scoring"],
)
def test_killed_run_resumes_to_identical_outputs(baseline, tmp_path, data, moment):
    config = write_config(tmp_path, roles_config(data))
    run_and_kill(tmp_path, config, moment)
    tokens = tmp_path / "results/minilm/ewt/tokens.parquet"
    assert tokens.exists()
    kept = tokens.stat().st_mtime_ns
    snakemake(tmp_path, "--unlock", config=config)
    proc = snakemake(tmp_path, "--rerun-incomplete", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tokens.stat().st_mtime_ns == kept  # completed outputs are kept
    assert outputs(tmp_path) == outputs(baseline)  # byte for byte, figures included
    leftovers = [p for p in (tmp_path / "results").rglob(".*tmp-*")]
    assert leftovers == []
