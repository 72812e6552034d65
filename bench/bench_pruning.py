"""Benchmark physically pruned models and the batched mask evaluator.

Run:  python bench/bench_pruning.py [--threads 2] [--masks 12]

1. Throughput (examples/s) and latency of the real minilm classifier with 25, 50 and 75% of its heads
   physically removed (random heads, seeded) against the unpruned model, at batch 1 and 32, on the same
   SST-2 inputs, in one run (each measurement the median of repeats, models interleaved); parameter counts;
   FLOPs per batch measured with torch's FlopCounterMode, and the speed-up against the share of FLOPs removed.
2. Masks evaluated per minute: one process evaluating many masks (MaskEvaluator) against one process per
   mask (load the model, encode the data, evaluate one mask, exit), on the same masks and data.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEADSIEVE_DATA_DIR", REPO.parent / "shared" / "data"))
SST2 = DATA / "glue/SST-2/test.tsv"


def load(n_examples: int, max_length: int = 64):
    from headsieve.io.glue import read_glue, task_spec
    from headsieve.models.load import load_encoder, load_tokenizer
    from headsieve.tasks.data import TaskData, encode_examples

    torch.manual_seed(0)
    tok = load_tokenizer("minilm", {"source": "minilm"})
    model = load_encoder("minilm", {"source": "minilm"}, task_labels=2)
    examples = read_glue(SST2, task_spec("sst2"))[:n_examples]
    data = TaskData("sst2", ("0", "1"), "accuracy", encode_examples(tok, examples, max_length))
    return model, data


def batches(model, data, batch_size):
    from headsieve.models.runtime import uses_token_types
    from headsieve.batching import iter_batches

    out = []
    for b in iter_batches(data.examples, batch_size, model.config.pad_token_id or 0, uses_token_types(model)):
        b.pop("labels")
        out.append(b)
    return out


@torch.inference_mode()
def run(model, batch_list):
    for b in batch_list:
        model(**b)


def flops(model, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**batch)
    return counter.get_total_flops()


def throughput(args):
    from headsieve.models.heads import head_space, prune_heads
    from headsieve.models.surgery import count_parameters
    from headsieve.pruning.strategies import select_heads

    base, data = load(args.examples)
    base.eval()
    space = head_space(base)
    models = {0.0: base}
    for share in (0.25, 0.5, 0.75):
        m = copy.deepcopy(base)
        prune_heads(m, select_heads("random", space, share, seed=1))
        models[share] = m.eval()
    rows = []
    for batch_size in (1, 32):
        # ordered by length, so batches are like those of a length-bucketed server
        data.examples.sort(key=lambda e: len(e["input_ids"]))
        inputs = batches(base, data, batch_size)
        if batch_size == 1:
            inputs = inputs[:: max(1, len(inputs) // 96)]
        n = sum(len(b["input_ids"]) for b in inputs)
        times = {share: [] for share in models}
        for share, m in models.items():
            run(m, inputs[:3])  # warm-up
        for _ in range(args.repeats):
            for share, m in models.items():
                start = time.perf_counter()
                run(m, inputs)
                times[share].append(time.perf_counter() - start)
        f = {share: sum(flops(m, b) for b in inputs[:8]) for share, m in models.items()}
        for share, m in models.items():
            t = statistics.median(times[share])
            rows.append(
                {
                    "batch": batch_size,
                    "pruned": share,
                    "params": count_parameters(m),
                    "examples_per_s": n / t,
                    "latency_ms": 1000 * t / len(inputs),
                    "flops_removed": 1 - f[share] / f[0.0],
                }
            )
    base_rate = {r["batch"]: r["examples_per_s"] for r in rows if r["pruned"] == 0}
    print(f"minilm classifier, {args.examples} SST-2 dev sentences (max 64 pieces), {args.threads} threads, "
          f"median of {args.repeats} interleaved repeats")  # fmt: skip
    print("| batch | heads pruned | parameters | examples/s | latency per batch | FLOPs removed | speed-up | speed-up / FLOPs removed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r["examples_per_s"] / base_rate[r["batch"]] - 1
        ratio = speedup / r["flops_removed"] if r["flops_removed"] > 0 else float("nan")
        print(f"| {r['batch']} | {r['pruned']:.0%} | {r['params'] / 1e6:.2f} M | {r['examples_per_s']:.1f} | "
              f"{r['latency_ms']:.1f} ms | {r['flops_removed']:.1%} | {speedup:+.1%} | {ratio:.2f} |")  # fmt: skip


ONE_MASK = """
import sys, numpy as np, torch
sys.path.insert(0, {bench!r})
torch.set_num_threads({threads})
import bench_pruning as b
from headsieve.pruning.evaluate import MaskEvaluator
model, data = b.load({examples})
mask = np.load({mask!r})
with MaskEvaluator(model, data, 64, progress=False) as ev:
    ev.evaluate(mask)
"""


def masks_per_minute(args):
    from headsieve.models.heads import head_space
    from headsieve.models.masking import mask_from_heads
    from headsieve.pruning.evaluate import MaskEvaluator
    from headsieve.pruning.strategies import select_heads

    model, data = load(args.examples)
    space = head_space(model)
    masks = [mask_from_heads(space, select_heads("random", space, 0.5, seed=s))["encoder"] for s in range(args.masks)]
    start = time.perf_counter()
    model, data = load(args.examples)  # the one process pays for loading once
    with MaskEvaluator(model, data, 64, progress=False) as ev:
        for m in masks:
            ev.evaluate(m)
    one = time.perf_counter() - start
    per_process = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(masks[: args.process_masks]):
            path = Path(tmp) / f"m{k}.npy"
            np.save(path, m)
            code = ONE_MASK.format(bench=str(Path(__file__).parent), threads=args.threads, examples=args.examples, mask=str(path))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            per_process.append(time.perf_counter() - start)
    per_mask_one = one / len(masks)
    per_mask_many = statistics.mean(per_process)
    print(f"\n{args.examples} SST-2 dev sentences per mask, 50% of heads masked, {args.threads} threads")
    print("| setting | masks | seconds per mask | masks per minute |")
    print("|---|---:|---:|---:|")
    print(f"| one process, MaskEvaluator | {len(masks)} | {per_mask_one:.2f} | {60 / per_mask_one:.1f} |")
    print(f"| one process per mask | {len(per_process)} | {per_mask_many:.2f} | {60 / per_mask_many:.1f} |")
    print(f"| ratio | | | {per_mask_many / per_mask_one:.1f}x |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--masks", type=int, default=12)
    parser.add_argument("--process-masks", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    throughput(args)
    masks_per_minute(args)


if __name__ == "__main__":
    main()
