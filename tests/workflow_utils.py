"""Run the real snakemake on this repository's workflow in a scratch working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def snakemake(workdir: Path, *args: str, config: Path | None = None, cores: int = 2, timeout: int = 1500):
    """Run snakemake with the repository's Snakefile in ``workdir``; return the CompletedProcess."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    if config is not None:  # test configs set data_dir themselves; CI's data mirror must not override it
        env.pop("HEADSIEVE_DATA_DIR", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", str(cores)]
    cmd += list(args)
    if config is not None:  # last: --configfile takes every following word as a file
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


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
