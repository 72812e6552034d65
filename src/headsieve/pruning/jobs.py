"""The pruning experiment's steps, as the workflow runs them (one function per rule).

Each function loads what it needs, calls the science (fine-tuning, importance, strategies, the mask
evaluator, compensation) and writes its outputs atomically.  The evaluation split is only ever scored:
importance, early stopping and the compensation inputs come from the training split.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from headsieve.attention import batch_options
from headsieve.errors import HeadsieveError
from headsieve.io.atomic import atomic_dir, write_frame, write_json
from headsieve.io.glue import read_glue, task_spec
from headsieve.models import heads as H
from headsieve.models.load import load_encoder, load_tokenizer
from headsieve.pruning import data as D
from headsieve.pruning.metrics import primary_metric

log = logging.getLogger(__name__)


def read_task(corpus_spec: dict, path, tokenizer, max_length: int, limit: int | None, seed: int) -> D.TaskData:
    """Encode a GLUE/XNLI corpus; ``limit`` takes a seeded random subset (the same for every model seed)."""
    task = "xnli" if corpus_spec["format"] == "xnli" else corpus_spec["task"]
    spec = task_spec(task, corpus_spec if task == "custom" else None)
    examples = read_glue(path, spec, corpus_spec.get("header"), corpus_spec.get("language"), corpus_spec.get("max_sentences"))
    if limit is not None and limit < len(examples):
        keep = np.sort(np.random.default_rng([seed, 104729]).choice(len(examples), size=limit, replace=False))
        examples = [examples[k] for k in keep]
    return D.TaskData(task, spec.labels, spec.metric, D.encode_examples(tokenizer, examples, max_length))


def _load_finetuned(folder, device):
    model = H.load_pruned(str(Path(folder) / "model"), device=device)
    tokenizer = load_tokenizer("finetuned", {"source": str(Path(folder) / "model")})
    return model, tokenizer


# ------------------------------------------------------------------------------------------ fine-tuning


def finetune_base(
    model_key, model_spec, train_spec, train_path, eval_spec, eval_path, task_opts, ft_opts, seed, output, work, device
) -> dict:
    """Fine-tune the pre-trained model on a task; write ``output/model`` and ``output/metrics.json``.

    ``work`` holds the checkpoints: a killed run started again resumes there.
    """
    from headsieve.pruning.finetune import FinetuneConfig, evaluate, finetune, set_seed

    tokenizer = load_tokenizer(model_key, model_spec)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    set_seed(seed)
    model = load_encoder(model_key, model_spec, task_labels=train.n_labels, device=device)
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

    model, tokenizer = _load_finetuned(finetuned, device)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    pick = np.random.default_rng([seed, 31337]).permutation(len(train.examples))[:n_examples]
    pad, types = batch_options(model)
    batches = list(D.iter_batches(train.examples, batch_size, pad, types, order=np.sort(pick)))
    scores = head_importance(model, batches, device=device)
    L, Hh = scores.shape
    layer, head = np.meshgrid(np.arange(L), np.arange(Hh), indexing="ij")
    frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "importance": scores.ravel(), "seed": seed})
    write_frame(frame.astype({"layer": "int16", "head": "int16", "seed": "int32"}), output)


def read_importance(path, shape: tuple[int, int]) -> np.ndarray:
    """``[layers, heads]`` from an importance table of a model of that shape; every head must be in it."""
    frame = pd.read_parquet(path)
    layer, head = frame["layer"].to_numpy(), frame["head"].to_numpy()
    if len(frame) and not ((0 <= layer) & (layer < shape[0]) & (0 <= head) & (head < shape[1])).all():
        raise HeadsieveError(f"{path}: heads outside the model's {shape[0]} x {shape[1]} (importance of another model?)")
    out = np.full(shape, np.nan)
    out[layer, head] = frame["importance"].to_numpy()
    if np.isnan(out).any():
        missing = np.argwhere(np.isnan(out))[0]
        raise HeadsieveError(f"{path}: no importance for layer {missing[0]} head {missing[1]} (incomplete table)")
    return out


# ------------------------------------------------------------------------------------------ masks


def select_masks(model_shape, strategies, fractions, seed, labels_path, importance_path, output) -> pd.DataFrame:
    """Heads pruned by every strategy at every fraction for one seed: long table (strategy, fraction, seed,
    layer, head); a (strategy, fraction) that prunes nothing has one row with layer = head = -1."""
    from headsieve.pruning.strategies import FIXED_SIZE, ModelFacts, parse_strategy, select_heads

    facts = ModelFacts(*model_shape)
    labels = pd.read_parquet(labels_path) if labels_path else None
    scores = read_importance(importance_path, (facts.n_layers, facts.n_heads)) if importance_path else None
    rows = []
    for strategy in strategies:
        if parse_strategy(strategy)[0] in FIXED_SIZE:  # its size is its own: one mask, at its own fraction
            heads = select_heads(strategy, facts, 0.0, seed, labels=labels, importance=scores)
            fraction = round(len(heads) / facts.n_total, 4)
            rows += [(strategy, fraction, seed, layer, head) for layer, head in heads]
            continue
        for fraction in fractions:
            heads = select_heads(strategy, facts, fraction, seed, labels=labels, importance=scores)
            rows += [(strategy, fraction, seed, layer, head) for layer, head in heads] or [(strategy, fraction, seed, -1, -1)]
    frame = pd.DataFrame(rows, columns=["strategy", "fraction", "seed", "layer", "head"]).astype({"fraction": float})
    frame = frame.astype({"seed": "int32", "layer": "int16", "head": "int16"})
    write_frame(frame, output)
    return frame


def heads_of(masks: pd.DataFrame, strategy: str, fraction: float) -> list[tuple[int, int]]:
    sel = masks[(masks.strategy == strategy) & np.isclose(masks.fraction, fraction) & (masks.layer >= 0)]
    if not len(masks[(masks.strategy == strategy) & np.isclose(masks.fraction, fraction)]):
        raise HeadsieveError(f"no mask for strategy '{strategy}' at fraction {fraction}")
    return list(zip(sel["layer"].astype(int).tolist(), sel["head"].astype(int).tolist()))


def evaluate_masks(finetuned, masks_path, eval_spec, eval_path, task_opts, batch_size, output, device):
    """Every mask of one seed on the evaluation split, without further training, in one process."""
    from headsieve.pruning.evaluate import MaskEvaluator, mask_from_heads
    from headsieve.pruning.strategies import ModelFacts

    model, tokenizer = _load_finetuned(finetuned, device)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    masks = pd.read_parquet(masks_path)
    facts = ModelFacts.from_model(model)
    named = {}
    for (strategy, fraction), _ in masks.groupby(["strategy", "fraction"], sort=True):
        named[(strategy, float(fraction))] = mask_from_heads(facts, heads_of(masks, strategy, fraction))
    seed = int(masks["seed"].iloc[0])
    log.info("evaluating %d masks (%d distinct) on %d examples", len(named), len({m.tobytes() for m in named.values()}), len(test.examples))
    unique = {mask.tobytes(): mask for mask in named.values()}  # e.g. every strategy at fraction 0
    with MaskEvaluator(model, test, batch_size, device=device) as evaluator:
        found = dict(zip(unique, evaluator.evaluate_many(unique)))
    rows = []
    for (strategy, fraction), mask in named.items():
        result = found[mask.tobytes()]
        result = {k: v for k, v in result.items() if k != "mask"}
        rows += _metric_rows(result, test, strategy, fraction, seed, finetuned=False)
    write_frame(pd.DataFrame(rows), output)


def _metric_rows(result: dict, data: D.TaskData, strategy, fraction, seed, finetuned: bool) -> list[dict]:
    base = {"task": data.task, "strategy": strategy, "fraction": float(fraction), "seed": int(seed),
            "finetuned": finetuned, "heads_pruned": int(result.get("heads_pruned", 0)), "n": int(result["n"])}  # fmt: skip
    skip = {"n", "heads_pruned"}
    return [dict(base, metric=k, value=float(v), primary=k == primary_metric(data.metric)) for k, v in result.items() if k not in skip]


# ------------------------------------------------------------------------------------------ retraining


def retrain(
    finetuned, masks_path, strategy, fraction, train_spec, train_path, eval_spec, eval_path, task_opts, ft_opts, seed,
    output, work, device,
) -> dict:  # fmt: skip
    """Prune (physically) the heads a strategy picked, fine-tune the pruned model further, evaluate it."""
    from headsieve.pruning.finetune import FinetuneConfig, evaluate, finetune, set_seed

    model, tokenizer = _load_finetuned(finetuned, device)
    heads = heads_of(pd.read_parquet(masks_path), strategy, fraction) if fraction > 0 else []
    if heads:
        H.prune_heads(model, heads)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    test = read_task(eval_spec, eval_path, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    set_seed(seed)
    config = FinetuneConfig.from_dict(dict(ft_opts, seed=seed))
    train_metrics = finetune(model, train, config, work, tokenizer=tokenizer, device=device)
    result = evaluate(model, test, config.eval_batch_size, device)
    result["heads_pruned"] = len(heads)
    rows = _metric_rows(result, test, strategy, fraction, seed, finetuned=True)
    with atomic_dir(output) as tmp:
        shutil.copytree(Path(work) / "model", tmp / "model")
        write_json({"train": train_metrics, "eval": result, "heads": heads}, tmp / "metrics.json")
        write_frame(pd.DataFrame(rows), tmp / "evaluation.parquet")
    shutil.rmtree(work, ignore_errors=True)
    return result


def collect(paths: list, output) -> pd.DataFrame:
    """One evaluations table from every masked and retrained evaluation."""
    frames = [pd.read_parquet(Path(p) / "evaluation.parquet" if Path(p).is_dir() else p) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["task", "finetuned", "strategy", "fraction", "seed", "metric"], kind="stable")
    cols = ["task", "strategy", "fraction", "seed", "finetuned", "heads_pruned", "metric", "value", "primary", "n"]
    frame = frame[cols].reset_index(drop=True)
    write_frame(frame, output)
    return frame


# ------------------------------------------------------------------------------------------ compensation


def compensation(
    reference_dir, finetuned_dir, pruned_dirs: dict, train_spec, train_path, task_opts, n_examples, seed, output, summary,
    device,
):  # fmt: skip
    """How the remaining heads changed, for each retrained pruned model, on a sample of training inputs.

    Two comparisons per remaining head: against the unpruned model retrained alike (``jsd``, ``norm_change``,
    ``importance_change``: everything pruning changed, including what its removal passes on to later layers),
    and against the same pruned model before retraining (``jsd_retraining``, ``norm_change_retraining``: what
    the retraining changed to compensate).
    """
    from headsieve.pruning.compensation import compare_heads, head_activity, spread_summary
    from headsieve.pruning.importance import head_importance

    reference, tokenizer = _load_finetuned(reference_dir, device)
    train = read_task(train_spec, train_path, tokenizer, task_opts["max_length"], task_opts.get("max_train"), 0)
    pick = np.sort(np.random.default_rng([seed, 4242]).permutation(len(train.examples))[:n_examples])
    pad, types = batch_options(reference)
    batches = list(D.iter_batches(train.examples, 16, pad, types, order=pick))
    ref_activity = head_activity(reference, batches, device)
    ref_importance = head_importance(reference, batches, device=device)
    frames, summaries = [], []
    for (strategy, fraction), folder in sorted(pruned_dirs.items()):
        model, _ = _load_finetuned(folder, device)
        activity = head_activity(model, batches, device)
        heads = compare_heads(ref_activity, activity, ref_importance, head_importance(model, batches, device=device))
        before, _ = _load_finetuned(finetuned_dir, device)
        H.prune_heads(before, H.pruned_heads(model))
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

