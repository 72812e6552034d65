"""Commands of ``workflow/rules/attention.smk``."""

from __future__ import annotations

from headsieve.cli.common import add_model, add_required, add_runtime, command, json_object, runtime
from headsieve.steps import attention as steps
from headsieve.steps.settings import Corpus, DumpSettings, Model


@command("tokenize", "corpus -> tokens.parquet (word pieces aligned to words)")
def tokenize(sub):
    add_model(sub)
    add_required(sub, "--corpus", corpus="corpus key")
    sub.add_argument("--corpus-spec", required=True, type=json_object)
    sub.add_argument("--input", nargs="+", required=True, help="corpus file(s)")
    sub.add_argument("--max-length", type=int, required=True)
    add_required(sub, "--output")

    def run(args):
        model = Model(args.model, args.model_spec)
        steps.tokenize(model, Corpus(args.corpus, args.corpus_spec, args.input), args.max_length, args.output)

    return run


@command("dump", "tokens.parquet -> attention dump folder (float16 shards + index)")
def dump(sub):
    add_model(sub)
    add_required(sub, "--corpus", "--tokens", "--output", output="dump folder")
    sub.add_argument("--batch-tokens", type=int, default=4096, help="padded pieces per batch (speed only)")
    sub.add_argument("--shard-mb", type=int, default=64)
    sub.add_argument("--max-length", type=int, default=None, help="attention.max_length: the tokens must be cut at it")
    add_runtime(sub)

    def run(args):
        device = runtime(args)
        settings = DumpSettings(args.batch_tokens, args.shard_mb, args.max_length)
        steps.dump(Model(args.model, args.model_spec), args.corpus, args.tokens, args.output, settings, device)

    return run
