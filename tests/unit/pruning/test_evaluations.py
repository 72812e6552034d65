"""The evaluations table of the pruning experiment: rows of one evaluation, and the collected table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.pruning.evaluations import COLUMNS, PROTOCOLS, evaluations_table, metric_rows
from headsieve.tasks.data import TaskData
from headsieve.tasks.metrics import METRICS, primary_metric


def test_metric_rows_mark_the_primary_metric_and_keep_counts_out():
    metric = "f1_accuracy"  # primary: f1, not the first metric of the result
    assert metric in METRICS
    data = TaskData("sst2", ("neg", "pos"), metric, [])
    result = {"n": 40, "heads_pruned": 7, "accuracy": 0.75, "f1": 0.5, "mcc": 0.25}
    rows = metric_rows(result, data, "top", 0.25, 3, PROTOCOLS[1])
    assert [r["metric"] for r in rows] == ["accuracy", "f1", "mcc"]  # n and heads_pruned are columns, not metrics
    assert all(r["n"] == 40 and r["heads_pruned"] == 7 and r["seed"] == 3 and r["fraction"] == 0.25 for r in rows)
    assert [r["primary"] for r in rows] == [m == primary_metric(metric) for m in ("accuracy", "f1", "mcc")]
    assert sum(r["primary"] for r in rows) == 1
    unpruned = metric_rows({"n": 5, "accuracy": 1.0}, data, "none", 0, 3, PROTOCOLS[0])
    assert unpruned[0]["heads_pruned"] == 0 and unpruned[0]["protocol"] == PROTOCOLS[0]


def test_collected_table_is_sorted_with_the_protocols_in_their_order():
    rng = np.random.default_rng(0)
    rows = []
    for task in ("sst2", "mnli"):
        for protocol in reversed(PROTOCOLS):
            for strategy in ("top", "random"):
                for seed in (2, 1):
                    rows.append({"task": task, "protocol": protocol, "strategy": strategy, "fraction": 0.5,
                                 "seed": seed, "heads_pruned": 3, "metric": "accuracy", "value": rng.random(),
                                 "primary": True, "n": 10, "extra": "x"})  # fmt: skip
    frame = pd.DataFrame(rows)
    # two job tables, in any order, give one table
    table = evaluations_table([frame.iloc[8:], frame.iloc[:8]])
    assert list(table.columns) == COLUMNS and len(table) == len(frame)
    order = {name: k for k, name in enumerate(PROTOCOLS)}
    keys = list(zip(table.task, table.protocol.map(order), table.strategy, table.seed))
    assert keys == sorted(keys)
    assert table.index.tolist() == list(range(len(table)))
