"""Commands of ``workflow/rules/translation.smk`` (encoder-decoder translation models)."""

from __future__ import annotations

from headsieve.cli.common import add_required, add_runtime, add_seed, collect_step, command, json_list, json_object
from headsieve.cli.common import runtime
from headsieve.steps import translation as steps
from headsieve.steps.settings import SentencePairs


def add_model(sub, pairs: bool = True) -> None:
    """The translation model entry and, for the commands that read sentence pairs, the pairs, threads, device."""
    sub.add_argument("--model-spec", type=json_object, required=True, help="the translation model entry (JSON)")
    if pairs:
        add_required(sub, "--source", "--target", source="source-language CoNLL-U file (e.g. en PUD)",
                     target="target-language CoNLL-U file (e.g. de PUD)")  # fmt: skip
        sub.add_argument("--pairs", type=json_object, default={}, help="importance_pool, split_seed, max_test (JSON)")
        add_runtime(sub)


def sentence_pairs(args) -> SentencePairs:
    return SentencePairs(args.source, args.target, args.pairs)


def pairs_command(name: str, help: str, step, options_help: str) -> None:
    """Register ``name``: a command that runs ``step(spec, pairs, options, output, device)`` on the sentence
    pairs (``options_help``: what its ``--options`` hold)."""

    def build(sub):
        add_model(sub)
        sub.add_argument("--options", type=json_object, default={}, help=options_help)
        add_required(sub, "--output")

        def run(args):
            device = runtime(args)
            step(args.model_spec, sentence_pairs(args), args.options, args.output, device)

        return run

    command(name, help)(build)


pairs_command("translation-importance", "gate importance of every head of a translation model (importance pool)",
              steps.importance, "batch_size, max_length (JSON)")  # fmt: skip


@command("translation-select-masks", "heads each translation strategy prunes at each fraction, one seed")
def translation_select_masks(sub):
    add_model(sub, pairs=False)
    sub.add_argument("--strategies", type=json_list, required=True)
    sub.add_argument("--fractions", type=json_list, required=True)
    add_seed(sub)
    sub.add_argument("--importance", default="", help="importance table (needed by the importance strategy)")
    add_required(sub, "--output")

    def run(args):
        steps.select_masks(args.model_spec, args.strategies, args.fractions, args.seed, args.output, args.importance)

    return run


@command("translation-evaluate-masks", "BLEU/chrF of every mask of one seed on the test pairs")
def translation_evaluate_masks(sub):
    add_model(sub)
    add_required(sub, "--masks")
    sub.add_argument("--options", type=json_object, default={}, help="generation options (JSON)")
    add_required(sub, "--output")
    sub.add_argument("--translations", default="", help="also write every translation here (Parquet)")

    def run(args):
        device = runtime(args)
        steps.evaluate_masks(
            args.model_spec, args.masks, sentence_pairs(args), args.options, args.output, args.translations, device
        )

    return run


pairs_command("translation-roles", "roles of encoder self-attention and cross-attention heads", steps.roles,
              "batch_size, max_length, window, band (JSON)")  # fmt: skip


@command("translation-collect", "one BLEU/chrF table from the score tables of every seed")
def translation_collect(sub):
    return collect_step(sub, steps.collect, "scores tables of every seed")


@command("translation-report", "paired strategy comparisons and figures of one translation model")
def translation_report(sub):
    add_required(
        sub, "--scores", "--importance", "--roles", "--model", "--comparisons", "--figures", "--title",
        scores="scores table of all seeds (translation-collect)", model="the model's key in the config",
        comparisons="output: paired strategy comparisons (Parquet)", figures="output folder of the figures (PNG and PDF)",
    )  # fmt: skip

    def run(args):
        steps.report(args.scores, args.importance, args.roles, args.model, args.comparisons, args.figures, args.title)

    return run
