"""Steps of ``workflow/rules/pruning.smk``: fine-tuning, importance, masks, their evaluation with and without
retraining, compensation and the report.  The fine-tuning jobs themselves are in :mod:`headsieve.pruning.jobs`."""

from __future__ import annotations

from pathlib import Path

from headsieve.steps.settings import ComparisonSettings, Model, TaskSettings


def finetune(model: Model, task: TaskSettings, options: dict, seed: int, output, work, device: str = "cpu") -> dict:
    """Rule ``finetune``: the pre-trained ``model`` fine-tuned on the task's training split with the fine-tuning
    ``options``, evaluated on its evaluation split -> ``output/`` (model/ and metrics.json); checkpoints in
    ``work`` (a killed run resumes)."""
    from headsieve.pruning import jobs

    return jobs.finetune_base(
        model.key, model.spec, task.train_spec, task.train, task.eval_spec, task.eval, task.options, options, seed,
        output, work, device,
    )  # fmt: skip


def importance(finetuned, task: TaskSettings, examples: int, seed: int, output, batch_size: int = 16, device: str = "cpu"):
    """Rule ``importance``: head importance of a fine-tuned model on ``examples`` training examples."""
    from headsieve.pruning import jobs

    return jobs.importance(finetuned, task.train_spec, task.train, task.options, examples, batch_size, seed, output, device)


def select_masks(finetuned, strategies: list, fraction, seed: int, output, labels="", importance=""):
    """Rule ``select_masks``: the heads each strategy prunes at ``fraction`` (a share of the heads; ``"fixed"``
    or None for the fixed-size strategies) for one seed; ``labels`` (role tests) and ``importance`` tables for
    the strategies that need them."""
    from headsieve.models.heads import head_space, load_pruned
    from headsieve.pruning import jobs

    shape = head_space(load_pruned(str(Path(finetuned) / "model"))).shape("encoder")
    fractions = [] if fraction in ("fixed", None) else [float(fraction)]
    return jobs.select_masks(shape, strategies, fractions, seed, labels, importance, output)


def evaluate_masks(finetuned, masks, task: TaskSettings, output, batch_size: int = 64, device: str = "cpu"):
    """Rule ``evaluate_masks``: every mask of one seed on the evaluation split, without retraining."""
    from headsieve.pruning import jobs

    return jobs.evaluate_masks(finetuned, masks, task.eval_spec, task.eval, task.options, batch_size, output, device)


def prune_finetune(
    model: Model, finetuned, masks, task: TaskSettings, options: dict, seed: int, output, work, *,
    keep_models: list = (), skip: list = (), device: str = "cpu",
):  # fmt: skip
    """Rule ``prune_finetune``: the pre-trained model pruned by every mask of one seed and fraction, fine-tuned
    and evaluated -> ``output/`` (evaluation.parquet, metrics.json, models/ of the ``keep_models`` strategies)."""
    from headsieve.pruning import jobs

    return jobs.prune_then_finetune(
        model.key, model.spec, finetuned, masks, task.train_spec, task.train, task.eval_spec, task.eval, task.options,
        options, seed, keep_models, output, work, device, skip=skip,
    )  # fmt: skip


def collect(inputs: list, output):
    """Rule ``collect_pruning``: one evaluations table from every evaluation of both protocols."""
    from headsieve.pruning import jobs

    return jobs.collect(inputs, output)


def parse_pruned(items: list) -> dict:
    """``STRATEGY=FRACTION=MODEL_FOLDER`` items -> {(strategy, fraction): folder}."""
    pruned = {}
    for item in items:
        strategy, fraction, folder = item.split("=", 2)
        pruned[(strategy, float(fraction))] = folder
    return pruned


def compensation(
    reference, model: Model, pruned: dict, task: TaskSettings, examples: int, seed: int, output, summary,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``compensation``: how the remaining heads changed in models pruned, then fine-tuned (``pruned``:
    {(strategy, fraction): model folder}) against the unpruned fine-tuning ``reference`` of the seed."""
    from headsieve.pruning import jobs

    return jobs.compensation(
        reference, model.key, model.spec, pruned, task.train_spec, task.train, task.options, examples, seed, output,
        summary, device,
    )  # fmt: skip


def report(
    evaluations, comparisons, figures, title: str, *, compensation: list = (), compensation_summary: list = (),
    settings: ComparisonSettings = ComparisonSettings(), summary=None,
) -> None:  # fmt: skip
    """Rule ``pruning_report``: evaluations (and the compensation tables of every seed) -> paired strategy
    ``comparisons`` (Parquet), figures, and when ``summary`` is given a markdown summary."""
    import pandas as pd

    from headsieve.io.atomic import write_frame, write_text
    from headsieve.plots import pruning as plots
    from headsieve.pruning.report import compensation_lines, paired_comparisons, results_markdown, summary_lines

    s = settings
    frame = pd.read_parquet(evaluations)
    compared = paired_comparisons(frame, correction=s.correction, alpha=s.alpha, power=s.power)
    write_frame(compared, comparisons)
    lines = summary_lines(compared)
    figures = Path(figures)
    plots.metric_curves(frame, figures / "metric_by_fraction", title)
    plots.comparison_map(compared, figures / "strategy_comparisons", title, note="\n".join(lines[1:]))
    if compensation:
        heads = pd.concat([pd.read_parquet(p) for p in compensation], ignore_index=True)
        totals = pd.concat([pd.read_parquet(p) for p in compensation_summary], ignore_index=True)
        plots.compensation_figure(heads, totals, figures / "compensation", title)
        lines += compensation_lines(totals, alpha=s.alpha)
    if summary:
        text = results_markdown(frame, compared, title, s.alpha)
        text += ["## Design and tests", ""] + [f"- {line}" for line in lines]
        write_text("\n".join(text) + "\n", summary)
