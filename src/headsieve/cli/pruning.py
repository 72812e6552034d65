"""Commands of ``workflow/rules/pruning.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_model, add_required, add_runtime, collect_step, command, json_list, json_object
from headsieve.cli.common import add_seed, runtime
from headsieve.steps import pruning as steps
from headsieve.steps.settings import ComparisonSettings, Model, TaskSettings


def add_task(sub, train: bool = True, evaluation: bool = True) -> None:
    """The task's arguments (config entry, corpus entries and files of the splits used), threads and device."""
    if train:
        sub.add_argument("--train-spec", type=json_object, required=True, help="corpus entry of the training split")
        sub.add_argument("--train", nargs="+", required=True, help="training split file(s)")
    if evaluation:
        sub.add_argument("--eval-spec", type=json_object, required=True, help="corpus entry of the evaluation split")
        sub.add_argument("--eval", nargs="+", required=True, help="evaluation split file(s)")
    sub.add_argument("--task-options", type=json_object, required=True, help="the task's config entry")
    add_runtime(sub)


def task_settings(args) -> TaskSettings:
    """The :class:`TaskSettings` of the arguments :func:`add_task` added."""
    return TaskSettings(
        args.task_options, getattr(args, "train_spec", None), getattr(args, "train", []),
        getattr(args, "eval_spec", None), getattr(args, "eval", []),
    )  # fmt: skip


@command("finetune", "fine-tune a pre-trained model on a classification task (resumes after a kill)")
def finetune(sub):
    add_model(sub)
    add_task(sub)
    sub.add_argument("--options", type=json_object, required=True, help="fine-tuning options")
    add_seed(sub)
    add_required(sub, "--output", "--work", output="folder: model/ and metrics.json",
                 work="checkpoint folder (kept until the run ends)")  # fmt: skip

    def run(args):
        device = runtime(args, args.seed)
        model = Model(args.model, args.model_spec)
        steps.finetune(model, task_settings(args), args.options, args.seed, args.output, args.work, device)

    return run


@command("importance", "head importance of a fine-tuned model on training data")
def importance(sub):
    add_required(sub, "--finetuned")
    add_task(sub, evaluation=False)
    sub.add_argument("--examples", type=int, required=True)
    sub.add_argument("--batch-size", type=int, default=16)
    add_seed(sub)
    add_required(sub, "--output")

    def run(args):
        device = runtime(args, args.seed)
        steps.importance(
            args.finetuned, task_settings(args), args.examples, args.seed, args.output, args.batch_size, device
        )

    return run


@command("select-masks", "heads each strategy prunes at each fraction, for one seed")
def select_masks(sub):
    add_required(sub, "--finetuned")
    sub.add_argument("--strategies", type=json_list, required=True)
    add_required(sub, "--fraction", fraction="share of heads, or 'fixed' for fixed-size strategies")
    add_seed(sub)
    sub.add_argument("--labels", default="", help="role tests table (for prune_role/spare_role)")
    sub.add_argument("--importance", default="")
    add_required(sub, "--output")

    def run(args):
        steps.select_masks(
            args.finetuned, args.strategies, args.fraction, args.seed, args.output, args.labels, args.importance
        )

    return run


@command("evaluate-masks", "evaluate every mask of one seed on the evaluation split, no retraining")
def evaluate_masks(sub):
    add_required(sub, "--finetuned", "--masks")
    add_task(sub, train=False)
    sub.add_argument("--batch-size", type=int, default=64)
    add_required(sub, "--output")

    def run(args):
        device = runtime(args)
        steps.evaluate_masks(args.finetuned, args.masks, task_settings(args), args.output, args.batch_size, device)

    return run


@command("prune-finetune", "prune the pre-trained model by every mask of one seed and fraction, fine-tune, evaluate")
def prune_finetune(sub):
    add_model(sub)
    add_required(sub, "--finetuned", "--masks", finetuned="the unpruned fine-tuning of the seed (the empty mask)",
                 masks="masks of one seed and fraction (select-masks)")  # fmt: skip
    add_task(sub)
    sub.add_argument("--options", type=json_object, required=True, help="fine-tuning options (those of finetune)")
    add_seed(sub)
    sub.add_argument("--keep-models", type=json_list, default=[], help="strategies whose models are saved")
    sub.add_argument("--skip", type=json_list, default=[], help="strategies left out (finetune_then_prune only)")
    add_required(sub, "--output", "--work", output="folder: evaluation.parquet, metrics.json, models/",
                 work="checkpoint folder (kept until the job ends)")  # fmt: skip

    def run(args):
        device = runtime(args, args.seed)
        steps.prune_finetune(
            Model(args.model, args.model_spec), args.finetuned, args.masks, task_settings(args), args.options,
            args.seed, args.output, args.work, keep_models=args.keep_models, skip=args.skip, device=device,
        )  # fmt: skip

    return run


@command("collect-pruning", "one evaluations table from every evaluation of both protocols")
def collect_pruning(sub):
    return collect_step(sub, steps.collect)


@command("compensation", "how the remaining heads changed in models pruned, then fine-tuned")
def compensation(sub):
    add_required(sub, "--reference", reference="the unpruned fine-tuning of the seed (finetuned/)")
    add_model(sub, help="the pre-trained model the pruned ones started from")
    sub.add_argument("--pruned", nargs="+", required=True, help="STRATEGY=FRACTION=MODEL_FOLDER")
    add_task(sub, evaluation=False)
    sub.add_argument("--examples", type=int, required=True)
    add_seed(sub)
    add_required(sub, "--output", "--summary")

    def run(args):
        device = runtime(args, args.seed)
        steps.compensation(
            args.reference, Model(args.model, args.model_spec), steps.parse_pruned(args.pruned), task_settings(args),
            args.examples, args.seed, args.output, args.summary, device,
        )  # fmt: skip

    return run


@command("pruning-report", "pruning evaluations and compensation -> comparisons table and figures")
def pruning_report(sub):
    add_required(sub, "--evaluations")
    sub.add_argument("--compensation", nargs="*", default=[], help="compensation.parquet of every seed")
    sub.add_argument("--compensation-summary", nargs="*", default=[])
    add_required(sub, "--comparisons", "--figures", "--title")
    sub.add_argument("--correction", choices=("holm", "bh"), default="holm",
                     help="p correction across every comparison of the report (default holm: family-wise error)")  # fmt: skip
    sub.add_argument("--alpha", type=float, default=0.05, help="test level, CI is 1 - alpha (default 0.05)")
    sub.add_argument("--power", type=float, default=0.8, help="power of the minimal detectable difference")
    sub.add_argument("--summary", help="Markdown file for the summary lines (design, MDD, corrected tests)")

    def run(args):
        steps.report(
            args.evaluations, args.comparisons, args.figures, args.title, compensation=args.compensation,
            compensation_summary=args.compensation_summary, summary=args.summary,
            settings=ComparisonSettings(args.correction, args.alpha, args.power),
        )  # fmt: skip

    return run
