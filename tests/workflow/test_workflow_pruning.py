"""End to end: fine-tuning, importance, masks, both protocols (masked evaluation of the fine-tuned model;
pruning the pre-trained model, then fine-tuning it), compensation and the report through the real snakemake,
on the real minilm and real SST-2 data (small subsets)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from support.workflow import job_counts, run_and_kill, sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e


def pruning_config(data, seeds=(1, 2), fractions=(0.0, 0.5), protocols=("finetune_then_prune", "prune_then_finetune")):
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
        "protocols": list(protocols),
        "seeds": list(seeds),
        "fractions": list(fractions),
        "strategies": ["random", "top", "importance", "prune_role:syntactic"],
        "role_labels": "ewt",
        "importance_examples": 32,
        "finetune": {"max_steps": 10, "batch_size": 16, "learning_rate": 5.0e-5, "checkpoint_every": 5},
        "mask_only_strategies": ["importance"],
        "compensation_strategies": ["random"],
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
    assert list(ev.columns) == ["task", "protocol", "strategy", "fraction", "seed", "heads_pruned", "metric", "value", "primary", "n"]
    assert list(ev.protocol.unique()) == ["finetune_then_prune", "prune_then_finetune"]
    masked = ev[(ev.protocol == "finetune_then_prune") & ev.primary]
    assert set(masked.strategy) == {"random", "top", "importance", "prune_role:syntactic"}
    assert set(masked.seed) == {1, 2} and set(masked.fraction) == {0.0, 0.5}
    assert (masked[masked.fraction == 0.5].heads_pruned == 36).all() and (masked[masked.fraction == 0].heads_pruned == 0).all()
    assert (masked.n == 96).all() and masked.value.between(0, 1).all()
    trained = ev[(ev.protocol == "prune_then_finetune") & ev.primary]
    # the same cells under both protocols, paired by seed; importance is left out of prune_then_finetune
    key = ["strategy", "fraction", "seed", "heads_pruned"]
    both = masked[masked.strategy != "importance"]
    assert trained[key].sort_values(key).values.tolist() == both[key].sort_values(key).values.tolist()
    # unpruned, under either protocol = the fine-tuned model's own evaluation
    for seed in (1, 2):
        metrics = json.loads((pruning_run / f"results/minilm/sst2/seed{seed}/finetuned/metrics.json").read_text())
        for frame in (masked, trained):
            zero = frame[(frame.seed == seed) & (frame.fraction == 0)].value
            assert len(zero) in (3, 4) and np.allclose(zero, metrics["eval"]["accuracy"])
        # a model pruned, then fine-tuned, is another model than the fine-tuned one masked alike
        half = ev[(ev.seed == seed) & (ev.fraction == 0.5) & (ev.strategy == "random") & ev.primary]
        info = json.loads((pruning_run / f"results/minilm/sst2/seed{seed}/pruned_finetuned/0.50/metrics.json").read_text())
        assert info["random@0.5"]["train"]["steps"] == 10 and info["random@0.5"]["heads_pruned"] == 36
        assert info["random@0.5"]["eval"]["accuracy"] == half[half.protocol == "prune_then_finetune"].value.item()


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


def test_kept_model_is_pruned(pruning_run):
    from headsieve.models.heads import head_counts, load_pruned, pruned_heads

    base = pruning_run / "results/minilm/sst2/seed1"
    model = load_pruned(str(base / "pruned_finetuned/0.50/models/random"))
    assert sum(head_counts(model)["encoder"]) == 36
    masks = pd.read_parquet(base / "masks/0.50.parquet")
    random = masks[masks.strategy == "random"]
    assert {(k, l, h) for (k, l), heads in pruned_heads(model).items() for h in heads} == set(
        zip(random["kind"], random["layer"], random["head"])
    )
    assert [p.name for p in (base / "pruned_finetuned/0.50/models").iterdir()] == ["random"]  # what compensation reads
    assert not list((base / "pruned_finetuned").glob("*.work"))


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
    # seed 3's own jobs, then the tables that gather every seed and the run's summary; nothing of seeds 1 and 2,
    # no attention work
    assert counts == {
        "finetune": 1, "importance": 1, "select_masks": 2, "evaluate_masks": 2, "prune_finetune": 2, "compensation": 1,
        "collect_pruning": 1, "report_pruning": 1, "results_summary": 1, "all": 1, "total": 13,
    }  # fmt: skip


def test_adding_a_fraction_runs_only_new_jobs(pruning_run, data):
    config = write_config(pruning_run, pruning_config(data, fractions=(0.0, 0.5, 0.25)))
    proc = snakemake(pruning_run, "-n", config=config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # masks of the new fraction for each seed, both protocols on them, the compensation of the new models, then
    # the tables that gather everything
    assert job_counts(proc.stdout) == {
        "select_masks": 2, "evaluate_masks": 2, "prune_finetune": 2, "compensation": 2, "collect_pruning": 1,
        "report_pruning": 1, "results_summary": 1, "all": 1, "total": 12,
    }  # fmt: skip
    assert "masks/0.25.parquet" in proc.stdout and "masks/0.50.parquet" not in proc.stdout


@pytest.mark.parametrize("protocol", ["finetune_then_prune", "prune_then_finetune"])
def test_one_protocol_runs_only_its_jobs(tmp_path, data, protocol):
    config = pruning_config(data, protocols=(protocol,))
    proc = snakemake(tmp_path, "-n", config=write_config(tmp_path, config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = job_counts(proc.stdout)
    masked, trained = counts.get("evaluate_masks", 0), counts.get("prune_finetune", 0)
    assert (masked, trained) == ((4, 0) if protocol == "finetune_then_prune" else (0, 4))
    assert counts.get("compensation", 0) == (2 if protocol == "prune_then_finetune" else 0)


def test_evaluation_batch_size_reruns_nothing(pruning_run, data):
    """pruning.eval_batch_size is a speed setting (a resource, not a param): changing it reruns no job."""
    config = pruning_config(data)
    config["pruning"]["eval_batch_size"] = 7
    proc = snakemake(pruning_run, "-n", config=write_config(pruning_run, config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout) == {} and "Nothing to be done" in proc.stdout + proc.stderr


def test_killed_finetuning_resumes_to_identical_outputs(pruning_run, tmp_path, data):
    """SIGKILL the workflow while a fine-tuning of a pruned model (prune_then_finetune) has written a checkpoint;
    the rerun resumes from it, and every pruning table, and the weights, equal those of the uninterrupted run."""

    config = write_config(tmp_path, pruning_config(data))
    work = tmp_path / "results/minilm/sst2/seed1/pruned_finetuned/0.50.work"
    run_and_kill(tmp_path, config, lambda _: bool(list(work.glob("*/checkpoint/state.json"))))
    assert not (tmp_path / "results/minilm/sst2/seed1/pruned_finetuned/0.50").exists()
    snakemake(tmp_path, "--unlock", config=config)
    proc = snakemake(tmp_path, "--rerun-incomplete", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in (tmp_path / "logs/minilm/sst2/seed1/prune_finetune_0.50.log").read_text()
    for rel in (
        "results/minilm/sst2/seed1/finetuned/model/model.safetensors",
        "results/minilm/sst2/seed1/pruned_finetuned/0.50/models/random/model.safetensors",
        "results/minilm/sst2/pruning/evaluations.parquet",
        "results/minilm/sst2/pruning/comparisons.parquet",
        "results/minilm/sst2/seed1/compensation.parquet",
    ):
        assert (tmp_path / rel).read_bytes() == (pruning_run / rel).read_bytes(), rel
