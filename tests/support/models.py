"""Tiny random-initialised encoders built from configs (with the real uncased WordPiece vocabulary of the minilm
preset), and the helpers that load them as classifiers or encode GLUE data for them."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.paths import ewt_texts


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
