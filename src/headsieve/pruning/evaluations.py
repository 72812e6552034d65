"""The evaluations table of the pruning experiment: its protocols, its rows and the collected table.

One row per (task, protocol, strategy, fraction, seed, metric) with ``heads_pruned``, ``value``, ``primary``
(the task's primary metric) and ``n`` (examples scored); both protocols write the same columns.
"""

from __future__ import annotations

import pandas as pd

from headsieve.tasks.data import TaskData
from headsieve.tasks.metrics import primary_metric

FINETUNE_THEN_PRUNE = "finetune_then_prune"
PRUNE_THEN_FINETUNE = "prune_then_finetune"
#: the protocols, in the order tables list them
PROTOCOLS = (FINETUNE_THEN_PRUNE, PRUNE_THEN_FINETUNE)
#: the strategy name of the unpruned model in the evaluations table (fraction 0 of prune_then_finetune)
UNPRUNED = "none"
#: the columns of the collected evaluations table, in order
COLUMNS = ["task", "protocol", "strategy", "fraction", "seed", "heads_pruned", "metric", "value", "primary", "n"]


def metric_rows(result: dict, data: TaskData, strategy, fraction, seed, protocol: str) -> list[dict]:
    """The rows of one evaluation ``result`` (metric -> value, with ``n`` and ``heads_pruned``) of a mask."""
    base = {"task": data.task, "protocol": protocol, "strategy": strategy, "fraction": float(fraction),
            "seed": int(seed), "heads_pruned": int(result.get("heads_pruned", 0)), "n": int(result["n"])}  # fmt: skip
    skip = {"n", "heads_pruned"}
    return [dict(base, metric=k, value=float(v), primary=k == primary_metric(data.metric)) for k, v in result.items() if k not in skip]


def evaluations_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One evaluations table from the tables of every job: sorted by task, protocol (in :data:`PROTOCOLS`'
    order), strategy, fraction, seed and metric, with the columns :data:`COLUMNS`."""
    frame = pd.concat(frames, ignore_index=True)
    order = {name: k for k, name in enumerate(PROTOCOLS)}
    frame = frame.assign(_order=frame["protocol"].map(order))
    frame = frame.sort_values(["task", "_order", "strategy", "fraction", "seed", "metric"], kind="stable")
    return frame[COLUMNS].reset_index(drop=True)
