"""Shared fixtures: the data mirror, the real offline model, tiny random-initialised encoders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def data_dir() -> Path:
    """The shared data mirror (HEADSIEVE_DATA_DIR, else ../shared/data beside the repository)."""
    env = os.environ.get("HEADSIEVE_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "ud" / "UD_English-EWT").is_dir():
        pytest.fail(f"data mirror not found at {path}: set HEADSIEVE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def data() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from headsieve.models.load import PRESETS

    return Path(PRESETS["minilm"]())


def ewt_texts(n: int = 500) -> list[str]:
    path = data_dir() / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# text ="):
            out.append(line.split("=", 1)[1].strip())
            if len(out) >= n:
                break
    return out


def build_tiny_bert(folder: Path, minilm: Path, layers: int = 3, heads: int = 4, seed: int = 0) -> Path:
    """A random BERT with the real uncased WordPiece vocabulary (from the minilm preset)."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, folder / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def build_tiny_roberta(folder: Path, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A random RoBERTa with a byte-level BPE tokenizer trained here on EWT text."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ewt_texts(), vocab_size=600, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    RobertaTokenizer.from_pretrained(folder).save_pretrained(folder)
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=600,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=520,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    RobertaModel(config).save_pretrained(folder)
    return folder


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


def glue_task(data: Path, tokenizer, task: str, rel: str, n: int, max_length: int = 48):
    """The first ``n`` examples of a GLUE-form file under the data mirror, encoded as a TaskData."""
    from headsieve.io.glue import TASKS, read_glue
    from headsieve.tasks import data as D

    spec = TASKS[task]
    examples = read_glue(data / rel, spec, max_examples=n)
    return D.TaskData(task, spec.labels, spec.metric, D.encode_examples(tokenizer, examples, max_length))


def tiny_classifier(tiny_bert: Path, seed: int = 0, labels: int = 2):
    """The tiny BERT with a classifier head, torch seeded first (the head is initialised at load)."""
    import torch

    from headsieve.models.load import load_encoder

    torch.manual_seed(seed)
    return load_encoder("tiny", {"source": str(tiny_bert)}, task_labels=labels)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread (and do not fight other jobs for the cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
