"""Benchmark the physically pruned SmolLM2-135M: forward-pass throughput at 50% of query heads removed against
the share of FLOPs removed (CPU, eager attention as headsieve loads decoders).

Run:  python bench/bench_llm_pruned.py [--model resources/models/smollm2-135m] [--tokens 512] [--batch 1]
                                       [--repeats 7] [--threads 2] [--seed 0]

``--model``: the converted SmolLM2 folder (the ``convert_smollm2`` rule's output); when it does not exist it is
converted first into a temporary folder (about a minute).  Variants, each a copy of the same model with heads
removed by :func:`headsieve.models.heads.prune_heads` (query, key, value and output projections sliced; a
key-value group's key and value projections go when all its query heads go):

* ``unpruned``: the baseline of the same run.
* ``random 50%``: half of the 270 query heads (135), drawn with ``--seed`` over the whole model; key-value groups
  are removed only where the draw takes all three query heads of a group.
* ``whole groups 50%``: 135 query heads as whole key-value groups (two of the three groups of even layers, one of
  odd layers: 4.5 heads per layer on average), so the key and value projections shrink by the same share.

FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of the input (every matrix
product, attention's included; the language-model head too, which pruning heads does not touch), so "FLOPs
removed" is a share of the whole forward pass.  Time: the median of ``--repeats`` forward passes (variants
interleaved so that load drifts hit every variant alike; one warm-up pass each), input a seeded random sequence
of ``--batch x --tokens`` tokens.  Speed-up = unpruned time / variant time; the last column compares it with
what the FLOPs alone predict (unpruned FLOPs / variant FLOPs).  Every pruned variant's logits are checked
against the unpruned model with the same heads masked by gates (largest difference printed).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headsieve.models.heads import apply_head_gates, head_space, kv_head_map, make_gates, prune_heads
from headsieve.models.load import load_decoder


def random_heads(layers: int, heads: int, share: float, seed: int) -> list[tuple[str, int, int]]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(layers * heads, size=round(share * layers * heads), replace=False)
    return sorted(("decoder", int(i) // heads, int(i) % heads) for i in flat)


def whole_groups(layers: int, heads: int, kv_heads: int, seed: int) -> list[tuple[str, int, int]]:
    """Two of the groups in even layers, one in odd ones (seeded choice of which)."""
    rng = np.random.default_rng(seed)
    size = heads // kv_heads
    out = []
    for layer in range(layers):
        groups = rng.choice(kv_heads, size=2 if layer % 2 == 0 else 1, replace=False)
        out += [("decoder", layer, int(g) * size + h) for g in sorted(groups) for h in range(size)]
    return out


def forward_flops(model, ids) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    return int(counter.get_total_flops())


def kept(model) -> tuple[int, int]:
    """(query heads, key-value heads) left in the whole model."""
    groups = kv_head_map(model)
    return sum(len(q) for site in groups.values() for q in site.values()), sum(len(site) for site in groups.values())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if not Path(args.model, "config.json").is_file():
            from headsieve.models.convert_gguf import convert_smollm2

            print(f"{args.model} not found: converting SmolLM2 into a temporary folder", flush=True)
            args.model = str(convert_smollm2(Path(tmp) / "smollm2-135m"))
        base = load_decoder("smollm2", {"source": args.model}).eval()
    L, H = head_space(base).shape("decoder")
    n_kv = int(base.config.num_key_value_heads)
    rng = np.random.default_rng(args.seed + 1)
    ids = torch.as_tensor(rng.integers(100, base.config.vocab_size, size=(args.batch, args.tokens)), dtype=torch.long)
    plans = {"random 50%": random_heads(L, H, 0.5, args.seed), "whole groups 50%": whole_groups(L, H, n_kv, args.seed)}

    variants, checks = {"unpruned": base}, {}
    with torch.no_grad():
        for name, heads in plans.items():
            with apply_head_gates(base, make_gates(base, off=heads)):
                masked = base(input_ids=ids).logits
            model = copy.deepcopy(base)
            prune_heads(model, heads)
            variants[name] = model.eval()
            checks[name] = float((model(input_ids=ids).logits - masked).abs().max())
    flops = {name: forward_flops(model, ids) for name, model in variants.items()}

    times = {name: [] for name in variants}
    with torch.no_grad():
        for model in variants.values():
            model(input_ids=ids)  # warm-up
        for _ in range(args.repeats):
            for name, model in variants.items():
                start = time.perf_counter()
                model(input_ids=ids)
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"SmolLM2 ({L} layers x {H} query heads / {n_kv} kv heads), input {args.batch} x {args.tokens} tokens, "
          f"{args.threads} threads, eager attention, median of {args.repeats} forward passes\n")  # fmt: skip
    print("| model | query heads | kv heads | GFLOPs | FLOPs removed | time | tokens/s | speed-up | "
          "FLOPs ratio | max logit diff vs masked |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tokens = args.batch * args.tokens
    for name, model in variants.items():
        q, kv = kept(model)
        print(
            f"| {name} | {q} | {kv} | {flops[name] / 1e9:.1f} | {1 - flops[name] / flops['unpruned']:.1%} "
            f"| {median[name] * 1000:.0f} ms | {tokens / median[name]:.0f} | {median['unpruned'] / median[name]:.2f} "
            f"| {flops['unpruned'] / flops[name]:.2f} | {checks.get(name, 0.0):.1e} |",
            flush=True,
        )
    spread = {name: (min(t) * 1000, max(t) * 1000) for name, t in times.items()}
    print("\nrange of the timed passes (ms): " + ", ".join(f"{n} {a:.0f}-{b:.0f}" for n, (a, b) in spread.items()))


if __name__ == "__main__":
    main()
