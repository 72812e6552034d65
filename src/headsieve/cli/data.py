"""Commands of ``workflow/rules/data.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_required, command, json_object
from headsieve.steps import data as steps
from headsieve.steps.settings import Corpus


@command("fetch", "download a data file, verify its sha256")
def fetch(sub):
    add_required(sub, "--url", "--sha256")
    sub.add_argument("--member", default=None, help="file inside a zip/tar archive")
    add_required(sub, "--output")

    def run(args):
        steps.fetch(args.url, args.sha256, args.output, args.member)

    return run


@command("parse", "text without gold trees -> CoNLL-U with a spaCy parser's trees (name and version recorded)")
def parse(sub):
    add_required(sub, "--corpus", corpus="key of the parsed corpus (for messages)")
    sub.add_argument("--source-spec", required=True, type=json_object, help="config entry of the corpus to parse")
    sub.add_argument("--input", nargs="+", required=True, help="the source corpus file(s)")
    add_required(sub, "--parser", "--output", parser="installed spaCy pipeline package, e.g. en_core_web_sm")

    def run(args):
        steps.parse(Corpus(args.corpus, args.source_spec, args.input), args.parser, args.output)

    return run
