"""Fine-tuning: learning, seeded byte-identical output, exact resume after an interrupt or SIGKILL,
pruned classifiers, early stopping on held-out training data only, task metrics, pickle-free checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.models import glue_task, tiny_classifier

from headsieve.errors import HeadsieveError
from headsieve.models import heads as H
from headsieve.models.load import load_tokenizer
from headsieve import batching as B
from headsieve.tasks import data as D
from headsieve.tasks.data import read_task
from headsieve.tasks import finetune as F
from headsieve.tasks.metrics import compute_metrics
from headsieve.steps import pruning as pruning_steps
from headsieve.steps.settings import Model, TaskSettings
from support.paths import REPO



# ------------------------------------------------------------------------------------------------ helpers


task_data = glue_task


@pytest.fixture(scope="module")
def sst2(data, bert_tokenizer) -> D.TaskData:
    return task_data(data, bert_tokenizer, "sst2", "glue/SST-2/train.tsv", 256)


classifier = tiny_classifier


def config(**kw) -> F.FinetuneConfig:
    base = dict(seed=0, epochs=2, batch_size=16, learning_rate=3e-3, checkpoint_every=8, eval_batch_size=64)
    return F.FinetuneConfig(**{**base, **kw})


def weights(out: Path) -> bytes:
    return (out / "model" / "model.safetensors").read_bytes()


def metrics_of(out: Path) -> dict:
    m = json.loads((out / "train_metrics.json").read_text())
    m.pop("seconds")
    return m


def checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def assert_pickle_free(folder: Path) -> None:
    files = checkpoint_files(folder)
    assert files and (folder / "state.json").is_file()
    for path in files:
        assert path.suffix in (".safetensors", ".json"), path
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path} looks like a pickle/zip"
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                list(handle.keys())
        else:
            json.loads(path.read_text())
    names = {p.relative_to(folder).as_posix() for p in files}
    for name in ("model/config.json", "model/model.safetensors", "optimizer.safetensors", "optimizer.json",
                 "scheduler.json", "rng.safetensors", "state.json"):
        assert name in names


class Interrupt(Exception):
    pass


def interrupt_after_checkpoints(monkeypatch, k: int) -> None:
    """Make the k-th checkpoint write the last thing a run does (an exception right after it)."""
    real = F._replace_checkpoint
    calls = []

    def wrapped(out, write):
        real(out, write)
        calls.append(1)
        if len(calls) >= k:
            raise Interrupt

    monkeypatch.setattr(F, "_replace_checkpoint", wrapped)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert, sst2) -> Path:
    """One uninterrupted run of the standard config."""
    out = tmp_path_factory.mktemp("ft_reference")
    F.finetune(classifier(tiny_bert), sst2, config(), out, progress=False)
    return out


# ----------------------------------------------------------------------------------------------- learning


def test_loss_decreases_and_training_accuracy_rises(tiny_bert, sst2, tmp_path):
    model = classifier(tiny_bert)
    before = F.evaluate(model, sst2, 64)["accuracy"]
    m = F.finetune(model, sst2, config(epochs=6), tmp_path, progress=False)
    assert m["steps"] == 6 * 16 and m["steps_per_epoch"] == 16 and m["planned_steps"] == 96
    assert m["final_loss"] < 0.5 * m["initial_loss"]
    assert m["epoch_losses"][-1] < 0.5 * m["epoch_losses"][0]
    after = F.evaluate(model, sst2, 64)
    majority = max(np.mean([e["label"] for e in sst2.examples]), 0.5)
    assert after["n"] == 256 and after["accuracy"] > max(0.8, majority + 0.15) and after["accuracy"] > before
    assert not (tmp_path / "checkpoint").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train_metrics.json"]


def test_fractional_epochs_and_max_steps(tiny_bert, sst2, tmp_path):
    m = F.finetune(classifier(tiny_bert), sst2, config(epochs=0.5), tmp_path / "a", progress=False)
    assert m["steps"] == 8 and m["epochs"] == 0.5
    m = F.finetune(classifier(tiny_bert), sst2, config(epochs=None, max_steps=5), tmp_path / "b", progress=False)
    assert m["steps"] == 5


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tiny_bert, sst2, reference, tmp_path):
    F.finetune(classifier(tiny_bert), sst2, config(), tmp_path / "again", progress=False)
    assert weights(tmp_path / "again") == weights(reference)
    config_json = "model/config.json"
    assert (tmp_path / "again" / config_json).read_bytes() == (reference / config_json).read_bytes()
    assert metrics_of(tmp_path / "again") == metrics_of(reference)

    F.finetune(classifier(tiny_bert, seed=1), sst2, config(seed=1), tmp_path / "other", progress=False)
    assert weights(tmp_path / "other") != weights(reference)
    assert metrics_of(tmp_path / "other")["mean_loss"] != metrics_of(reference)["mean_loss"]

    # the training seed alone (same head init) changes order and dropout, hence the result
    F.finetune(classifier(tiny_bert), sst2, config(seed=1), tmp_path / "order", progress=False)
    assert weights(tmp_path / "order") != weights(reference)


# ------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("early", [False, True])
def test_resume_after_interrupt_is_exact(tiny_bert, sst2, reference, tmp_path, monkeypatch, early):
    kw = dict(early_stopping=6, held_out_fraction=0.25, eval_every=4) if early else {}
    if early:
        ref = tmp_path / "ref"
        F.finetune(classifier(tiny_bert), sst2, config(**kw), ref, progress=False)
    else:
        ref = reference
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 2)
        with pytest.raises(Interrupt):
            F.finetune(classifier(tiny_bert), sst2, config(**kw), out, progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 16 and not state["done"] and len(state["losses"]) == 16
    assert_pickle_free(out / "checkpoint")
    if early:
        assert (out / "checkpoint" / "best.safetensors").is_file()
    # a model seeded differently: the checkpoint must restore weights, RNG, optimizer and position
    m = F.finetune(classifier(tiny_bert, seed=99), sst2, config(**kw), out, progress=False)
    assert weights(out) == weights(ref)
    assert metrics_of(out) == metrics_of(ref)
    assert m["steps"] == metrics_of(ref)["steps"]
    assert not (out / "checkpoint").exists()


def test_partial_checkpoint_write_is_never_read(tiny_bert, sst2, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = F._save_state
    calls = []

    def failing_save(state, folder, name):  # dies inside the 3rd checkpoint, after its model was written
        calls.append(name)
        if calls.count("optimizer") == 3:
            raise Interrupt
        real_save(state, folder, name)

    with monkeypatch.context() as patch:
        patch.setattr(F, "_save_state", failing_save)
        with pytest.raises(Interrupt):
            F.finetune(classifier(tiny_bert), sst2, config(), out, progress=False)
    assert (out / ".checkpoint.tmp" / "model" / "model.safetensors").is_file()
    assert not (out / ".checkpoint.tmp" / "state.json").exists()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 16
    F.finetune(classifier(tiny_bert, seed=5), sst2, config(), out, progress=False)
    assert weights(out) == weights(reference)
    assert metrics_of(out) == metrics_of(reference)
    assert not (out / ".checkpoint.tmp").exists()


def test_recover_checkpoint_between_renames(tmp_path):
    old = tmp_path / ".checkpoint.old"
    old.mkdir()
    (old / "state.json").write_text("{}")
    (tmp_path / ".checkpoint.tmp").mkdir()
    (tmp_path / ".checkpoint.trash").mkdir()
    (tmp_path / ".model.tmp-12345").mkdir()  # final outputs half-written by a killed run
    (tmp_path / ".train_metrics.json.tmp-12345").write_text("{")
    found = F.recover_checkpoint(tmp_path)  # killed after moving the old one aside: it comes back
    assert found == tmp_path / "checkpoint" and (found / "state.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    old.mkdir()
    assert F.recover_checkpoint(tmp_path) == found and not old.exists()  # new one in place: old one dropped


def test_mismatching_checkpoint_is_a_one_line_error(tiny_bert, sst2, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 1)
        with pytest.raises(Interrupt):
            F.finetune(classifier(tiny_bert), sst2, config(), out, progress=False)
    pruned = classifier(tiny_bert)
    H.prune_heads(pruned, {0: [1]})
    with pytest.raises(HeadsieveError, match="delete .*checkpoint.* to start over") as err:
        F.finetune(pruned, sst2, config(), out, progress=False)
    assert "\n" not in str(err.value) and str(out / "checkpoint") in str(err.value)
    with pytest.raises(HeadsieveError, match="learning_rate"):
        F.finetune(classifier(tiny_bert), sst2, config(learning_rate=1e-3), out, progress=False)
    with pytest.raises(HeadsieveError, match="other training"):
        F.finetune(classifier(tiny_bert), D.TaskData("sst2", sst2.labels, "accuracy", sst2.examples[:-1]),
                   config(), out, progress=False)
    # checkpoint_every may change between kill and resume
    F.finetune(classifier(tiny_bert), sst2, config(checkpoint_every=5), out, progress=False)


KILL_SCRIPT = textwrap.dedent(
    """
    import logging, sys, torch
    from headsieve.io.glue import TASKS, read_glue
    from headsieve.models.load import load_encoder, load_tokenizer
    from headsieve.tasks import data as D, finetune as F

    tiny, data_file, out = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(1)
    spec = TASKS["sst2"]
    tok = load_tokenizer("tiny", {"source": tiny})
    ex = read_glue(data_file, spec, max_examples=256)
    data = D.TaskData("sst2", spec.labels, spec.metric, D.encode_examples(tok, ex, 48))
    torch.manual_seed(0)
    model = load_encoder("tiny", {"source": tiny}, task_labels=2)
    cfg = F.FinetuneConfig(seed=3, max_steps=160, epochs=None, batch_size=16, learning_rate=3e-3,
                           checkpoint_every=10, early_stopping=4, held_out_fraction=0.2, eval_every=10)
    F.finetune(model, data, cfg, out, progress=False, tokenizer=tok)
    """
)


def test_sigkill_and_rerun_gives_identical_bytes(tiny_bert, data, tmp_path):
    script = tmp_path / "run_finetune.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

    def command(out):
        return [sys.executable, str(script), str(tiny_bert), str(data / "glue/SST-2/train.tsv"), str(out)]

    ref, victim = tmp_path / "ref", tmp_path / "victim"
    ref_proc = subprocess.Popen(command(ref), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(command(victim), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (victim / "checkpoint" / "state.json").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (victim / "train_metrics.json").exists(), "the run finished before the kill"
    assert_pickle_free(victim / "checkpoint")

    rerun = subprocess.run(command(victim), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr and "at step 0 " not in rerun.stderr
    _, ref_err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, ref_err.decode()[-2000:]

    assert weights(victim) == weights(ref)
    assert metrics_of(victim) == metrics_of(ref)
    assert (victim / "held_out.json").read_bytes() == (ref / "held_out.json").read_bytes()
    assert (victim / "model" / "tokenizer.json").is_file()
    assert not (victim / "checkpoint").exists() and not any(p.name.startswith(".") for p in victim.iterdir())


# ------------------------------------------------------------------------------------------------ pruning


def test_pruned_classifier_fine_tunes_saves_and_reloads(tiny_bert, sst2, bert_tokenizer, tmp_path):
    model = classifier(tiny_bert)
    H.prune_heads(model, {0: [1], 2: [0, 1, 2, 3]})  # one head, and a whole layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = F.finetune(model, sst2, config(epochs=1), tmp_path, progress=False, tokenizer=bert_tokenizer)
    assert m["pruned_heads"] == {"0": [1], "2": [0, 1, 2, 3]}
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    loaded = H.load_pruned(str(tmp_path / "model"))
    assert type(loaded).__name__ == "BertForSequenceClassification"
    assert H.head_counts(loaded) == {"encoder": [3, 4, 0]}
    assert H.pruned_heads(loaded) == {("encoder", 0): [1], ("encoder", 2): [0, 1, 2, 3]}
    assert H.attention_sites(loaded)[0].query.weight.shape == (24, 32)
    for key, value in load_file(str(tmp_path / "model" / "model.safetensors")).items():
        assert torch.equal(value, model.state_dict()[key])
    assert np.array_equal(F.predict(loaded, sst2, 64), F.predict(model, sst2, 64))
    assert F.evaluate(loaded, sst2, 32) == F.evaluate(model, sst2, 32)
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    tok = load_tokenizer("reloaded", {"source": str(tmp_path / "model")})
    assert tok("a fine film")["input_ids"] == bert_tokenizer("a fine film")["input_ids"]


# ----------------------------------------------------------------------------------------- early stopping


def test_early_stopping_sees_only_held_out_training_data(tiny_bert, data, bert_tokenizer, tmp_path, monkeypatch):
    train = task_data(data, bert_tokenizer, "sst2", "glue/SST-2/train.tsv", 300)
    cfg = config(seed=4, epochs=None, max_steps=60, early_stopping=2, eval_every=4)
    assert cfg.held_out_share == 0.1
    cfg = config(seed=4, epochs=None, max_steps=60, early_stopping=2, eval_every=4, held_out_fraction=0.2)
    keep, held_idx = D.split_held_out(300, 0.2, 4)
    held_ids = {id(train.examples[i]) for i in held_idx}
    train_ids = {id(train.examples[i]) for i in keep}

    scripted = iter([0.5, 0.7, 0.6, 0.65])  # best at the 2nd evaluation, then 2 without improvement
    seen, snapshots = [], []
    real_evaluate = F.evaluate

    evaluating = []  # non-empty while an evaluation runs (prediction batches by length too, with an order)

    def spy_evaluate(model, data_, batch_size, device=None):
        seen.append(data_)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        evaluating.append(True)
        try:
            result = real_evaluate(model, data_, batch_size, device)
        finally:
            evaluating.pop()
        return dict(result, accuracy=next(scripted, result["accuracy"]))

    trained_on = []
    real_iter = B.iter_batches

    def spy_iter(examples, batch_size, pad_id, use_token_types, order=None, start=0):
        if order is not None and not evaluating:
            trained_on.append({id(e) for e in examples})
        return real_iter(examples, batch_size, pad_id, use_token_types, order, start)

    monkeypatch.setattr(F, "evaluate", spy_evaluate)
    monkeypatch.setattr(B, "iter_batches", spy_iter)
    m = F.finetune(classifier(tiny_bert), train, cfg, tmp_path, progress=False)

    # evaluations: only the held-out part of the training data, as split by data.split_held_out
    assert len(seen) == 5  # 4 during training, 1 of the final model
    for data_ in seen:
        assert [id(e) for e in data_.examples] == [id(train.examples[i]) for i in held_idx]
    assert trained_on and all(ids == train_ids and not ids & held_ids for ids in trained_on)
    record = json.loads((tmp_path / "held_out.json").read_text())
    assert record["indices"] == held_idx.tolist() and record["fraction"] == 0.2 and record["n"] == 300
    assert m["n_train"] == 240 and m["n_held_out"] == 60 and m["held_out_source"] == "split_held_out"

    # stopping and the final model: the weights of the best evaluation
    assert m["stopped_early"] and m["steps"] == 16 and m["best_step"] == 8
    assert [h["step"] for h in m["held_out_history"]] == [4, 8, 12, 16]
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert all(torch.equal(v, snapshots[1][k]) for k, v in saved.items())
    assert not all(torch.equal(v, snapshots[3][k]) for k, v in saved.items())


def test_given_held_out_set_replaces_the_split(tiny_bert, sst2, tmp_path):
    train = D.TaskData("sst2", sst2.labels, "accuracy", sst2.examples[:200])
    held = D.TaskData("sst2", sst2.labels, "accuracy", sst2.examples[200:])
    m = F.finetune(classifier(tiny_bert), train, config(epochs=1, early_stopping=1), tmp_path, held_out=held,
                   progress=False)
    assert m["n_train"] == 200 and m["n_held_out"] == 56 and m["held_out_source"] == "given"
    assert m["held_out"]["n"] == 56 and not (tmp_path / "held_out.json").exists()


# ------------------------------------------------------------------------------------------------ metrics


def test_task_metrics_cola_and_mrpc(tiny_bert, data, bert_tokenizer, tmp_path):
    cola = task_data(data, bert_tokenizer, "cola", "glue/CoLA/raw/in_domain_train.tsv", 200)
    mrpc = task_data(data, bert_tokenizer, "mrpc", "glue/MRPC/train.tsv", 120, max_length=64)
    model = classifier(tiny_bert)
    for task in (cola, mrpc):
        gold = np.array([e["label"] for e in task.examples])
        pred = F.predict(model, task, 32)
        assert pred.dtype == np.int64 and pred.shape == gold.shape
        assert F.evaluate(model, task, 32) == dict(compute_metrics(task.metric, pred, gold), n=len(gold))
    assert set(F.evaluate(model, cola, 32)) == {"matthews", "accuracy", "n"}
    assert set(F.evaluate(model, mrpc, 32)) == {"f1", "accuracy", "n"}
    assert any(e["token_type_ids"].count(1) for e in mrpc.examples)  # pairs carry segment ids

    m = F.finetune(model, cola, config(epochs=1, held_out_fraction=0.25), tmp_path, progress=False)
    assert set(m["held_out"]) == {"matthews", "accuracy", "n"} and m["held_out"]["n"] == 50
    assert not m["stopped_early"] and m["held_out_history"] == []


# ---------------------------------------------------------------------------------------------- user errors


def test_config_and_input_errors(tiny_bert, sst2, tmp_path):
    with pytest.raises(HeadsieveError, match="epochs or max_steps"):
        F.FinetuneConfig(epochs=None)
    with pytest.raises(HeadsieveError, match="batch_size"):
        F.FinetuneConfig(batch_size=0)
    with pytest.raises(HeadsieveError, match="held_out_fraction"):
        F.FinetuneConfig(early_stopping=2, held_out_fraction=0.0)
    with pytest.raises(HeadsieveError, match="unknown key.*lr"):
        F.FinetuneConfig.from_dict({"lr": 1e-3})
    assert F.FinetuneConfig.from_dict({"seed": 3, "epochs": 1.5}).epochs == 1.5
    with pytest.raises(HeadsieveError, match="classifier has 3"):
        F.finetune(classifier(tiny_bert, labels=3), sst2, config(), tmp_path, progress=False)
    with pytest.raises(HeadsieveError, match="holds out nothing"):
        F.finetune(classifier(tiny_bert), D.TaskData("sst2", sst2.labels, "accuracy", sst2.examples[:3]),
                   config(early_stopping=1, held_out_fraction=0.1), tmp_path, progress=False)


# ------------------------------------------------------------------------------------- prune, then fine-tune


PTF_TASK = {"max_length": 32, "max_train": 64, "max_eval": 48}
PTF_OPTIONS = {"max_steps": 6, "batch_size": 16, "learning_rate": 3e-3, "checkpoint_every": 2}
SST2 = {"format": "glue", "task": "sst2"}


def ptf_masks(path: Path, finetuned: Path) -> Path:
    """Masks of one seed and fraction: two strategies with the same heads, one with others, one with none;
    recorded as selected from the fine-tuning ``finetuned`` (what prune_finetune checks)."""
    import pandas as pd

    from headsieve.io.provenance import read_artifact_provenance, record_sha256

    rows = [("a", 0.5, 3, "encoder", 0, 1)] + [("a", 0.5, 3, "encoder", 2, h) for h in range(4)]
    rows += [("b", 0.5, 3, kind, layer, head) for _, _, _, kind, layer, head in rows]
    rows += [("c", 0.5, 3, "encoder", 1, 2), ("empty", 0.5, 3, "", -1, -1)]
    frame = pd.DataFrame(rows, columns=["strategy", "fraction", "seed", "kind", "layer", "head"])
    made_from = record_sha256(read_artifact_provenance(finetuned, "finetune"))
    record = {"finetuned": made_from, "seed": 3, "fraction": 0.5, "strategies": ["a", "b", "c", "empty"]}
    pruning_steps.write_made_from(frame.astype({"seed": "int32", "layer": "int16", "head": "int16"}), path, record)
    return path


def ptf_task(data) -> TaskSettings:
    return TaskSettings(PTF_TASK, SST2, [data / "glue/SST-2/train.tsv"], SST2, [data / "glue/SST-2/dev.tsv"])


def run_ptf(tiny_bert, data, finetuned: Path, masks: Path, out: Path, keep=("a",)):
    return pruning_steps.prune_finetune(
        Model("tiny", {"source": str(tiny_bert)}), finetuned, masks, ptf_task(data), PTF_OPTIONS, 3, out,
        Path(f"{out}.work"), keep_models=list(keep), progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ptf_run(tmp_path_factory, tiny_bert, data, one_thread):
    """The unpruned fine-tuning of seed 3, then one uninterrupted prune_then_finetune job over ptf_masks."""
    root = tmp_path_factory.mktemp("ptf")
    finetuned = root / "finetuned"
    model = Model("tiny", {"source": str(tiny_bert)})
    pruning_steps.finetune(model, ptf_task(data), PTF_OPTIONS, 3, finetuned, root / "finetuned.work")
    masks = ptf_masks(root / "masks.parquet", finetuned)
    frame = run_ptf(tiny_bert, data, finetuned, masks, root / "out")
    return root, frame


def test_prune_then_finetune_starts_from_the_pretrained_model(ptf_run, tiny_bert, data, bert_tokenizer):
    import pandas as pd

    root, frame = ptf_run
    table = pd.read_parquet(root / "out/evaluation.parquet")
    assert set(table.protocol) == {"prune_then_finetune"} and (table.n == 48).all()
    acc = table[table.metric == "accuracy"].set_index("strategy")
    assert dict(acc.heads_pruned) == {"a": 5, "b": 5, "c": 1, "empty": 0}
    assert acc.loc["a", "value"] == acc.loc["b", "value"]  # same heads: one fine-tuning
    base = json.loads((root / "finetuned/metrics.json").read_text())
    assert acc.loc["empty", "value"] == base["eval"]["accuracy"]  # nothing pruned: the unpruned fine-tuning
    assert not (root / "out.work").exists() and sorted(p.name for p in (root / "out/models").iterdir()) == ["a"]
    # the kept model: the pre-trained model with the heads removed, fine-tuned with the seed's init and order
    kept = H.load_pruned(str(root / "out/models/a"))
    assert H.head_counts(kept) == {"encoder": [3, 4, 0]}
    assert H.pruned_heads(kept) == {("encoder", 0): [1], ("encoder", 2): [0, 1, 2, 3]}
    direct = pruning_steps.pretrained_classifier(Model("tiny", {"source": str(tiny_bert)}), 2, 3, [(0, 1), (2, 0), (2, 1), (2, 2), (2, 3)], "cpu")
    train = read_task(SST2, [data / "glue/SST-2/train.tsv"], bert_tokenizer, 32, 64, 0)
    F.finetune(direct, train, F.FinetuneConfig.from_dict(dict(PTF_OPTIONS, seed=3)), root / "direct", progress=False)
    assert weights(root / "direct") == (root / "out/models/a/model.safetensors").read_bytes()
    unpruned = (root / "finetuned/model/model.safetensors").read_bytes()
    assert weights(root / "direct") != unpruned
    metrics = json.loads((root / "out/metrics.json").read_text())
    assert metrics["a@0.5"]["train"]["pruned_heads"] == {"0": [1], "2": [0, 1, 2, 3]} and metrics["a@0.5"]["train"]["steps"] == 6


def test_prune_then_finetune_leaves_out_skipped_strategies(ptf_run, tiny_bert, data, tmp_path):
    root, _ = ptf_run
    frame = pruning_steps.prune_finetune(
        Model("tiny", {"source": str(tiny_bert)}), root / "finetuned", root / "masks.parquet", ptf_task(data),
        PTF_OPTIONS, 3, tmp_path / "out", tmp_path / "out.work", keep_models=["a"], skip=["a", "b", "c"], progress=False,
    )  # fmt: skip
    assert set(frame.strategy) == {"empty"} and not (tmp_path / "out/models").exists()


def test_masked_training_equals_pruned_training(tiny_bert, sst2, one_thread, tmp_path):
    """With dropout off, fine-tuning with the heads' gates held at 0 gives the model that fine-tuning the
    physically pruned one gives: the fixed mask is the pruning, and the gated heads stay off throughout."""
    heads = [(0, 1), (1, 0), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]

    def start(prune: bool):
        model = pruning_steps.pretrained_classifier(Model("tiny", {"source": str(tiny_bert)}), 2, 5, heads if prune else [], "cpu")
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model

    cfg = config(seed=5, epochs=None, max_steps=8, weight_decay=0.0)
    pruned = start(True)
    F.finetune(pruned, sst2, cfg, tmp_path / "pruned", progress=False)
    masked = start(False)
    gates = H.make_gates(masked, off=heads)
    with H.apply_head_gates(masked, gates):
        F.finetune(masked, sst2, cfg, tmp_path / "masked", progress=False)
        assert torch.equal(gates["encoder"], H.make_gates(masked, off=heads)["encoder"])  # still off after training
        batches = list(B.iter_batches(sst2.examples[:64], 32, 0, True))
        with torch.no_grad():
            got = torch.cat([masked.eval()(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    with torch.no_grad():
        want = torch.cat([pruned.eval()(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    with torch.no_grad():
        untrained = torch.cat([start(True).eval()(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    assert not torch.allclose(want, untrained, atol=1e-3)  # training moved the model
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_prune_then_finetune_resumes_after_a_kill(ptf_run, tiny_bert, data, tmp_path, monkeypatch, caplog):
    """Interrupted in its second fine-tuning, the job started again skips the finished head set, resumes the
    other from its checkpoint and writes the same table and kept model as the uninterrupted run."""
    import logging

    import pandas as pd

    root, _ = ptf_run
    interrupt_after_checkpoints(monkeypatch, 5)  # 3 checkpoints per fine-tuning (steps 2, 4 and the end)
    with pytest.raises(Interrupt):
        run_ptf(tiny_bert, data, root / "finetuned", root / "masks.parquet", tmp_path / "out")
    done = list((tmp_path / "out.work").glob("*/result.json"))
    assert len(done) == 1 and not (tmp_path / "out").exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        run_ptf(tiny_bert, data, root / "finetuned", root / "masks.parquet", tmp_path / "out")
    assert "resuming from" in caplog.text
    for rel in ("evaluation.parquet", "models/a/model.safetensors"):
        assert (tmp_path / "out" / rel).read_bytes() == (root / "out" / rel).read_bytes(), rel
    assert pd.read_parquet(tmp_path / "out/evaluation.parquet").equals(pd.read_parquet(root / "out/evaluation.parquet"))


def test_predict_keeps_the_data_order(tiny_bert, sst2):
    model = classifier(tiny_bert).eval()
    pred = F.predict(model, sst2, 16)
    with torch.no_grad():
        one = [int(model(input_ids=torch.tensor([e["input_ids"]]), token_type_ids=torch.tensor([e["token_type_ids"]])).logits.argmax()) for e in sst2.examples[:40]]
    assert pred[:40].tolist() == one and len(pred) == len(sst2.examples)


def test_frozen_embeddings_stay_pretrained_and_resume_exactly(tiny_bert, sst2, tmp_path, monkeypatch):
    model = classifier(tiny_bert)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = config(epochs=1, freeze_embeddings=True)
    F.finetune(model, sst2, cfg, tmp_path / "whole", progress=False)
    after = model.state_dict()
    assert torch.equal(after["bert.embeddings.word_embeddings.weight"], before["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(after["bert.embeddings.position_embeddings.weight"], before["bert.embeddings.position_embeddings.weight"])
    assert model.get_input_embeddings().weight.requires_grad  # restored
    interrupt_after_checkpoints(monkeypatch, 1)
    with pytest.raises(Interrupt):
        F.finetune(classifier(tiny_bert), sst2, cfg, tmp_path / "killed", progress=False)
    monkeypatch.undo()
    F.finetune(classifier(tiny_bert), sst2, cfg, tmp_path / "killed", progress=False)
    assert weights(tmp_path / "killed") == weights(tmp_path / "whole")
    with pytest.raises(HeadsieveError, match="freeze_embeddings"):
        config(freeze_embeddings="yes")


# ------------------------------------------------------------------------------------------ group_by_length


def test_grouped_epoch_order_is_a_seeded_permutation_of_batches_of_similar_length():
    from headsieve.tasks.data import epoch_order, grouped_epoch_order

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1003)
    order = grouped_epoch_order(lengths, 16, seed=1, epoch=0, group=10)
    assert sorted(order) == list(range(1003))  # every example once per epoch
    assert np.array_equal(order, grouped_epoch_order(lengths, 16, seed=1, epoch=0, group=10))  # seeded
    assert not np.array_equal(order, grouped_epoch_order(lengths, 16, seed=1, epoch=1, group=10))  # per epoch
    batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 1003 % 16  # the short batch last

    def padded(o):
        return sum(len(b) * lengths[b].max() for b in (o[i : i + 16] for i in range(0, len(o), 16)))

    plain = epoch_order(1003, 1, 0)
    assert padded(order) < 0.7 * padded(plain)  # far less padding than random batches
    # each batch holds examples drawn from one group of 10 batches of the epoch's permutation
    group_of = {int(i): k // 160 for k, i in enumerate(plain)}
    assert all(len({group_of[int(i)] for i in b}) == 1 for b in batches)


def test_group_by_length_trains_and_resumes_exactly(tiny_bert, sst2, tmp_path, monkeypatch):
    cfg = config(group_by_length=True)
    ref = tmp_path / "ref"
    F.finetune(classifier(tiny_bert), sst2, cfg, ref, progress=False)
    assert metrics_of(ref)["config"]["group_by_length"] is True
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 2)  # mid-epoch: the grouped order must be rebuilt the same
        with pytest.raises(Interrupt):
            F.finetune(classifier(tiny_bert), sst2, cfg, out, progress=False)
    F.finetune(classifier(tiny_bert, seed=99), sst2, cfg, out, progress=False)
    assert weights(out) == weights(ref) and metrics_of(out) == metrics_of(ref)
    plain = tmp_path / "plain"
    F.finetune(classifier(tiny_bert), sst2, config(), plain, progress=False)
    assert weights(plain) != weights(ref)  # other batches: the option takes effect
    with pytest.raises(HeadsieveError, match="group_by_length"):
        config(group_by_length="yes")
