"""Tiny random-initialised encoder-decoder models (Marian, BART, T5 families; d_model 32, 2 layers, 4 heads)
and a small BPE tokenizer trained on PUD sentences, shared by the seq2seq head and translation tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

FAMILIES = ("marian", "bart", "t5")
VOCAB = 320
PAD, EOS, UNK, BOS = 0, 1, 2, 3


# ------------------------------------------------------------------------------------------------ builders


def tiny_config(name: str, vocab: int = VOCAB, **overrides):
    """A config of a tiny model: d_model 32, 2+2 layers, 4 heads; init scaled up so greedy outputs vary."""
    import transformers as T

    common = dict(vocab_size=vocab, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    bart_like = dict(common, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                     init_std=0.2, dropout=0.1, attention_dropout=0.1)  # fmt: skip
    if name == "marian":
        config = T.MarianConfig(**bart_like)
    elif name in ("bart", "mbart", "pegasus"):
        cls = {"bart": T.BartConfig, "mbart": T.MBartConfig, "pegasus": T.PegasusConfig}[name]
        config = cls(**dict(bart_like, bos_token_id=BOS, decoder_start_token_id=EOS, forced_eos_token_id=None))
    elif name in ("t5", "mt5"):
        cls = T.T5Config if name == "t5" else T.MT5Config
        config = cls(**common, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                     relative_attention_num_buckets=8, relative_attention_max_distance=20, initializer_factor=5.0,
                     dropout_rate=0.1)  # fmt: skip
    else:
        raise ValueError(name)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_model(name: str, seed: int = 0, attn: str = "eager", **overrides):
    """A seeded random ``*ForConditionalGeneration`` in eval mode."""
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(tiny_config(name, **overrides), attn_implementation=attn)
    model.generation_config.max_length = None
    return model.eval()


def pud_path(language: str) -> Path:
    """The PUD file of ``language`` in the data mirror: config/config.yaml's ``corpora.pud_<language>`` entry."""
    from support.paths import REPO, data_dir

    from headsieve.config import corpus_local_path, load_yaml

    config = {"data_dir": str(data_dir()), "corpora": load_yaml(REPO / "config" / "config.yaml")["corpora"]}
    (path,) = corpus_local_path(config, f"pud_{language}")
    return path


def pud_texts(language: str, n: int) -> list[str]:
    from headsieve.translation.data import read_sentences

    return list(read_sentences(pud_path(language), max_sentences=n).values())


@lru_cache(maxsize=None)
def tiny_tokenizer(bos: bool = False):
    """A byte-level-free BPE tokenizer (vocab 320) trained on 300 PUD English and German sentences.

    Specials: <pad>=0, </s>=1, <unk>=2, <s>=3; every input ends with </s> (``bos``: starts with <s>).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>", "<s>"], show_progress=False
    )
    tok.train_from_iterator(pud_texts("en", 300) + pud_texts("de", 300), trainer)
    single = "<s> $A </s>" if bos else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")  # fmt: skip
