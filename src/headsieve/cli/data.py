"""Commands of ``workflow/rules/data.smk``."""

from __future__ import annotations

from headsieve.cli.common import command, json_object
from headsieve.steps import data as steps
from headsieve.steps.settings import Corpus


@command("fetch", "download a data file, verify its sha256")
def fetch(sub):
    sub.add_argument("--url", required=True)
    sub.add_argument("--sha256", required=True)
    sub.add_argument("--member", default=None, help="file inside a zip/tar archive")
    sub.add_argument("--output", required=True)

    def run(args):
        steps.fetch(args.url, args.sha256, args.output, args.member)

    return run


@command("parse", "text without gold trees -> CoNLL-U with a spaCy parser's trees (name and version recorded)")
def parse(sub):
    sub.add_argument("--corpus", required=True, help="key of the parsed corpus (for messages)")
    sub.add_argument("--source-spec", required=True, type=json_object, help="config entry of the corpus to parse")
    sub.add_argument("--input", nargs="+", required=True, help="the source corpus file(s)")
    sub.add_argument("--parser", required=True, help="installed spaCy pipeline package, e.g. en_core_web_sm")
    sub.add_argument("--output", required=True)

    def run(args):
        steps.parse(Corpus(args.corpus, args.source_spec, args.input), args.parser, args.output)

    return run
