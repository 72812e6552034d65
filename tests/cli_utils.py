"""Running the headsieve command line in a subprocess and checking its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_cli(*args, env=None):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "headsieve", *args], capture_output=True, text=True, env=full_env)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("headsieve: error: ")
    return lines[0]


def tokenize_args(model_spec, corpus_file, output, fmt="conllu", log=None):
    args = ["--log", str(log)] if log else []
    return args + [
        "tokenize", "--model", "m", "--model-spec", json.dumps(model_spec), "--corpus", "c",
        "--corpus-spec", json.dumps({"format": fmt}), "--input", str(corpus_file),
        "--max-length", "64", "--output", str(output),
    ]  # fmt: skip
