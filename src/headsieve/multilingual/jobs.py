"""Multilingual steps as the workflow runs them: per-language prunability and the cross-language reports."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import write_frame
from headsieve.tasks.data import read_task
from headsieve.tasks.finetune import load_finetuned
from headsieve.tasks.metrics import primary_metric

log = logging.getLogger(__name__)


def layer_masks(n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """The unpruned model ('none'), each layer alone ('layer:L') and each band of layers ('band:B') masked."""
    from headsieve.models.headspace import BANDS, HeadSpace
    from headsieve.pruning.strategies import select_heads
    from headsieve.models.masking import mask_from_heads

    space = HeadSpace.encoder(n_layers, n_heads)
    names = ["none"] + [f"layer:{layer}" for layer in range(n_layers)] + [f"band:{band}" for band in BANDS]
    masks = {}
    for name in names:
        heads = [] if name == "none" else select_heads(name, space, 0.0, seed=0)
        masks[name] = mask_from_heads(space, heads)
    return masks


def evaluate_languages(finetuned, evals: dict, task_opts: dict, batch_size: int, seed: int, model_key, task, output, device):
    """Evaluate the fine-tuned model with each layer and each band masked, on every language's evaluation set.

    ``evals``: language -> {"spec": corpus entry, "paths": [files]}."""
    from headsieve.models.heads import head_space
    from headsieve.pruning.evaluate import MaskEvaluator

    model, tokenizer = load_finetuned(finetuned, device)
    space = head_space(model)
    masks = layer_masks(*space.shape("encoder"))
    rows = []
    for language, entry in sorted(evals.items()):
        data = read_task(entry["spec"], entry["paths"], tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
        log.info("%s: %d examples, %d masks", language, len(data.examples), len(masks))
        with MaskEvaluator(model, data, batch_size, device=device) as evaluator:
            results = evaluator.evaluate_many(masks)
        for name, result in zip(masks, results):
            for metric in [k for k in result if k not in ("mask", "n", "heads_pruned")]:
                rows.append({"model": model_key, "language": language, "task": task, "seed": int(seed), "strategy": name,
                             "heads_pruned": int(result["heads_pruned"]), "n": int(result["n"]), "metric": metric,
                             "value": float(result[metric]), "primary": metric == primary_metric(data.metric)})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["fraction"] = frame["heads_pruned"] / space.n_total
    cols = ["model", "task", "language", "seed", "strategy", "fraction", "heads_pruned", "metric", "value", "primary", "n"]
    write_frame(frame[cols], output)


# ------------------------------------------------------------------------------------------------------
# One fine-tuned model (model, task, seed): metric under random masks of every share, and layer CKA.


def layer_outputs(model, data, batch_size: int, device) -> list[np.ndarray]:
    """Each layer's output on ``data`` (index 0: the embeddings), as ``[tokens, hidden]`` arrays over the
    non-padding tokens of every example, in the data's order."""
    import torch

    from headsieve.models.runtime import batch_options, eval_mode, to_device
    from headsieve.batching import iter_batches

    pad_id, types = batch_options(model)
    parts: list[list[np.ndarray]] = []
    with eval_mode(model), torch.inference_mode():
        for batch in iter_batches(data.examples, batch_size, pad_id, types):
            batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            states = model(**batch, output_hidden_states=True).hidden_states
            keep = batch["attention_mask"].bool()
            for k, h in enumerate(states):
                if len(parts) <= k:
                    parts.append([])
                parts[k].append(h[keep].double().cpu().numpy())
    return [np.concatenate(p) for p in parts]


def layer_cka(before, after, data, batch_size: int, device) -> list[float]:
    """Linear CKA of every layer's outputs, ``before`` against ``after`` fine-tuning, on the same inputs."""
    from headsieve.multilingual.analysis import linear_cka

    xs = layer_outputs(before, data, batch_size, device)
    ys = layer_outputs(after, data, batch_size, device)
    if len(xs) != len(ys):
        raise HeadsieveError(f"CKA: the pre-trained model has {len(xs) - 1} layers, the fine-tuned one {len(ys) - 1}")
    return [linear_cka(x, y) for x, y in zip(xs, ys)]


def finetune_effects(finetuned, model_key: str, model_spec: dict, eval_spec: dict, eval_paths, task_opts: dict,
                     fractions, draws: int, cka_examples: int, batch_size: int, seed: int, task: str,
                     curve_output, cka_output, device) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The fine-tuned model of (model, task, seed) on the task's evaluation split: every metric under random
    head masks of every share (``curve_output``), and the linear CKA of each layer's outputs of the
    pre-trained model against the fine-tuned one on ``cka_examples`` evaluation inputs (``cka_output``)."""
    from headsieve.models.load import load_encoder
    from headsieve.multilingual.analysis import random_masks
    from headsieve.models.heads import head_space
    from headsieve.pruning.evaluate import MaskEvaluator

    model, tokenizer = load_finetuned(finetuned, device)
    space = head_space(model)
    data = read_task(eval_spec, eval_paths, tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
    gold = np.asarray([e["label"] for e in data.examples])
    majority = float(np.bincount(gold).max() / len(gold))
    masks = random_masks(*space.shape("encoder"), fractions, seed, draws)
    log.info("%s/%s seed %d: %d examples, %d random masks", model_key, task, seed, len(data.examples), len(masks))
    with MaskEvaluator(model, data, batch_size, device=device) as evaluator:
        results = evaluator.evaluate_many(masks)
    rows = []
    for name, result in zip(masks, results):
        fraction, draw = name.split("/")
        for metric in [k for k in result if k not in ("mask", "n", "heads_pruned")]:
            rows.append({"model": model_key, "task": task, "seed": seed, "fraction": float(fraction), "draw": int(draw),
                         "heads_pruned": result["heads_pruned"], "metric": metric, "value": float(result[metric]),
                         "n": result["n"], "majority": majority})  # fmt: skip
    curve = pd.DataFrame(rows)
    write_frame(curve, curve_output)

    subset = read_task(eval_spec, eval_paths, tokenizer, task_opts["max_length"], min(cka_examples, len(data.examples)), seed)
    before = load_encoder(model_key, model_spec, device=device)
    values = layer_cka(before, model, subset, batch_size, device)
    cka = pd.DataFrame({"model": model_key, "task": task, "seed": seed, "layer": np.arange(len(values)),
                        "n_layers": space.shape("encoder")[0], "cka": values, "examples": len(subset.examples)})  # fmt: skip
    write_frame(cka, cka_output)
    return curve, cka


def study_report(curve_paths, cka_paths, metric: str, compare, output, figures, title: str) -> str:
    """All seeds' random-mask evaluations and layer CKA -> fraction_curves / fraction_summary /
    fraction_tests / layer_cka / layer_influence tables, two figures and summary.md (numbers from the tables)."""
    from pathlib import Path

    from headsieve.io.atomic import write_text
    from headsieve.multilingual import analysis as A
    from headsieve.plots import multilingual as plots

    evaluations = pd.concat([pd.read_parquet(p) for p in curve_paths], ignore_index=True)
    cka = pd.concat([pd.read_parquet(p) for p in cka_paths], ignore_index=True)
    curves = A.fraction_curves(evaluations, metric)
    summary = A.summarise_curves(curves)
    comparisons = A.compare_models(curves, compare[0], compare[1])
    influence = A.influence_tests(cka)
    out = Path(output)
    write_frame(curves, out / "fraction_curves.parquet")
    write_frame(summary, out / "fraction_summary.parquet")
    write_frame(comparisons, out / "fraction_tests.parquet")
    write_frame(cka, out / "layer_cka.parquet")
    write_frame(influence, out / "layer_influence.parquet")
    text = A.summary_markdown(curves, summary, comparisons, influence)
    write_text(text, out / "summary.md")
    plots.fraction_curves(summary, curves, Path(figures) / "fraction_curves", title)
    plots.layer_influence(cka, Path(figures) / "layer_influence", title)
    return text
