"""Provenance and coverage of the pruning artifacts (issue #18 item 2): the fine-tuned folder, importance,
masks, evaluations, compensation and the collected table record what they were made from, and every reader
refuses an artifact made from other settings, a duplicated cell or a missing one, with one line naming the
artifact, the field and the rule to rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from headsieve.errors import HeadsieveError
from headsieve.io.provenance import read_artifact_provenance, record_sha256
from headsieve.pruning.evaluations import evaluations_table
from headsieve.steps import pruning as P
from headsieve.steps.settings import Model, TaskSettings
from headsieve.tokens import file_sha256

TASK = {"max_length": 32, "max_train": 48, "max_eval": 32, "train": "sst2_train", "eval": "sst2_dev"}
OPTIONS = {"max_steps": 2, "batch_size": 16, "learning_rate": 3e-3}
SST2 = {"format": "glue", "task": "sst2"}
SEED = 3


def task_settings(data, **changes) -> TaskSettings:
    options = dict(TASK, **changes.pop("options", {}))
    base = dict(train_spec=SST2, train=[data / "glue/SST-2/train.tsv"], eval_spec=SST2, eval=[data / "glue/SST-2/dev.tsv"])
    return TaskSettings(options, **dict(base, **changes))


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_bert, data, one_thread):
    """One fine-tuning (seed 3), its importance, masks of two strategies at 0.25 and their evaluation."""
    root = tmp_path_factory.mktemp("prov")
    model = Model("tiny", {"source": str(tiny_bert)})
    task = task_settings(data)
    P.finetune(model, task, OPTIONS, SEED, root / "finetuned", root / "finetuned.work")
    P.importance(root / "finetuned", task, 16, SEED, root / "importance.parquet")
    P.select_masks(root / "finetuned", ["random", "importance"], "0.25", SEED, root / "masks.parquet", importance=root / "importance.parquet")
    P.evaluate_masks(root / "finetuned", root / "masks.parquet", task, root / "masked.parquet")
    return root, model, task


def refused(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(HeadsieveError, match=match) as err:
        call(*args, **kwargs)
    line = str(err.value)
    assert "\n" not in line
    return line


def rewrite(path: Path, out: Path, **changes) -> Path:
    """A copy of the Parquet artifact ``path`` whose provenance record has ``changes`` (as made elsewhere)."""
    record = dict(read_artifact_provenance(path, "-"), **changes)
    P.write_made_from(pd.read_parquet(path), out, record)
    return out


def test_every_artifact_records_what_it_was_made_from(made, tiny_bert):
    root, model, task = made
    fine = json.loads((root / "finetuned/metrics.json").read_text())["provenance"]
    assert fine["model"] == "tiny" and fine["model_source"] == str(tiny_bert) and fine["seed"] == SEED
    assert fine["max_length"] == 32 and fine["train_corpus"] == SST2 and len(fine["train_sha256"]) == 64
    assert fine["finetune"] == OPTIONS and fine["task"] == TASK
    fine_hash = record_sha256(fine)
    importance = read_artifact_provenance(root / "importance.parquet", "importance")
    assert importance["finetuned"] == fine_hash and importance["seed"] == SEED and importance["examples"] == 16
    masks = read_artifact_provenance(root / "masks.parquet", "select_masks")
    assert masks["finetuned"] == fine_hash and masks["fraction"] == 0.25 and masks["strategies"] == ["random", "importance"]
    assert masks["importance_sha256"] == file_sha256(root / "importance.parquet")
    masked = read_artifact_provenance(root / "masked.parquet", "evaluate_masks")
    assert masked["protocol"] == "finetune_then_prune" and masked["strategies"] == ["importance", "random"]
    assert masked["eval_sha256"] == fine["eval_sha256"] and masked["model"] == "tiny"


def test_readers_refuse_a_fine_tuning_of_other_settings(made, data, tmp_path):
    root, model, task = made
    line = refused("made for seed 3, not 4", P.importance, root / "finetuned", task, 16, 4, tmp_path / "i.parquet")
    assert "finetuned/metrics.json" in line and "rerun rule finetune" in line
    refused("made for max_length 32, not 16", P.importance, root / "finetuned", task_settings(data, options={"max_length": 16}),
            16, SEED, tmp_path / "i.parquet")  # fmt: skip
    other_train = task_settings(data, train=[data / "glue/SST-2/dev.tsv"])
    refused("made for train_sha256", P.importance, root / "finetuned", other_train, 16, SEED, tmp_path / "i.parquet")
    other_eval = task_settings(data, eval=[data / "glue/SST-2/train.tsv"])
    refused("made for eval_sha256", P.evaluate_masks, root / "finetuned", root / "masks.parquet", other_eval, tmp_path / "m.parquet")
    other_model = Model("other", model.spec)
    refused("made for model 'tiny', not 'other'", P.prune_finetune, other_model, root / "finetuned", root / "masks.parquet",
            task, OPTIONS, SEED, tmp_path / "ptf", tmp_path / "ptf.work")  # fmt: skip
    refused("made for finetune", P.prune_finetune, model, root / "finetuned", root / "masks.parquet", task,
            dict(OPTIONS, max_steps=3), SEED, tmp_path / "ptf", tmp_path / "ptf.work")  # fmt: skip
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_fine_tuned_folder_without_a_record_is_refused(made, tmp_path):
    root, _, task = made
    shutil.copytree(root / "finetuned", tmp_path / "finetuned")
    metrics = json.loads((tmp_path / "finetuned/metrics.json").read_text())
    del metrics["provenance"]
    (tmp_path / "finetuned/metrics.json").write_text(json.dumps(metrics))
    refused("records no provenance.*rerun rule finetune", P.importance, tmp_path / "finetuned", task, 16, SEED, tmp_path / "i.parquet")


def test_masks_refuse_importance_and_labels_of_another_fine_tuning(made, tmp_path):
    root, _, _ = made
    other = rewrite(root / "importance.parquet", tmp_path / "importance.parquet", finetuned="0" * 64)
    line = refused("made for finetuned", P.select_masks, root / "finetuned", ["importance"], "0.25", SEED,
                   tmp_path / "masks.parquet", importance=other)  # fmt: skip
    assert "importance.parquet" in line and "rerun rule importance" in line
    labels = tmp_path / "tests.parquet"
    P.write_made_from(pd.DataFrame({"layer": [0]}), labels, {"model": "bert", "corpus": "ewt"})
    refused("made for model 'bert', not 'tiny'.*rerun rule test_roles", P.select_masks, root / "finetuned",
            ["prune_role:local"], "0.25", SEED, tmp_path / "masks.parquet", labels=labels)  # fmt: skip
    refused("made for seed 3, not 5: rerun rule finetune", P.select_masks, root / "finetuned", ["random"], "0.25", 5,
            tmp_path / "masks.parquet")  # fmt: skip
    assert not (tmp_path / "masks.parquet").exists()


def test_evaluation_refuses_masks_of_another_fine_tuning(made, tmp_path):
    root, model, task = made
    other = rewrite(root / "masks.parquet", tmp_path / "masks.parquet", finetuned="0" * 64)
    refused("masks.parquet: made for finetuned .*rerun rule select_masks", P.evaluate_masks, root / "finetuned", other, task,
            tmp_path / "masked.parquet")  # fmt: skip
    refused("made for finetuned", P.prune_finetune, model, root / "finetuned", other, task, OPTIONS, SEED,
            tmp_path / "ptf", tmp_path / "ptf.work")  # fmt: skip


def seed_copy(made, tmp_path, seed: int, strategies=None) -> Path:
    """The evaluation table of another seed (and, given ``strategies``, of only those)."""
    root, _, _ = made
    frame = pd.read_parquet(root / "masked.parquet").assign(seed=seed)
    record = dict(read_artifact_provenance(root / "masked.parquet", "-"), seed=seed)
    if strategies:
        frame = frame[frame.strategy.isin(strategies)]
        record["strategies"] = sorted(strategies)
    out = tmp_path / f"masked_{seed}_{len(record['strategies'])}.parquet"
    P.write_made_from(frame, out, record)
    return out


def test_collect_checks_every_cell_exactly_once(made, tmp_path):
    root, _, _ = made
    second = seed_copy(made, tmp_path, 4)
    frame = P.collect([root / "masked.parquet", second], tmp_path / "evaluations.parquet")
    expected = evaluations_table([pd.read_parquet(root / "masked.parquet"), pd.read_parquet(second)])
    pd.testing.assert_frame_equal(frame, expected)  # the table itself is as before; only its metadata is new
    record = read_artifact_provenance(tmp_path / "evaluations.parquet", "collect_pruning")
    assert record["seeds"] == [3, 4] and record["protocols"] == ["finetune_then_prune"] and record["model"] == "tiny"

    line = refused("is also in", P.collect, [root / "masked.parquet", root / "masked.parquet"], tmp_path / "dup.parquet")
    assert "masked.parquet" in line
    incomplete = seed_copy(made, tmp_path, 5, strategies=["random"])
    refused(r"no \(strategy, fraction\) \('importance', 0.25\)", P.collect, [root / "masked.parquet", incomplete], tmp_path / "m.parquet")
    other = rewrite(second, tmp_path / "other_model.parquet", model="bert")
    refused("made for model 'bert', not 'tiny'.*rerun rule evaluate_masks", P.collect, [root / "masked.parquet", other],
            tmp_path / "o.parquet")  # fmt: skip
    lying = rewrite(second, tmp_path / "lying.parquet", strategies=["random"])
    refused("its rows are not those its provenance records", P.collect, [lying], tmp_path / "l.parquet")
    bare = tmp_path / "bare.parquet"
    pd.read_parquet(second).to_parquet(bare, index=False)
    refused("records no provenance", P.collect, [bare], tmp_path / "b.parquet")
    assert not any((tmp_path / n).exists() for n in ("dup.parquet", "m.parquet", "o.parquet", "l.parquet", "b.parquet"))


def test_compensation_refuses_pruned_models_of_another_fine_tuning(made, tmp_path):
    root, model, task = made
    job = tmp_path / "pruned_finetuned/0.25"
    (job / "models/random").mkdir(parents=True)
    fine = record_sha256(read_artifact_provenance(root / "finetuned", "finetune"))
    record = {"finetuned": "0" * 64, "seed": SEED, "fraction": 0.25, "kept": ["random"]}
    (job / "metrics.json").write_text(json.dumps({"provenance": record}))
    pruned = {("random", 0.25): str(job / "models/random")}
    line = refused("made for finetuned", P.compensation, root / "finetuned", model, pruned, task, 8, SEED,
                   tmp_path / "c.parquet", tmp_path / "s.parquet")  # fmt: skip
    assert "rerun rule prune_finetune" in line
    (job / "metrics.json").write_text(json.dumps({"provenance": dict(record, finetuned=fine, kept=["importance"])}))
    refused("not the model of random at 0.25", P.compensation, root / "finetuned", model, pruned, task, 8, SEED,
            tmp_path / "c.parquet", tmp_path / "s.parquet")  # fmt: skip
    refused("made for seed 3, not 4", P.compensation, root / "finetuned", model, pruned, task, 8, 4,
            tmp_path / "c.parquet", tmp_path / "s.parquet")  # fmt: skip


def test_report_refuses_compensation_of_another_task_or_a_seed_twice(made, tmp_path):
    root, _, _ = made
    P.collect([root / "masked.parquet"], tmp_path / "evaluations.parquet")
    collected = read_artifact_provenance(tmp_path / "evaluations.parquet", "collect_pruning")
    table = pd.DataFrame({"strategy": ["random"], "fraction": [0.25], "seed": [SEED]})
    good = {"model": "tiny", "task": collected["task"], "seed": SEED}
    P.write_made_from(table, tmp_path / "comp.parquet", good)
    P.write_made_from(table, tmp_path / "other.parquet", dict(good, task={"max_length": 64}))
    call = dict(evaluations=tmp_path / "evaluations.parquet", comparisons=tmp_path / "cmp.parquet", figures=tmp_path / "fig", title="t")
    refused("other.parquet: made for task .*rerun rule compensation", P.report, **call,
            compensation=[tmp_path / "other.parquet"], compensation_summary=[])  # fmt: skip
    refused("seed 3 is also in", P.report, **call, compensation=[tmp_path / "comp.parquet"] * 2, compensation_summary=[])
    P.write_made_from(table.assign(seed=7), tmp_path / "seed7.parquet", dict(good, seed=7))
    refused(r"seed 7 is not among the evaluations' seeds \[3\]", P.report, **call, compensation=[tmp_path / "seed7.parquet"],
            compensation_summary=[])  # fmt: skip
    assert not (tmp_path / "cmp.parquet").exists()


def test_the_whole_chain_reads_its_own_records(made, tmp_path):
    """finetune -> masks -> both protocols -> compensation -> collect -> report, as the workflow runs them:
    every reader accepts what its writer recorded, and the records chain up to the fine-tuning."""
    root, model, task = made
    out = tmp_path / "pruned_finetuned/0.25"
    P.prune_finetune(model, root / "finetuned", root / "masks.parquet", task, OPTIONS, SEED, out, tmp_path / "work",
                     keep_models=["random"], progress=False)  # fmt: skip
    job = json.loads((out / "metrics.json").read_text())["provenance"]
    assert job == read_artifact_provenance(out / "evaluation.parquet", "-") and job["kept"] == ["random"]
    assert job["protocol"] == "prune_then_finetune" and job["finetune"] == OPTIONS
    comp, summary = tmp_path / "compensation.parquet", tmp_path / "compensation_summary.parquet"
    P.compensation(root / "finetuned", model, {("random", 0.25): out / "models/random"}, task, 8, SEED, comp, summary)
    record = read_artifact_provenance(comp, "compensation")
    assert record == read_artifact_provenance(summary, "-") and record["pruned"] == {"random@0.25": record_sha256(job)}
    frame = P.collect([root / "masked.parquet", out], tmp_path / "evaluations.parquet")
    assert set(frame.protocol) == {"finetune_then_prune", "prune_then_finetune"}
    P.report(tmp_path / "evaluations.parquet", tmp_path / "comparisons.parquet", tmp_path / "figures", "t",
             compensation=[comp], compensation_summary=[summary])  # fmt: skip
    assert read_artifact_provenance(tmp_path / "comparisons.parquet", "-")["model"] == "tiny"
