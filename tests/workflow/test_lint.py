"""The workflow's style checks the README promises: snakefmt-formatted rule files and a clean snakemake --lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from support.paths import REPO

BIN = Path(sys.executable).parent


def test_rule_files_are_snakefmt_formatted():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_snakemake_lint_is_clean(data):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(BIN / "snakemake"), "--lint", "--config", f"data_dir={data}"], cwd=REPO,
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
