"""End to end: fine-tuning, importance, masks, masked evaluation, retraining, compensation and the report
through the real snakemake, on the real minilm and real SST-2 data (small subsets)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workflow_utils import job_counts, run_and_kill, sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e


def pruning_config(data, seeds=(1, 2), fractions=(0.0, 0.5)):
    config = sample_config(data, n=40, roles={"models": ["minilm"], "corpora": ["ewt"]})
    config["corpora"].update(
        {
            "sst2_train": {"format": "glue", "task": "sst2", "path": "glue/SST-2/train.tsv"},
            "sst2_dev": {"format": "glue", "task": "sst2", "path": "glue/SST-2/test.tsv"},
        }
    )
    config["tasks"] = {"sst2": {"train": "sst2_train", "eval": "sst2_dev", "max_train": 160, "max_eval": 96, "max_length": 48}}
    config["pruning"] = {
        "models": ["minilm"],
        "tasks": ["sst2"],
        "seeds": list(seeds),
        "fractions": list(fractions),
        "strategies": ["random", "top", "importance", "prune_role:syntactic"],
        "role_labels": "ewt",
        "importance_examples": 32,
        "finetune": {"max_steps": 10, "batch_size": 16, "learning_rate": 5.0e-5, "checkpoint_every": 5},
        "retrain": {"strategies": ["random"], "fractions": [0.5],
                    "finetune": {"max_steps": 4, "batch_size": 16, "checkpoint_every": 2}},  # fmt: skip
        "compensation_examples": 8,
    }
    return config


@pytest.fixture(scope="module")
def pruning_run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("pruning")
    proc = snakemake(workdir, config=write_config(workdir, pruning_config(data)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def test_evaluations_table(pruning_run):
    ev = pd.read_parquet(pruning_run / "results/minilm/sst2/pruning/evaluations.parquet")
    assert list(ev.columns) == ["task", "strategy", "fraction", "seed", "finetuned", "heads_pruned", "metric", "value", "primary", "n"]
    masked = ev[~ev.finetuned & ev.primary]
    assert set(masked.strategy) == {"random", "top", "importance", "prune_role:syntactic"}
    assert set(masked.seed) == {1, 2} and set(masked.fraction) == {0.0, 0.5}
    assert (masked[masked.fraction == 0.5].heads_pruned == 36).all() and (masked[masked.fraction == 0].heads_pruned == 0).all()
    assert (masked.n == 96).all() and masked.value.between(0, 1).all()
    # unpruned masked evaluation = the fine-tuned model's own evaluation
    for seed in (1, 2):
        metrics = json.loads((pruning_run / f"results/minilm/sst2/seed{seed}/finetuned/metrics.json").read_text())
        zero = masked[(masked.seed == seed) & (masked.fraction == 0)].value
        assert np.allclose(zero, metrics["eval"]["accuracy"])
    retrained = ev[ev.finetuned & ev.primary]
    assert set(zip(retrained.strategy, retrained.fraction)) == {("none", 0.0), ("random", 0.5)}
    assert (retrained[retrained.strategy == "random"].heads_pruned == 36).all()


def test_masks_follow_strategies(pruning_run):
    masks = pd.read_parquet(pruning_run / "results/minilm/sst2/seed1/masks/0.50.parquet")
    top = masks[(masks.strategy == "top") & (masks.fraction == 0.5)]
    assert set(top["layer"]) == {3, 4, 5}  # half of 6 layers x 12 heads: the top three layers
    tests = pd.read_parquet(pruning_run / "results/minilm/ewt/roles/tests.parquet")
    syntactic = {(int(l), int(h)) for l, h in tests[(tests.role == "syntactic") & tests.label][["layer", "head"]].values}
    role = masks[(masks.strategy == "prune_role:syntactic") & (masks.fraction == 0.5)]
    assert syntactic <= set(zip(role["layer"], role["head"]))
    importance = pd.read_parquet(pruning_run / "results/minilm/sst2/seed1/importance.parquet")
    norms = importance.groupby("layer").importance.apply(lambda v: float(np.sqrt((v**2).sum())))
    assert np.allclose(norms, 1.0)


def test_retrained_model_is_pruned(pruning_run):
    from headsieve.models.heads import head_counts, load_pruned

    folder = pruning_run / "results/minilm/sst2/seed1/retrained/random/0.50/model"
    assert sum(head_counts(load_pruned(str(folder)))) == 36
    assert not list(folder.glob("*.bin")) and list(folder.glob("*.safetensors"))
    assert not (pruning_run / "results/minilm/sst2/seed1/retrained/random/0.50.work").exists()


def test_compensation_and_report(pruning_run):
    heads = pd.read_parquet(pruning_run / "results/minilm/sst2/seed1/compensation.parquet")
    assert len(heads) == 72 and heads.pruned.sum() == 36
    assert heads[~heads.pruned].jsd.notna().all() and heads[heads.pruned].jsd.isna().all()
    summary = pd.read_parquet(pruning_run / "results/minilm/sst2/seed1/compensation_summary.parquet")
    assert set(summary.measure) == {"jsd", "norm_change", "importance_change", "jsd_retraining", "norm_change_retraining"}
    comparisons = pd.read_parquet(pruning_run / "results/minilm/sst2/pruning/comparisons.parquet")
    assert {"top", "importance", "prune_role:syntactic"} <= set(comparisons[comparisons.against == "random"].strategy)
    for name in ("metric_by_fraction", "strategy_comparisons", "compensation"):
        for ext in ("png", "pdf"):
            assert (pruning_run / f"results/minilm/sst2/pruning/figures/{name}.{ext}").stat().st_size > 3000


def test_adding_a_seed_runs_only_new_jobs(pruning_run, data):
    config = write_config(pruning_run, pruning_config(data, seeds=(1, 2, 3)))
    proc = snakemake(pruning_run, "-n", config=config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = job_counts(proc.stdout)
    # seed 3's own jobs, then the tables that gather every seed; nothing of seeds 1 and 2, no attention work
    assert counts == {
        "finetune": 1, "importance": 1, "select_masks": 2, "evaluate_masks": 2, "retrain": 2, "compensation": 1,
        "collect_pruning": 1, "report_pruning": 1, "all": 1, "total": 12,
    }  # fmt: skip


def test_adding_a_fraction_runs_only_new_jobs(pruning_run, data):
    config = write_config(pruning_run, pruning_config(data, fractions=(0.0, 0.5, 0.25)))
    proc = snakemake(pruning_run, "-n", config=config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # masks of the new fraction for each seed, their evaluation, then the tables that gather everything
    assert job_counts(proc.stdout) == {
        "select_masks": 2, "evaluate_masks": 2, "collect_pruning": 1, "report_pruning": 1, "all": 1, "total": 7
    }  # fmt: skip
    assert "masks/0.25.parquet" in proc.stdout and "masks/0.50.parquet" not in proc.stdout


def test_evaluation_batch_size_reruns_nothing(pruning_run, data):
    """pruning.eval_batch_size is a speed setting (a resource, not a param): changing it reruns no job."""
    config = pruning_config(data)
    config["pruning"]["eval_batch_size"] = 7
    proc = snakemake(pruning_run, "-n", config=write_config(pruning_run, config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout) == {} and "Nothing to be done" in proc.stdout + proc.stderr


def test_killed_finetuning_resumes_to_identical_outputs(pruning_run, tmp_path, data):
    """SIGKILL the workflow while the first fine-tuning has written a checkpoint; the rerun resumes from it
    and every pruning table, and the fine-tuned weights, equal those of the uninterrupted run."""

    config = write_config(tmp_path, pruning_config(data))
    checkpoint = tmp_path / "results/minilm/sst2/seed1/finetuned.work/checkpoint/state.json"
    run_and_kill(tmp_path, config, lambda _: checkpoint.exists())
    assert checkpoint.exists() and not (tmp_path / "results/minilm/sst2/seed1/finetuned").exists()
    snakemake(tmp_path, "--unlock", config=config)
    proc = snakemake(tmp_path, "--rerun-incomplete", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in (tmp_path / "logs/minilm/sst2/seed1/finetune.log").read_text()
    for rel in (
        "results/minilm/sst2/seed1/finetuned/model/model.safetensors",
        "results/minilm/sst2/pruning/evaluations.parquet",
        "results/minilm/sst2/pruning/comparisons.parquet",
        "results/minilm/sst2/seed1/compensation.parquet",
    ):
        assert (tmp_path / rel).read_bytes() == (pruning_run / rel).read_bytes(), rel
