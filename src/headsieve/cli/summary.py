"""Commands of ``workflow/rules/summary.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_required, command
from headsieve.steps import summary as steps


@command("collect-summaries", "every report step's summary.md -> one results document")
def collect_summaries(sub):
    sub.add_argument("--parts", nargs="+", required=True, help="summary files, in the order wanted")
    add_required(sub, "--title", "--output")

    def run(args):
        steps.collect_summaries(args.parts, args.title, args.output)

    return run
