"""Benchmark causal role scores of SmolLM2-135M on a long input: the chunked path against the stored-attention
(``output_attentions``) path of :func:`headsieve.roles.forward.causal_role_scores` (CPU).

Run:  python bench/bench_llm.py [--model resources/models/smollm2-135m] [--tokens 2048] [--chunk 256]
                                [--threads 2]

``--model``: the converted SmolLM2 folder (the ``convert_smollm2`` rule's output); when it does not exist it is
converted first into a temporary folder (about a minute).  The input: a seeded random token sequence of
``tokens / 2`` tokens repeated twice (:func:`headsieve.roles.causal_inputs.repeated_facts`, no BOS), scored on
every causal role (those with targets there: previous-token, local, sink, duplicate, induction).

* stored path (``chunk=None``): eager attention returns every layer's ``[heads, T, T]`` probabilities, copied
  into the score batch and scored by ``roles.causal_score.score_causal``.
* chunked path (``chunk=--chunk``): each layer's queries and keys captured in the forward pass (SDPA output)
  and scored ``chunk`` queries at a time by ``roles.chunked``.

Peak memory: each path runs in a fresh Python process (Linux) that loads the model and runs a warm-up call on
``2 x chunk`` tokens; then the process's resident peak (VmHWM) is reset to its current resident size
(``/proc/self/clear_refs``), one call on the long input runs, and the figure is the new peak minus the
resident size before it: the extra memory the call holds at its peak (the model's weights are not counted).
The workers run with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` (as ``bench_chunked.py``), so freed tensors
leave the resident set.  Time: that one call (wall clock).  Ratios are against the stored path of the same
run; the last column is the largest difference between the two paths' scores (their counts must be equal).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunked import MMAP_THRESHOLD, peak_kib, reset_peak  # noqa: E402

from headsieve.models.load import load_decoder  # noqa: E402
from headsieve.roles.causal_inputs import repeated_facts  # noqa: E402
from headsieve.roles.forward import causal_role_scores  # noqa: E402


def long_input(tokens: int, vocab: int, seed: int = 0):
    facts = repeated_facts(seed, tokens // 2, vocab, repeats=2, bos=None)
    return [(facts.token, facts)]


def worker(args) -> None:
    """One path in this process: extra peak memory and time of one call on the long input; writes its table."""
    torch.set_num_threads(args.threads)
    model = load_decoder("smollm2", {"source": args.model})
    vocab = int(model.config.vocab_size)
    chunk = None if args.worker == "stored" else args.chunk
    causal_role_scores(model, long_input(2 * args.chunk, vocab, seed=1), chunk=chunk)  # warm-up
    inputs = long_input(args.tokens, vocab)
    before = reset_peak()
    start = time.perf_counter()
    table = causal_role_scores(model, inputs, chunk=chunk)
    seconds = time.perf_counter() - start
    extra = (peak_kib() - before) * 1024
    table.to_parquet(args.table)
    print(json.dumps({"bytes": extra, "seconds": seconds}))


def measure(args, path: str, table: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--table", str(table), f"--model={args.model}",
           f"--tokens={args.tokens}", f"--chunk={args.chunk}", f"--threads={args.threads}"]  # fmt: skip
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest score difference; the rows and counts must agree."""
    pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))
    return float(np.nanmax(np.abs(a["score"].to_numpy() - b["score"].to_numpy())))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["stored", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        if not Path(args.model, "config.json").is_file():
            from headsieve.models.convert_gguf import convert_smollm2

            print(f"{args.model} not found: converting SmolLM2 into a temporary folder", flush=True)
            args.model = str(convert_smollm2(Path(tmp) / "smollm2-135m"))
        stored = measure(args, "stored", Path(tmp) / "stored.parquet")
        chunked = measure(args, "chunked", Path(tmp) / "chunked.parquet")
        diff = compare(pd.read_parquet(Path(tmp) / "stored.parquet"), pd.read_parquet(Path(tmp) / "chunked.parquet"))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model)
    L, H = config.num_hidden_layers, config.num_attention_heads
    held = L * H * args.tokens**2 * 4
    print(f"SmolLM2 ({L} layers x {H} query heads / {config.num_key_value_heads} kv heads), {args.tokens} tokens, "
          f"chunk {args.chunk}, {args.threads} threads; [layers, heads, T, T] float32 = {held / 2**30:.2f} GiB\n")  # fmt: skip
    print("| path | extra peak | time | memory stored / path | time path / stored | max score difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in (("stored (output_attentions)", stored), (f"chunked ({args.chunk})", chunked)):
        print(
            f"| {name} | {m['bytes'] / 2**20:.0f} MiB | {m['seconds']:.1f} s "
            f"| {stored['bytes'] / max(m['bytes'], 1):.1f} | {m['seconds'] / stored['seconds']:.2f} "
            f"| {0.0 if m is stored else diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
