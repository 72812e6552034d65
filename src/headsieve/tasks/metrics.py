"""Task metrics: accuracy; Matthews correlation (CoLA); F1 of the positive class and accuracy (MRPC)."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold))) if len(gold) else float("nan")


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation coefficient (binary or multiclass, Gorodkin's R_K); 0 when undefined."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    k = int(max(pred.max(initial=0), gold.max(initial=0))) + 1
    C = np.zeros((k, k))
    np.add.at(C, (gold, pred), 1)
    t, p, c, s = C.sum(1), C.sum(0), np.trace(C), C.sum()
    denom = np.sqrt(s**2 - p @ p) * np.sqrt(s**2 - t @ t)
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0


def f1_positive(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = np.sum((pred == positive) & (gold == positive))
    fp = np.sum((pred == positive) & (gold != positive))
    fn = np.sum((pred != positive) & (gold == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


#: metric name in the task spec -> (primary metric, function computing every reported metric)
METRICS = {
    "accuracy": ("accuracy", lambda p, g: {"accuracy": accuracy(p, g)}),
    "matthews": ("matthews", lambda p, g: {"matthews": matthews(p, g), "accuracy": accuracy(p, g)}),
    "f1_accuracy": ("f1", lambda p, g: {"f1": f1_positive(p, g), "accuracy": accuracy(p, g)}),
}


def compute_metrics(metric: str, pred, gold) -> dict[str, float]:
    """Every metric the task reports, e.g. {'f1': .., 'accuracy': ..} for MRPC."""
    return METRICS[metric][1](np.asarray(pred), np.asarray(gold))


def primary_metric(metric: str) -> str:
    return METRICS[metric][0]
