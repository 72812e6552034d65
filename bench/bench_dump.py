"""Benchmark the tokenize + dump step against a bare forward pass with attention output.

Run:  python bench/bench_dump.py [--sentences 2000] [--threads 2]

Prints, for the same sentences in one run:
* sentences/s of the dump code (tokenize + forward + float16 unpadding + shard writing) and of a bare
  forward pass with ``output_attentions=True`` over the same length-sorted batches (the limit), and their ratio;
* bytes on disk per sentence, per stored attention weight, and against float32 padded to 128 pieces;
* peak resident memory of the dump for N and 2N sentences (each in its own process), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEADSIEVE_DATA_DIR", REPO.parent / "shared" / "data"))
EWT = [DATA / "ud/UD_English-EWT/en_ewt-ud-dev.conllu", DATA / "ud/UD_English-EWT/en_ewt-ud-test.conllu"]


def sentences(n):
    from headsieve.io.conllu import read_conllu

    out = []
    for path in EWT:
        out += read_conllu(path)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sentences available")
    return out[:n]


def dump_once(n, batch_tokens, folder):
    """The rule's code path: tokenize, then dump; returns seconds."""
    from headsieve.attention import dump_attention
    from headsieve.models.load import load_encoder, load_tokenizer
    from headsieve.tokens import encode_sentences

    sents = sentences(n)
    spec = {"source": "minilm"}
    tok = load_tokenizer("minilm", spec)
    model = load_encoder("minilm", spec)
    start = time.perf_counter()
    rows, _ = encode_sentences(tok, sents, 128)
    dump_attention(model, rows, folder, "minilm", "ewt", batch_tokens=batch_tokens, progress=False)
    return time.perf_counter() - start, rows, model


def bare_forward(model, rows, batch_tokens):
    import torch

    from headsieve.batching import length_batches, pad_batch
    from headsieve.models.runtime import uses_token_types

    batches = length_batches([r["n_pieces"] for r in rows], batch_tokens)
    start = time.perf_counter()
    with torch.inference_mode():
        for idx in batches:
            batch = pad_batch([rows[i] for i in idx], uses_token_types(model), 0, "cpu")
            model(**batch, output_attentions=True)
    return time.perf_counter() - start


def memory_child(n, batch_tokens):
    with tempfile.TemporaryDirectory() as tmp:
        dump_once(n, batch_tokens, Path(tmp) / "d")
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.batch_tokens)
        return
    n = args.sentences
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "d"
        # warm-up, then the measured runs (bare first and last, to bracket drift)
        _, warm_rows, warm_model = dump_once(50, args.batch_tokens, Path(tmp) / "warm")
        bare_forward(warm_model, warm_rows, args.batch_tokens)
        t_dump, rows, model = dump_once(n, args.batch_tokens, folder)
        t_bare = min(bare_forward(model, rows, args.batch_tokens) for _ in range(2))
        shard_bytes = sum(p.stat().st_size for p in folder.glob("shard-*.npz"))
        index_bytes = (folder / "index.parquet").stat().st_size
        L, H = 6, 12
        weights = sum(L * H * r["n_pieces"] ** 2 for r in rows)
    padded = L * H * 128 * 128 * 4
    mem = {}
    for m in (n, 2 * n):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(m), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        mem[m] = json.loads(out.stdout.strip().splitlines()[-1])["maxrss_mb"]
    print(f"model minilm (6x12), {n} UD EWT sentences, {args.threads} threads, batch_tokens {args.batch_tokens}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| bare forward with attention | {n / t_bare:.1f} sentences/s |")
    print(f"| tokenize + dump | {n / t_dump:.1f} sentences/s |")
    print(f"| dump / bare throughput | {t_bare / t_dump:.2f}x |")
    print(f"| disk per sentence (shards + index) | {(shard_bytes + index_bytes) / n / 1024:.1f} KiB |")
    print(f"| shard bytes per stored weight | {shard_bytes / weights:.4f} |")
    print(f"| index bytes per sentence | {index_bytes / n:.1f} |")
    print(f"| disk vs float32 padded to 128 | {(shard_bytes + index_bytes) / (padded * n):.3f}x |")
    print(f"| peak memory, {n} sentences | {mem[n]:.0f} MB |")
    print(f"| peak memory, {2 * n} sentences | {mem[2 * n]:.0f} MB |")
    print(f"| peak memory ratio {2 * n}/{n} | {mem[2 * n] / mem[n]:.3f} |")


if __name__ == "__main__":
    main()
