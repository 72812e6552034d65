"""Benchmark role masses of one layer from queries and keys in query chunks against the full-matrix path (CPU).

Run:  python bench/bench_chunked.py [--lengths 512 1024 2048] [--heads 9] [--kv-heads 3] [--dim 64]
                                    [--chunk 128] [--threads 2] [--repeats 5] [--bidirectional]

Inputs are synthetic: seeded random queries and keys of SmolLM2-135M's attention shapes (9 query heads sharing
3 key-value heads, head dim 64), causal by default; no model is run.  Four positional roles (previous token,
backward local window of 3, first token, self) come from a provider built per chunk from positions.

* full path: what an eager attention with attention output holds: logits ``q k^T`` over the keys repeated
  per query head, causal mask, softmax -> ``[heads, T, T]`` float32, then ``roles.chunked.full_role_masses``.
* chunked path: ``roles.chunked.chunked_role_masses`` (softmax per chunk of ``--chunk`` queries, keys not
  repeated).

Peak memory: each (path, T) runs in a fresh Python process (Linux); after torch is imported, the inputs are
made and a warm-up call on ``2 x chunk`` tokens ran, the process's resident peak (VmHWM) is reset to its
current resident size (``/proc/self/clear_refs``), one call runs, and the figure is the new peak minus the
resident size before it: the extra memory the call holds at its peak.  The workers run with glibc's
``MALLOC_MMAP_THRESHOLD_=65536``: every block of 64 KiB or more is mapped on allocation and unmapped on free,
so freed tensors leave the resident set and are not reused unseen.  Time: the median of ``--repeats``
further calls in that process.  Ratios are against the full path of the same T in the same run; the last
column is the largest difference between the two paths' masses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from headsieve.roles.chunked import chunked_role_masses, full_role_masses


def positional_targets(T: int, window: int = 2):
    """Previous token, backward local window (i - window .. i), first token, self; built per chunk."""

    def targets(q0: int, q1: int) -> np.ndarray:
        i = np.arange(q0, q1)[:, None]
        j = np.arange(T)[None, :]
        first = np.broadcast_to(j == 0, (q1 - q0, T))
        return np.stack([j == i - 1, (j <= i) & (j >= i - window), first, j == i])

    return targets


def inputs(T: int, heads: int, kv_heads: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed + T)
    q = torch.randn(heads, T, dim, generator=g)
    k = torch.randn(kv_heads, T, dim, generator=g)
    return q, k


def full_path(q, k, targets, causal: bool, chunk: int):
    heads, T, dim = q.shape
    kr = k.repeat_interleave(heads // k.shape[0], dim=0)
    logits = torch.matmul(q, kr.transpose(1, 2)) / math.sqrt(dim)
    if causal:
        logits.masked_fill_(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    A = torch.softmax(logits, dim=-1)
    del logits
    return full_role_masses(A, targets, chunk=chunk)


def chunked_path(q, k, targets, causal: bool, chunk: int):
    return chunked_role_masses(q, k, targets, causal=causal, chunk=chunk)


PATHS = {"full": full_path, "chunked": chunked_path}

#: glibc serves blocks from this size (bytes) with mmap and unmaps them on free (a fixed threshold also
#: stops glibc from raising it), so freed tensors leave the resident set and its peak is the live peak
MMAP_THRESHOLD = 65536


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def reset_peak() -> int:
    """Reset this process's resident peak (VmHWM) to its current resident size (Linux: clear_refs 5);
    returns the current resident size in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def peak_kib() -> int:
    """This process's resident peak (VmHWM) since the last reset, KiB."""
    return _status_kib("VmHWM")


def worker(args) -> None:
    """One (path, T) in this process: extra peak memory of one call, then the median time of repeats."""
    torch.set_num_threads(args.threads)
    fn = PATHS[args.worker]
    causal = not args.bidirectional
    with torch.no_grad():
        warm = 2 * args.chunk  # one-time allocations (thread pools, kernels) before the baseline
        fn(*inputs(warm, args.heads, args.kv_heads, args.dim), positional_targets(warm), causal, args.chunk)
        q, k = inputs(args.T, args.heads, args.kv_heads, args.dim)
        targets = positional_targets(args.T)
        before = reset_peak()
        fn(q, k, targets, causal, args.chunk)
        extra = (peak_kib() - before) * 1024
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(q, k, targets, causal, args.chunk)
            times.append(time.perf_counter() - start)
    print(json.dumps({"bytes": extra, "seconds": statistics.median(times)}))


def measure(args, path: str, T: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--T", str(T)] + [
        f"--heads={args.heads}", f"--kv-heads={args.kv_heads}", f"--dim={args.dim}", f"--chunk={args.chunk}",
        f"--threads={args.threads}", f"--repeats={args.repeats}",
    ] + (["--bidirectional"] if args.bidirectional else [])  # fmt: skip
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def max_difference(args, T: int) -> float:
    torch.set_num_threads(args.threads)
    q, k = inputs(T, args.heads, args.kv_heads, args.dim)
    targets = positional_targets(T)
    causal = not args.bidirectional
    with torch.no_grad():
        a = full_path(q, k, targets, causal, args.chunk).mass
        b = chunked_path(q, k, targets, causal, args.chunk).mass
    return float(np.abs(a - b).max())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--worker", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--T", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mask = "bidirectional" if args.bidirectional else "causal"
    print(f"{args.heads} query heads / {args.kv_heads} kv heads, head dim {args.dim}, {mask}, chunk {args.chunk}, "
          f"{args.threads} threads, synthetic q/k\n")  # fmt: skip
    print("| T | one [heads, T, T] float32 | full: extra peak | full: time | chunked: extra peak | chunked: time "
          "| memory full / chunked | time chunked / full | max mass difference |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for T in args.lengths:
        full, chunked = measure(args, "full", T), measure(args, "chunked", T)
        print(
            f"| {T} | {args.heads * T * T * 4 / 2**20:.1f} MiB "
            f"| {full['bytes'] / 2**20:.1f} MiB | {full['seconds'] * 1000:.0f} ms "
            f"| {chunked['bytes'] / 2**20:.1f} MiB | {chunked['seconds'] * 1000:.0f} ms "
            f"| {full['bytes'] / max(chunked['bytes'], 1):.1f} | {chunked['seconds'] / full['seconds']:.2f} "
            f"| {max_difference(args, T):.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
