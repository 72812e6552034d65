"""The pruning experiment's steps, as the workflow runs them (one function per rule).

Each function loads what it needs, calls the science (fine-tuning, importance, strategies, the mask
evaluator, compensation) and writes its outputs atomically.  The evaluation split is only ever scored:
importance, early stopping and the compensation inputs come from the training split.

Two protocols (:data:`PROTOCOLS`), both scored on the evaluation split with the same masks:

* ``finetune_then_prune`` (Michel et al. 2019): the heads a strategy picks are masked in the fine-tuned
  model, which is scored without further training (:func:`evaluate_masks`);
* ``prune_then_finetune`` (the seed study): the same heads are physically removed from the *pre-trained*
  model, which is then fine-tuned on the task with exactly the recipe, seed, classifier initialisation and
  data order of the unpruned fine-tuning (:func:`finetune_base`), and scored (:func:`prune_then_finetune`).
  The removed heads cannot come back during training.  With no head removed it reproduces the unpruned
  fine-tuning bit for bit, so the unpruned model is the fraction-0 point of both protocols.

Masks are selected once per seed and fraction (:func:`select_masks`) from the fine-tuned model of that seed:
``importance`` under ``prune_then_finetune`` therefore ranks heads by the importance they have in the
unpruned model fine-tuned with the same seed (the pre-trained model has no task loss to differentiate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import atomic_dir, write_frame, write_json
from headsieve.models import heads as H
from headsieve.models.load import load_encoder, load_tokenizer
from headsieve.models.runtime import batch_options
from headsieve.pruning.masks import heads_of
from headsieve import batching as B
from headsieve.tasks import data as D
from headsieve.tasks.data import read_task
from headsieve.tasks.finetune import load_finetuned
from headsieve.tasks.metrics import primary_metric

log = logging.getLogger(__name__)

FINETUNE_THEN_PRUNE = "finetune_then_prune"
PRUNE_THEN_FINETUNE = "prune_then_finetune"
#: the protocols, in the order tables list them
PROTOCOLS = (FINETUNE_THEN_PRUNE, PRUNE_THEN_FINETUNE)
#: the strategy name of the unpruned model in the evaluations table (fraction 0 of prune_then_finetune)
UNPRUNED = "none"


# ------------------------------------------------------------------------------------------ fine-tuning


def pretrained_classifier(model_key, model_spec, n_labels: int, seed: int, heads, device):
    """The pre-trained model as a classifier whose head is initialised from ``seed``, with ``heads`` removed.

    The start of every fine-tuning: the unpruned one (no heads) and each of prune_then_finetune.
    """
    from headsieve.tasks.finetune import set_seed

    set_seed(seed)
    model = load_encoder(model_key, model_spec, task_labels=n_labels, device=device)
    if heads:
        H.prune_heads(model, heads)
    return model


def finetune_base(
    model_key, model_spec, train_spec, train_path, eval_spec, eval_path, task_opts, ft_opts, seed, output, work, device
) -> dict:
    """Fine-tune the pre-trained model on a task; write ``output/model`` and ``output/metrics.json``.

    ``work`` holds the checkpoints: a killed run started again resumes there.
    """
    from headsieve.tasks.finetune import FinetuneConfig, evaluate, finetune

    tokenizer = load_tokenizer(model_key, model_spec)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    model = pretrained_classifier(model_key, model_spec, train.n_labels, seed, [], device)
    config = FinetuneConfig.from_dict(dict(ft_opts, seed=seed))
    train_metrics = finetune(model, train, config, work, tokenizer=tokenizer, device=device)
    metrics = {"train": train_metrics, "eval": evaluate(model, test, config.eval_batch_size, device)}
    log.info("eval split: %s", metrics["eval"])
    with atomic_dir(output) as tmp:
        shutil.copytree(Path(work) / "model", tmp / "model")
        write_json(metrics, tmp / "metrics.json")
    shutil.rmtree(work, ignore_errors=True)
    return metrics


# ------------------------------------------------------------------------------------------ importance


def importance(finetuned, train_spec, train_path, task_opts, n_examples, batch_size, seed, output, device):
    """Head importance (Michel et al.) of the fine-tuned model on a seeded sample of the training split."""
    from headsieve.pruning.importance import head_importance

    model, tokenizer = load_finetuned(finetuned, device)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    pick = np.random.default_rng([seed, 31337]).permutation(len(train.examples))[:n_examples]
    pad, types = batch_options(model)
    batches = list(B.iter_batches(train.examples, batch_size, pad, types, order=np.sort(pick)))
    scores = head_importance(model, batches, device=device)
    L, Hh = scores.shape
    layer, head = np.meshgrid(np.arange(L), np.arange(Hh), indexing="ij")
    frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "importance": scores.ravel(), "seed": seed})
    write_frame(frame.astype({"layer": "int16", "head": "int16", "seed": "int32"}), output)


# ------------------------------------------------------------------------------------------ masks


def select_masks(model_shape, strategies, fractions, seed, labels_path, importance_path, output) -> pd.DataFrame:
    """Heads pruned by every strategy at every fraction for one seed (:func:`headsieve.pruning.masks.mask_table`:
    strategy, fraction, seed, kind, layer, head) of an encoder of ``model_shape`` (layers, heads)."""
    from headsieve.models.headspace import HeadSpace
    from headsieve.pruning.masks import mask_table, read_importance

    space = HeadSpace.encoder(*model_shape)
    labels = pd.read_parquet(labels_path) if labels_path else None
    scores = read_importance(importance_path, space) if importance_path else None
    frame = mask_table(space, strategies, fractions, seed, labels=labels, importance=scores)
    write_frame(frame, output)
    return frame


def evaluate_masks(finetuned, masks_path, eval_spec, eval_path, task_opts, batch_size, output, device):
    """Every mask of one seed on the evaluation split, without further training, in one process."""
    from headsieve.models.masking import mask_from_heads, mask_key
    from headsieve.pruning.evaluate import MaskEvaluator

    model, tokenizer = load_finetuned(finetuned, device)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    masks = pd.read_parquet(masks_path)
    space = H.head_space(model)
    named = {}
    for (strategy, fraction), _ in masks.groupby(["strategy", "fraction"], sort=True):
        named[(strategy, float(fraction))] = mask_from_heads(space, heads_of(masks, strategy, fraction))
    seed = int(masks["seed"].iloc[0])
    unique = {mask_key(mask): mask for mask in named.values()}  # e.g. every strategy at fraction 0
    log.info("evaluating %d masks (%d distinct) on %d examples", len(named), len(unique), len(test.examples))
    with MaskEvaluator(model, test, batch_size, device=device) as evaluator:
        found = dict(zip(unique, evaluator.evaluate_many(unique)))
    rows = []
    for (strategy, fraction), mask in named.items():
        result = found[mask_key(mask)]
        result = {k: v for k, v in result.items() if k != "mask"}
        rows += _metric_rows(result, test, strategy, fraction, seed, FINETUNE_THEN_PRUNE)
    write_frame(pd.DataFrame(rows), output)


def _metric_rows(result: dict, data: D.TaskData, strategy, fraction, seed, protocol: str) -> list[dict]:
    base = {"task": data.task, "protocol": protocol, "strategy": strategy, "fraction": float(fraction),
            "seed": int(seed), "heads_pruned": int(result.get("heads_pruned", 0)), "n": int(result["n"])}  # fmt: skip
    skip = {"n", "heads_pruned"}
    return [dict(base, metric=k, value=float(v), primary=k == primary_metric(data.metric)) for k, v in result.items() if k not in skip]


# ------------------------------------------------------------------------------------------ prune, then fine-tune


def heads_key(heads) -> str:
    """A short name of a head set (the folder of its fine-tuning in a job's work folder)."""
    text = json.dumps(sorted([int(l), int(h)] for l, h in heads), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prune_then_finetune(
    model_key, model_spec, finetuned, masks_path, train_spec, train_path, eval_spec, eval_path, task_opts, ft_opts,
    seed, keep_models, output, work, device, progress=True, skip=(),
) -> pd.DataFrame:  # fmt: skip
    """The seed study's protocol for every mask of one seed and fraction (one job, one mask group).

    For each distinct head set of the masks table: load the pre-trained model as a classifier with the seed
    (the classifier initialisation of the unpruned fine-tuning), physically remove the heads, fine-tune with
    the unpruned fine-tuning's options and seed (the removed heads cannot come back), score on the evaluation
    split.  A head set that is empty is the unpruned fine-tuning itself: its metrics are read from
    ``finetuned/metrics.json``.  Strategies that pick the same heads share one fine-tuning.

    ``work`` holds one folder per head set (its checkpoints, then ``result.json``): a killed job started again
    skips the finished head sets and resumes the unfinished one from its last checkpoint.  Writes ``output/``:
    ``evaluation.parquet`` (the evaluations table's columns), ``metrics.json`` (training metrics per head set)
    and ``models/<strategy>/`` for the strategies in ``keep_models`` (the compensation analysis reads them).
    Strategies in ``skip`` are left out (scored under finetune_then_prune only).
    """
    from headsieve.tasks.finetune import FinetuneConfig, evaluate, finetune

    masks = pd.read_parquet(masks_path)
    masks = masks[~masks.strategy.isin(list(skip))]
    if masks.empty:
        raise HeadsieveError(f"{masks_path}: no masks (after leaving out {list(skip)})")
    work = Path(work)
    _reset_stale_work(work, {"model": model_spec, "train": [train_spec, [str(p) for p in train_path]],
                             "eval": [eval_spec, [str(p) for p in eval_path]], "task": task_opts, "finetune": ft_opts,
                             "seed": int(seed), "device": str(device)})  # fmt: skip
    groups = {}  # head set key -> (heads, [(strategy, fraction)])
    for (strategy, fraction), _ in masks.groupby(["strategy", "fraction"], sort=True):
        heads = [(l, h) for _, l, h in heads_of(masks, strategy, fraction)]  # an encoder's (layer, head)
        groups.setdefault(heads_key(heads), (heads, []))[1].append((strategy, float(fraction)))
    base = json.loads((Path(finetuned) / "metrics.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(model_key, model_spec)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    config = FinetuneConfig.from_dict(dict(ft_opts, seed=seed))
    keep = set(keep_models)
    rows, records = [], {}
    log.info("%d masks, %d distinct head sets", sum(len(n) for _, n in groups.values()), len(groups))
    for key, (heads, named) in sorted(groups.items()):
        folder, kept = work / key, [s for s, _ in named if s in keep and heads]
        if not heads:  # nothing pruned: the unpruned fine-tuning of this seed
            result = {"eval": dict(base["eval"]), "train": base["train"], "heads": []}
        elif (folder / "result.json").is_file():  # finished before a kill
            result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        else:
            model = pretrained_classifier(model_key, model_spec, train.n_labels, seed, heads, device)
            log.info("%s: %d heads removed from the pre-trained model; fine-tuning", ", ".join(s for s, _ in named), len(heads))
            train_metrics = finetune(model, train, config, folder, progress=progress, device=device)
            result = {"eval": evaluate(model, test, config.eval_batch_size, device), "train": train_metrics,
                      "heads": [[int(l), int(h)] for l, h in heads]}  # fmt: skip
            log.info("%s: %s", ", ".join(s for s, _ in named), result["eval"])
            for strategy in kept:
                shutil.copytree(folder / "model", folder / "keep" / strategy_folder(strategy), dirs_exist_ok=True)
            shutil.rmtree(folder / "model", ignore_errors=True)
            write_json(result, folder / "result.json")  # last: marks the head set done
        for strategy, fraction in named:
            rows += _metric_rows(dict(result["eval"], heads_pruned=len(heads)), test, strategy, fraction, seed, PRUNE_THEN_FINETUNE)
            records[f"{strategy}@{fraction:g}"] = {"heads_pruned": len(heads), "train": result["train"], "eval": result["eval"]}
    with atomic_dir(output) as tmp:
        write_frame(pd.DataFrame(rows), tmp / "evaluation.parquet")
        write_json(records, tmp / "metrics.json")
        for key, (heads, named) in groups.items():
            for strategy, _ in named:
                if strategy in keep and heads:
                    shutil.copytree(work / key / "keep" / strategy_folder(strategy), tmp / "models" / strategy_folder(strategy))
                    tokenizer.save_pretrained(str(tmp / "models" / strategy_folder(strategy)))
    shutil.rmtree(work, ignore_errors=True)
    return pd.DataFrame(rows)


def strategy_folder(strategy: str) -> str:
    """A strategy name as a folder name (``prune_role:syntactic`` -> ``prune_role+syntactic``)."""
    return strategy.replace(":", "+")


def _reset_stale_work(work: Path, params: dict) -> None:
    """Keep ``work`` for a resume only if it was started with the same parameters; else start it afresh."""
    record = work / "job.json"
    text = json.dumps(params, sort_keys=True)
    if work.exists() and (not record.is_file() or record.read_text(encoding="utf-8") != text):
        log.info("%s was started with other settings: starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        record.write_text(text, encoding="utf-8")


def collect(paths: list, output) -> pd.DataFrame:
    """One evaluations table from every masked (finetune_then_prune) and prune_then_finetune evaluation."""
    frames = [pd.read_parquet(Path(p) / "evaluation.parquet" if Path(p).is_dir() else p) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    order = {name: k for k, name in enumerate(PROTOCOLS)}
    frame = frame.assign(_order=frame["protocol"].map(order))
    frame = frame.sort_values(["task", "_order", "strategy", "fraction", "seed", "metric"], kind="stable")
    cols = ["task", "protocol", "strategy", "fraction", "seed", "heads_pruned", "metric", "value", "primary", "n"]
    frame = frame[cols].reset_index(drop=True)
    write_frame(frame, output)
    return frame


# ------------------------------------------------------------------------------------------ compensation


def compensation(
    reference_dir, model_key, model_spec, pruned_models: dict, train_spec, train_path, task_opts, n_examples, seed,
    output, summary, device,
):  # fmt: skip
    """How the remaining heads changed in each model pruned, then fine-tuned, on a sample of training inputs.

    ``reference_dir``: the unpruned fine-tuning of the seed (``finetuned/``); ``pruned_models``: (strategy,
    fraction) -> folder of a model pruned, then fine-tuned with the same recipe and seed.  Two comparisons per
    remaining head: against the unpruned model fine-tuned alike (``jsd``, ``norm_change``, ``importance_change``:
    everything pruning changed, including what its removal passes on to later layers), and against the same
    pruned model before fine-tuning, i.e. the pruned pre-trained model it started from (``jsd_retraining``,
    ``norm_change_retraining``: what the fine-tuning changed).
    """
    from headsieve.pruning.compensation import compare_heads, head_activity, spread_summary
    from headsieve.pruning.importance import head_importance

    reference, tokenizer = load_finetuned(reference_dir, device)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    pick = np.sort(np.random.default_rng([seed, 4242]).permutation(len(train.examples))[:n_examples])
    pad, types = batch_options(reference)
    batches = list(B.iter_batches(train.examples, 16, pad, types, order=pick))
    ref_activity = head_activity(reference, batches, device)
    ref_importance = head_importance(reference, batches, device=device)
    frames, summaries = [], []
    for (strategy, fraction), folder in sorted(pruned_models.items()):
        model = H.load_pruned(str(folder), device=device)
        activity = head_activity(model, batches, device)
        heads = compare_heads(ref_activity, activity, ref_importance, head_importance(model, batches, device=device))
        before = pretrained_classifier(model_key, model_spec, train.n_labels, seed, H.pruned_heads(model), device)
        retraining = compare_heads(head_activity(before, batches, device), activity)
        heads["jsd_retraining"] = retraining["jsd"].to_numpy()
        heads["norm_change_retraining"] = retraining["norm_change"].to_numpy()
        heads.insert(0, "fraction", float(fraction))
        heads.insert(0, "strategy", strategy)
        heads["seed"] = seed
        frames.append(heads)
        for measure in ("jsd", "norm_change", "importance_change", "jsd_retraining", "norm_change_retraining"):
            summaries.append(
                dict(strategy=strategy, fraction=float(fraction), seed=seed, **spread_summary(heads, measure, seed=seed))
            )
    write_frame(pd.concat(frames, ignore_index=True), output)
    write_frame(pd.DataFrame(summaries), summary)
