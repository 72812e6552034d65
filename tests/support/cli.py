"""Running the headsieve command line in a subprocess and checking its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args, env=None):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "headsieve", *args], capture_output=True, text=True, env=full_env)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("headsieve: error: ")
    return lines[0]


def refused(proc, expected: str, *outputs) -> str:
    """One ``headsieve: error:`` line holding ``expected``, exit status 2, no traceback, none of ``outputs``."""
    line = one_error_line(proc)
    assert "Traceback" not in proc.stderr
    assert expected in line, line
    for out in outputs:
        assert not Path(out).exists(), out
    return line


def tokenize_args(model_spec, corpus_file, output, fmt="conllu", log=None):
    args = ["--log", str(log)] if log else []
    return args + [
        "tokenize", "--model", "m", "--model-spec", json.dumps(model_spec), "--corpus", "c",
        "--corpus-spec", json.dumps({"format": fmt}), "--input", str(corpus_file),
        "--max-length", "64", "--output", str(output),
    ]  # fmt: skip
