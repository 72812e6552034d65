"""Run the real snakemake on this repository's workflow in a scratch working directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from support.paths import REPO


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def snakemake_command(workdir: Path, *args: str, config: Path | None = None, cores: int = 2):
    """(command, environment) that run snakemake with the repository's Snakefile in ``workdir``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    if config is not None:  # test configs set data_dir themselves; CI's data mirror must not override it
        env.pop("HEADSIEVE_DATA_DIR", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", str(cores)]
    cmd += list(args)
    if config is not None:  # last: --configfile takes every following word as a file
        cmd += ["--configfile", str(config)]
    return cmd, env


def snakemake(workdir: Path, *args: str, config: Path | None = None, cores: int = 2, timeout: int = 1500):
    """Run snakemake with the repository's Snakefile in ``workdir``; return the CompletedProcess."""
    cmd, env = snakemake_command(workdir, *args, config=config, cores=cores)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def run_and_kill(workdir: Path, config: Path, started, timeout: float = 600) -> None:
    """Start snakemake, SIGKILL its whole process group once ``started(workdir)`` is true."""
    cmd, env = snakemake_command(workdir, config=config)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not started(workdir):
            assert proc.poll() is None, "the run ended before the moment to kill it"
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry) run; empty when it ran nothing."""
    if "Job stats:" not in stdout:
        return {}
    table = stdout.split("Job stats:")[1].split("\n\n")[0]
    rows = [line.split() for line in table.splitlines()]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


def sample_config(data: Path, n: int = 40, **sections) -> dict:
    """A small real run: the minilm preset over the first ``n`` sentences of UD English EWT dev."""
    config = {
        "data_dir": str(data),
        "models": {"minilm": {"source": "minilm"}},
        "corpora": {
            "ewt": {"format": "conllu", "path": "ud/UD_English-EWT/en_ewt-ud-dev.conllu", "max_sentences": n}
        },
        "attention": {"models": ["minilm"], "corpora": ["ewt"], "max_length": 128},
    }
    config.update(sections)
    return config
