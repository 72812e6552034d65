"""``headsieve`` subcommands of the translation experiment (issue #8).

Hooked into the main command line by one line in :func:`headsieve.cli.build_parser`, after the loop that
adds the other subcommands::

    from headsieve.translation.cli import add_commands; add_commands(subs)

Every command follows the main CLI's conventions: settings arrive as JSON (the config entries), outputs
are written atomically, user errors are one-line :class:`HeadsieveError` (``main`` prints them).
"""

from __future__ import annotations

import argparse


def _json_object(text: str) -> dict:
    from headsieve.cli import parse_json

    return parse_json(text, dict)


def _json_list(text: str) -> list:
    from headsieve.cli import parse_json

    return parse_json(text, list)


def _setup(args) -> str:
    """Threads and seed for torch; the device to use."""
    from headsieve.cli import _setup_torch, pick_device

    _setup_torch(args.threads, getattr(args, "seed", 0) or 0)
    return pick_device(args.device)


def _common(sub, pairs: bool = True) -> None:
    sub.add_argument("--model-spec", type=_json_object, required=True, help="the translation model entry (JSON)")
    if pairs:
        sub.add_argument("--source", required=True, help="source-language CoNLL-U file (e.g. en PUD)")
        sub.add_argument("--target", required=True, help="target-language CoNLL-U file (e.g. de PUD)")
        sub.add_argument("--pairs", type=_json_object, default={}, help="importance_pool, split_seed, max_test (JSON)")
        sub.add_argument("--threads", type=int, default=1)
        sub.add_argument("--device", default="cpu", help="cpu, cuda or auto")


def cmd_importance(sub):
    _common(sub)
    sub.add_argument("--options", type=_json_object, default={}, help="batch_size, max_length (JSON)")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.translation import jobs

        device = _setup(args)
        jobs.importance(args.model_spec, args.source, args.target, args.pairs, args.options, args.output, device)

    return run


def cmd_select_masks(sub):
    _common(sub, pairs=False)
    sub.add_argument("--strategies", type=_json_list, required=True)
    sub.add_argument("--fractions", type=_json_list, required=True)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--importance", default="", help="importance table (needed by the importance strategy)")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.translation import jobs

        shapes = jobs.model_shapes(args.model_spec)
        jobs.select_masks(shapes, args.strategies, args.fractions, args.seed, args.importance, args.output)

    return run


def cmd_evaluate_masks(sub):
    _common(sub)
    sub.add_argument("--masks", required=True)
    sub.add_argument("--options", type=_json_object, default={}, help="generation options (JSON)")
    sub.add_argument("--output", required=True)
    sub.add_argument("--translations", default="", help="also write every translation here (Parquet)")

    def run(args):
        from headsieve.translation import jobs

        device = _setup(args)
        jobs.evaluate_masks(args.model_spec, args.masks, args.source, args.target, args.pairs, args.options, args.output,
                            args.translations or None, device)  # fmt: skip

    return run


def cmd_roles(sub):
    _common(sub)
    sub.add_argument("--options", type=_json_object, default={}, help="batch_size, max_length, window, band (JSON)")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.translation import jobs

        device = _setup(args)
        jobs.roles(args.model_spec, args.source, args.target, args.pairs, args.options, args.output, device)

    return run


def cmd_collect(sub):
    sub.add_argument("--inputs", nargs="+", required=True, help="scores tables of every seed")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.translation import jobs

        jobs.collect(args.inputs, args.output)

    return run


def cmd_report(sub):
    sub.add_argument("--scores", required=True, help="scores table of all seeds (translation-collect)")
    sub.add_argument("--importance", required=True)
    sub.add_argument("--roles", required=True)
    sub.add_argument("--model", required=True, help="the model's key in the config")
    sub.add_argument("--comparisons", required=True, help="output: paired strategy comparisons (Parquet)")
    sub.add_argument("--figures", required=True, help="output folder of the figures (PNG and PDF)")
    sub.add_argument("--title", required=True)

    def run(args):
        from headsieve.translation import jobs

        jobs.report(args.scores, args.importance, args.roles, args.model, args.comparisons, args.figures, args.title)

    return run


#: command name -> (factory adding the arguments and returning ``run(args)``, help)
COMMANDS = {
    "translation-importance": (
        cmd_importance,
        "gate importance of every head of a translation model (importance pool)",
    ),
    "translation-select-masks": (cmd_select_masks, "heads each translation strategy prunes at each fraction, one seed"),
    "translation-evaluate-masks": (cmd_evaluate_masks, "BLEU/chrF of every mask of one seed on the test pairs"),
    "translation-roles": (cmd_roles, "roles of encoder self-attention and cross-attention heads"),
    "translation-collect": (cmd_collect, "one BLEU/chrF table from the score tables of every seed"),
    "translation-report": (cmd_report, "paired strategy comparisons and figures of one translation model"),
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the translation subcommands to the main parser's subparsers (``set_defaults(run=...)``)."""
    for name, (factory, help) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help)
        sub.set_defaults(run=factory(sub))
