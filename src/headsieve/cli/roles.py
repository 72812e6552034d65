"""Commands of ``workflow/rules/roles.smk``."""

from __future__ import annotations

from headsieve.cli.common import command, json_object, setup_torch
from headsieve.errors import HeadsieveError
from headsieve.steps import roles as steps
from headsieve.steps.settings import RoleTestSettings, StabilitySettings


@command("roles-score", "dump + tokens -> per-sentence role scores and Clark-style head statistics")
def roles_score(sub):
    sub.add_argument("--model", required=True)
    sub.add_argument("--corpus", required=True)
    sub.add_argument("--tokens", required=True)
    sub.add_argument("--dump", required=True)
    sub.add_argument("--options", type=json_object, default={}, help="role options (see headsieve.roles.sieve)")
    sub.add_argument("--scores", required=True)
    sub.add_argument("--head-stats", required=True)
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


@command("roles-test", "role scores -> one-sided t tests per head and role, corrected, with labels")
def roles_test(sub):
    sub.add_argument("--scores", required=True)
    sub.add_argument("--tau", type=tau, default=None, help="a number, or null: the default of each role's score form")
    sub.add_argument("--alpha", type=float, required=True)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], required=True)
    sub.add_argument("--tau-by-role", type=json_object, default=None, help='e.g. {"block": 0.6}')
    sub.add_argument("--output", required=True)

    def run(args):
        settings = RoleTestSettings(args.alpha, args.correction, args.tau, args.tau_by_role)
        steps.test(args.scores, settings, args.output)

    return run


@command("roles-report", "role tests and scores -> figures (PNG + PDF), analysis tables and a markdown summary")
def roles_report(sub):
    sub.add_argument("--tests", required=True)
    sub.add_argument("--scores", required=True, help="per-sentence scores (split-half stability retests them)")
    sub.add_argument("--figures", required=True, help="folder for the figures")
    sub.add_argument(
        "--tables", required=True, help="folder for colocation.parquet, stability.parquet, heads_per_layer.parquet"
    )
    sub.add_argument("--summary", required=True, help="markdown summary file")
    sub.add_argument("--stability-seed", type=int, default=0, help="seed of the split into halves and the bootstrap")
    sub.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the stability interval")

    def run(args):
        stability = StabilitySettings(args.stability_seed, args.bootstrap)
        steps.report(args.tests, args.scores, args.figures, args.tables, args.summary, stability)

    return run


@command("roles-agreement", "two role maps of one model (e.g. gold against parsed trees) -> agreement per role")
def roles_agreement(sub):
    sub.add_argument("--a", required=True, help="tests.parquet of the first map")
    sub.add_argument("--b", required=True, help="tests.parquet of the second map")
    sub.add_argument("--name-a", required=True)
    sub.add_argument("--name-b", required=True)
    sub.add_argument("--title", required=True)
    sub.add_argument("--output", required=True, help="agreement table (parquet)")
    sub.add_argument("--summary", required=True, help="markdown summary file")

    def run(args):
        steps.agreement(args.a, args.b, args.name_a, args.name_b, args.title, args.output, args.summary)

    return run


@command("roles-compare", "per-sentence role scores before and after fine-tuning (several seeds) -> paired tests")
def roles_compare(sub):
    sub.add_argument("--before", required=True, help="scores.parquet of the pre-trained model")
    sub.add_argument("--after", nargs="+", required=True, help="scores.parquet of each fine-tuned model")
    sub.add_argument("--seeds", nargs="+", type=int, required=True, help="the fine-tuning seed of each --after")
    sub.add_argument("--task", required=True)
    sub.add_argument("--alpha", type=float, default=0.05)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], default="bh")
    sub.add_argument("--output", required=True, help="change.parquet: per seed, head and role")
    sub.add_argument("--agreement", required=True, help="agreement.parquet: per head and role over seeds")
    sub.add_argument("--by-layer", required=True)
    sub.add_argument("--summary", required=True, help="markdown summary file")
    sub.add_argument("--figure", required=True, help="figure path without extension")
    sub.add_argument("--title", required=True)

    def run(args):
        steps.compare(
            args.before, args.after, args.seeds, args.task, output=args.output, agreement=args.agreement,
            by_layer=args.by_layer, summary=args.summary, figure=args.figure, title=args.title, alpha=args.alpha,
            correction=args.correction,
        )  # fmt: skip

    return run
