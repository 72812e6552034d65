"""Commands of ``workflow/rules/roles.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_required, command, json_object, setup_torch
from headsieve.errors import HeadsieveError
from headsieve.steps import roles as steps
from headsieve.steps.settings import RoleTestSettings, StabilitySettings


@command("roles-score", "dump + tokens -> per-sentence role scores and Clark-style head statistics")
def roles_score(sub):
    add_required(sub, "--model", "--corpus", "--tokens", "--dump")
    sub.add_argument("--options", type=json_object, default={}, help="role options (see headsieve.roles.sieve)")
    add_required(sub, "--scores", "--head-stats")
    sub.add_argument("--threads", type=int, default=1)

    def run(args):
        setup_torch(args.threads)
        steps.score(args.model, args.corpus, args.tokens, args.dump, args.scores, args.head_stats, args.options)

    return run


def tau(text: str) -> float | None:
    """``--tau``: a number, or null/none for the default threshold of each role's score form."""
    if text.strip().lower() in ("null", "none", ""):
        return None
    value = float(text)
    if not 0 <= value < float("inf"):
        raise HeadsieveError(f"--tau {text}: must be a finite number >= 0, or null")
    return value


def add_test_settings(sub) -> None:
    """The arguments of :class:`RoleTestSettings`: threshold, level, correction and per-role thresholds."""
    sub.add_argument("--tau", type=tau, default=None, help="a number, or null: the default of each role's score form")
    sub.add_argument("--alpha", type=float, required=True)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], required=True)
    sub.add_argument("--tau-by-role", type=json_object, default=None, help='e.g. {"block": 0.6}')


def role_test_settings(args) -> RoleTestSettings:
    """The :class:`RoleTestSettings` of the arguments :func:`add_test_settings` added."""
    return RoleTestSettings(args.alpha, args.correction, args.tau, args.tau_by_role)


@command("roles-test", "role scores -> one-sided t tests per head and role, corrected, with labels")
def roles_test(sub):
    add_required(sub, "--scores")
    add_test_settings(sub)
    add_required(sub, "--output")

    def run(args):
        steps.test(args.scores, role_test_settings(args), args.output)

    return run


@command("roles-report", "role tests and scores -> figures (PNG + PDF), analysis tables and a markdown summary")
def roles_report(sub):
    add_required(
        sub, "--tests", "--scores", "--figures", "--tables", "--summary",
        scores="per-sentence scores (split-half stability retests them)", figures="folder for the figures",
        tables="folder for colocation.parquet, stability.parquet, heads_per_layer.parquet", summary="markdown summary file",
    )  # fmt: skip
    sub.add_argument("--stability-seed", type=int, default=0, help="seed of the split into halves and the bootstrap")
    sub.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the stability interval")

    def run(args):
        stability = StabilitySettings(args.stability_seed, args.bootstrap)
        steps.report(args.tests, args.scores, args.figures, args.tables, args.summary, stability)

    return run


@command("roles-agreement", "two role maps of one model (e.g. gold against parsed trees) -> agreement per role")
def roles_agreement(sub):
    add_required(
        sub, "--a", "--b", "--name-a", "--name-b", "--title", "--output", "--summary", a="tests.parquet of the first map",
        b="tests.parquet of the second map", output="agreement table (parquet)", summary="markdown summary file",
    )  # fmt: skip

    def run(args):
        steps.agreement(args.a, args.b, args.name_a, args.name_b, args.title, args.output, args.summary)

    return run


@command("roles-compare", "per-sentence role scores before and after fine-tuning (several seeds) -> paired tests")
def roles_compare(sub):
    add_required(sub, "--before", before="scores.parquet of the pre-trained model")
    sub.add_argument("--after", nargs="+", required=True, help="scores.parquet of each fine-tuned model")
    sub.add_argument("--seeds", nargs="+", type=int, required=True, help="the fine-tuning seed of each --after")
    add_required(sub, "--task")
    sub.add_argument("--alpha", type=float, default=0.05)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], default="bh")
    add_required(
        sub, "--output", "--agreement", "--by-layer", "--summary", "--figure", "--title",
        output="change.parquet: per seed, head and role", agreement="agreement.parquet: per head and role over seeds",
        summary="markdown summary file", figure="figure path without extension",
    )  # fmt: skip

    def run(args):
        steps.compare(
            args.before, args.after, args.seeds, args.task, output=args.output, agreement=args.agreement,
            by_layer=args.by_layer, summary=args.summary, figure=args.figure, title=args.title, alpha=args.alpha,
            correction=args.correction,
        )  # fmt: skip

    return run
