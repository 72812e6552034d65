"""Tiny decoder-only language models saved as model folders with a tokenizer (the llm steps load a model by its
config entry): the random GPT-2 / Llama-GQA / Qwen2 models of :mod:`support.decoder` with a word-level
tokenizer over the most frequent words of a UD file, and a tiny llm config section."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from support.decoder import VOCAB, tiny_model

#: the tokenizer's special tokens, at the ids the tiny configs give them (pad 0, bos 1, eos 2)
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def word_tokenizer(conllu: Path):
    """A fast word-level tokenizer of :data:`support.decoder.VOCAB` ids: the specials, then the most frequent
    lowercased forms of ``conllu`` (every other word is ``<unk>``); whitespace and punctuation split words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from headsieve.io.conllu import read_conllu

    counts = Counter(w.lower() for s in read_conllu(conllu) for w in s.tokens if w.isalpha())
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: VOCAB - len(SPECIALS)]
    vocab = {token: i for i, token in enumerate(list(SPECIALS) + words)}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")  # fmt: skip


def tiny_decoder_folder(folder: Path, model_type: str, conllu: Path, seed: int = 0) -> Path:
    """A tiny random ``model_type`` language model and its word-level tokenizer saved in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(model_type, seed=seed).save_pretrained(folder)
    word_tokenizer(conllu).save_pretrained(folder)
    return folder


def tiny_llm_section(text=("ewt_dev",), perplexity="ewt_test", seeds=(1, 2, 3, 4, 5)) -> dict:
    """An llm config section that fits the tiny models' 64 positions and runs in seconds."""
    return {
        "chunk": None,
        "inputs": {"text": list(text), "max_sentences": 8, "max_length": 40,
                   "repeated": {"count": 6, "length": 12, "seed": 0},
                   "needles": {"count": 4, "context": 16, "needle": 4, "seed": 0}},
        "roles": {"window": 2, "score": "mass", "max_uniform_share": 0.25, "tau": None, "alpha": 0.05,
                  "correction": "bh"},
        "pruning": {"strategies": ["random", "prune_role:causal:induction", "prune_role:causal:sink"],
                    "fractions": [0.0, 0.25, 0.5], "seeds": list(seeds), "correction": "holm", "alpha": 0.05,
                    "evaluation": {"perplexity": perplexity, "max_sentences": 6,
                                   "copying": {"count": 4, "length": 12, "seed": 1},
                                   "needles": {"count": 4, "context": 16, "needle": 4, "seed": 1}}},
    }  # fmt: skip
