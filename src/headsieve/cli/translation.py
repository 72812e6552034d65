"""Commands of ``workflow/rules/translation.smk`` (encoder-decoder translation models)."""

from __future__ import annotations

from headsieve.cli.common import add_runtime, collect_step, command, json_list, json_object, runtime
from headsieve.steps import translation as steps
from headsieve.steps.settings import SentencePairs


def add_model(sub, pairs: bool = True) -> None:
    """The translation model entry and, for the commands that read sentence pairs, the pairs, threads, device."""
    sub.add_argument("--model-spec", type=json_object, required=True, help="the translation model entry (JSON)")
    if pairs:
        sub.add_argument("--source", required=True, help="source-language CoNLL-U file (e.g. en PUD)")
        sub.add_argument("--target", required=True, help="target-language CoNLL-U file (e.g. de PUD)")
        sub.add_argument("--pairs", type=json_object, default={}, help="importance_pool, split_seed, max_test (JSON)")
        add_runtime(sub)


def sentence_pairs(args) -> SentencePairs:
    return SentencePairs(args.source, args.target, args.pairs)


def pairs_step(sub, step, options_help: str):
    """A command that runs ``step(spec, pairs, options, output, device)`` on the sentence pairs."""
    add_model(sub)
    sub.add_argument("--options", type=json_object, default={}, help=options_help)
    sub.add_argument("--output", required=True)

    def run(args):
        device = runtime(args)
        step(args.model_spec, sentence_pairs(args), args.options, args.output, device)

    return run


@command("translation-importance", "gate importance of every head of a translation model (importance pool)")
def translation_importance(sub):
    return pairs_step(sub, steps.importance, "batch_size, max_length (JSON)")


@command("translation-select-masks", "heads each translation strategy prunes at each fraction, one seed")
def translation_select_masks(sub):
    add_model(sub, pairs=False)
    sub.add_argument("--strategies", type=json_list, required=True)
    sub.add_argument("--fractions", type=json_list, required=True)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--importance", default="", help="importance table (needed by the importance strategy)")
    sub.add_argument("--output", required=True)

    def run(args):
        steps.select_masks(args.model_spec, args.strategies, args.fractions, args.seed, args.output, args.importance)

    return run


@command("translation-evaluate-masks", "BLEU/chrF of every mask of one seed on the test pairs")
def translation_evaluate_masks(sub):
    add_model(sub)
    sub.add_argument("--masks", required=True)
    sub.add_argument("--options", type=json_object, default={}, help="generation options (JSON)")
    sub.add_argument("--output", required=True)
    sub.add_argument("--translations", default="", help="also write every translation here (Parquet)")

    def run(args):
        device = runtime(args)
        steps.evaluate_masks(
            args.model_spec, args.masks, sentence_pairs(args), args.options, args.output, args.translations, device
        )

    return run


@command("translation-roles", "roles of encoder self-attention and cross-attention heads")
def translation_roles(sub):
    return pairs_step(sub, steps.roles, "batch_size, max_length, window, band (JSON)")


@command("translation-collect", "one BLEU/chrF table from the score tables of every seed")
def translation_collect(sub):
    return collect_step(sub, steps.collect, "scores tables of every seed")


@command("translation-report", "paired strategy comparisons and figures of one translation model")
def translation_report(sub):
    sub.add_argument("--scores", required=True, help="scores table of all seeds (translation-collect)")
    sub.add_argument("--importance", required=True)
    sub.add_argument("--roles", required=True)
    sub.add_argument("--model", required=True, help="the model's key in the config")
    sub.add_argument("--comparisons", required=True, help="output: paired strategy comparisons (Parquet)")
    sub.add_argument("--figures", required=True, help="output folder of the figures (PNG and PDF)")
    sub.add_argument("--title", required=True)

    def run(args):
        steps.report(args.scores, args.importance, args.roles, args.model, args.comparisons, args.figures, args.title)

    return run
