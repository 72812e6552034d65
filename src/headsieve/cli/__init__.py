"""The ``headsieve`` command line: one subcommand per workflow step.

Each subcommand parses its arguments and calls one step (:mod:`headsieve.steps`), which writes its outputs
atomically.  Commands are registered by the decorator :func:`headsieve.cli.common.command` in one module per
stage (``cli/<stage>.py``, as ``workflow/rules/<stage>.smk``).  Model and corpus settings arrive as JSON
(``--model-spec``), exactly the config entries, so that a change of a setting changes the rule's params and
Snakemake reruns the step.  User errors print one line (``headsieve: error: ...``) and exit with status 2,
leaving no partial output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from headsieve.cli import attention, data, llm, multilingual, pruning, roles, summary, translation
from headsieve.cli.common import COMMANDS, validate_args
from headsieve.errors import HeadsieveError

log = logging.getLogger("headsieve")

#: the stage modules, in the order of the workflow: each registers its commands when imported, and the help
#: lists the commands in this order
STAGE_MODULES = (data, attention, roles, pruning, summary, multilingual, translation, llm)
STAGES = tuple(module.__name__.rpartition(".")[2] for module in STAGE_MODULES)


class Parser(argparse.ArgumentParser):
    """Argument errors as one line (``headsieve: error: ...``, status 2) that also reaches the log."""

    def error(self, message):
        raise HeadsieveError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every registered command."""
    parser = Parser(prog="headsieve", description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=None, help="write the log and progress here (errors also go to stderr)")
    subs = parser.add_subparsers(dest="command", required=True)
    for cmd in sorted(COMMANDS.values(), key=lambda c: STAGES.index(c.stage)):
        sub = subs.add_parser(cmd.name, help=cmd.help)
        sub.set_defaults(run=cmd.build(sub))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except HeadsieveError as err:  # a bad argument (bad JSON, a bad number, a missing option): one line
        report(f"headsieve: error: {err}", early_log(argv), close=True)
        return 2
    if getattr(args, "threads", None):
        # before torch is imported: the thread pools' sizes change how some kernels split their work, and
        # so the last bits of their results; pin them to --threads whatever the environment says
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(max(1, args.threads))
    if not args.log and not sys.stderr.isatty():
        from headsieve import progress

        progress.ENABLED = False  # no progress bars mixed into captured error output
    log_stream = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=log_stream)
    if args.log:
        sys.stderr = log_stream  # progress bars and library warnings go to the log too
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_file = log_stream if args.log else None
    try:
        validate_args(args)
        args.run(args)
    except HeadsieveError as err:
        if args.log:  # the traceback (with its cause, e.g. the OSError of a full disk) to the log only
            log.error("failed", exc_info=err)
        report(f"headsieve: error: {err}", log_file)
        return 2
    except KeyboardInterrupt:
        report("headsieve: interrupted", log_file)
        return 130
    except Exception as err:  # a bug or an unforeseen fault: one line for the user, the traceback in the log
        if args.log:
            log.error("unexpected error", exc_info=err)
        where = f"traceback in {args.log}" if args.log else "rerun with --log FILE for the traceback"
        first = (str(err).strip().splitlines() or [""])[0]
        report(f"headsieve: error: unexpected {type(err).__name__}: {first} ({where})", log_file)
        return 3
    finally:
        sys.stderr = sys.__stderr__
    return 0


def report(line: str, log_file, close: bool = False) -> None:
    """The one error line goes to the terminal, and into the log file when there is one (closed after it
    when ``close``: a log opened only for this line)."""
    print(line, file=sys.__stderr__, flush=True)
    if log_file is not None:
        print(line, file=log_file, flush=True)
        if close:
            log_file.close()


def early_log(argv):
    """The --log file of a command line whose arguments did not parse (opened for the error line), or None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log", default=None)
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.log:
        return None
    try:
        return open(known.log, "a", encoding="utf-8")
    except OSError:
        return None
