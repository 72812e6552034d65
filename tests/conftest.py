"""Shared fixtures: the data mirror, the real offline model, tiny random-initialised encoders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.models import build_tiny_bert, build_tiny_roberta
from support.paths import data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from headsieve.models.load import PRESETS

    return Path(PRESETS["minilm"]())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), minilm_dir)


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta"))


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert):
    from headsieve.models.load import load_tokenizer

    return load_tokenizer("tiny", {"source": str(tiny_bert)})


@pytest.fixture(scope="session")
def roberta_tokenizer(tiny_roberta):
    from headsieve.models.load import load_tokenizer

    return load_tokenizer("tiny_roberta", {"source": str(tiny_roberta)})


# ------------------------------------------------------------------------------------------ shared helpers


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread (and do not fight other jobs for the cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
