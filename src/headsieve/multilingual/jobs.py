"""Multilingual steps as the workflow runs them: per-language prunability and the cross-language reports."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from headsieve.io.atomic import write_frame
from headsieve.pruning.jobs import _load_finetuned, _metric_rows, read_task

log = logging.getLogger(__name__)


def layer_masks(n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """The unpruned model ('none'), each layer alone ('layer:L') and each band of layers ('band:B') masked."""
    from headsieve.pruning.strategies import BANDS, ModelFacts, select_heads
    from headsieve.pruning.evaluate import mask_from_heads

    facts = ModelFacts(n_layers, n_heads)
    names = ["none"] + [f"layer:{layer}" for layer in range(n_layers)] + [f"band:{band}" for band in BANDS]
    masks = {}
    for name in names:
        heads = [] if name == "none" else select_heads(name, facts, 0.0, seed=0)
        masks[name] = mask_from_heads(facts, heads)
    return masks


def evaluate_languages(finetuned, evals: dict, task_opts: dict, batch_size: int, seed: int, model_key, task, output, device):
    """Evaluate the fine-tuned model with each layer and each band masked, on every language's evaluation set.

    ``evals``: language -> {"spec": corpus entry, "paths": [files]}."""
    from headsieve.pruning.evaluate import MaskEvaluator
    from headsieve.pruning.strategies import ModelFacts

    model, tokenizer = _load_finetuned(finetuned, device)
    facts = ModelFacts.from_model(model)
    masks = layer_masks(facts.n_layers, facts.n_heads)
    rows = []
    for language, entry in sorted(evals.items()):
        data = read_task(entry["spec"], entry["paths"], tokenizer, task_opts["max_length"], task_opts.get("max_eval"), 0)
        log.info("%s: %d examples, %d masks", language, len(data.examples), len(masks))
        with MaskEvaluator(model, data, batch_size, device=device) as evaluator:
            results = evaluator.evaluate_many(masks)
        for name, result in zip(masks, results):
            result = {k: v for k, v in result.items() if k != "mask"}
            for row in _metric_rows(result, data, name, 0.0, seed, finetuned=False):
                row.update(model=model_key, language=language, task=task)
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame["fraction"] = frame["heads_pruned"] / (facts.n_layers * facts.n_heads)
    cols = ["model", "task", "language", "seed", "strategy", "fraction", "heads_pruned", "metric", "value", "primary", "n"]
    write_frame(frame[cols], output)
