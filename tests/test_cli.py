"""The command line: bad input fails with one line, exit status 2, and no partial output."""

from __future__ import annotations

import json

import pytest

from headsieve.errors import HeadsieveError
from headsieve.models.load import check_attention_output, load_encoder, load_tokenizer

from cli_utils import one_error_line, run_cli, tokenize_args
from corpora import GOOD


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("\t4\tnsubj", "\t0\tnsubj"), "x.conllu:8: sentence 'a1' has 2 roots (words [1, 4])"),
        (GOOD.replace("\t4\tnsubj", "\t12\tnsubj"), "x.conllu:3: HEAD 12 out of range"),
        (GOOD.replace("\tnsubj\t_\t_", "\tnsubj\t_"), "x.conllu:3: expected 10 tab-separated columns"),
        ("", "no sentences (empty corpus)"),
    ],
)
def test_bad_corpus_one_line_no_output(tmp_path, tiny_bert, text, expected):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / "tokens.parquet"
    log = tmp_path / "t.log"
    proc = run_cli(*tokenize_args({"source": str(tiny_bert)}, corpus, out, log=log))
    assert expected in one_error_line(proc)
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary leftovers either
    assert expected in log.read_text()  # the log has it too


def test_missing_corpus_file(tmp_path, tiny_bert):
    proc = run_cli(*tokenize_args({"source": str(tiny_bert)}, tmp_path / "gone.conllu", tmp_path / "t.parquet"))
    assert "gone.conllu: file not found" in one_error_line(proc)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("/no/such/folder", "model 'm': folder '/no/such/folder' does not exist"),
        ("someorg/not-a-cached-model", "model 'm': cannot load 'someorg/not-a-cached-model'"),
    ],
)
def test_missing_model(tmp_path, source, expected):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    proc = run_cli(*tokenize_args({"source": source}, corpus, tmp_path / "t.parquet"))
    assert expected in one_error_line(proc)
    assert not (tmp_path / "t.parquet").exists()


def test_not_an_encoder(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(HeadsieveError, match="model_type 'gpt2' is not a supported encoder"):
        load_tokenizer("g", {"source": str(tmp_path / "gpt2")})


def test_model_without_attention_probabilities(minilm_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_dir, attn_implementation="sdpa")
    with pytest.raises(HeadsieveError, match="returns no attention probabilities"):
        check_attention_output("m", model, model.config)


def test_dump_refuses_tokens_of_another_model(tmp_path, tiny_bert):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    tokens = tmp_path / "tokens.parquet"
    assert run_cli(*tokenize_args({"source": str(tiny_bert)}, corpus, tokens)).returncode == 0
    out = tmp_path / "attention"
    proc = run_cli(
        "dump", "--model", "other", "--model-spec", json.dumps({"source": str(tiny_bert)}), "--corpus", "c",
        "--tokens", str(tokens), "--output", str(out),
    )  # fmt: skip
    assert "tokens were made with the tokenizer of model ['m'], not 'other'" in one_error_line(proc)
    assert not out.exists()


def test_encoder_loads_with_eager_attention(tiny_bert, tiny_roberta):
    for folder in (tiny_bert, tiny_roberta):
        model = load_encoder("t", {"source": str(folder)})
        assert model.config._attn_implementation == "eager"
