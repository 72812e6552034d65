"""Where things are: the repository and the shared data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared data mirror (HEADSIEVE_DATA_DIR, else ../shared/data beside the repository)."""
    env = os.environ.get("HEADSIEVE_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "ud" / "UD_English-EWT").is_dir():
        pytest.fail(f"data mirror not found at {path}: set HEADSIEVE_DATA_DIR")
    return path


def ewt_texts(n: int = 500) -> list[str]:
    path = data_dir() / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# text ="):
            out.append(line.split("=", 1)[1].strip())
            if len(out) >= n:
                break
    return out
