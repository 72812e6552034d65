"""Reliability sweep: bad inputs fail with one line and leave no output; security rules hold in the code."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from headsieve.config import validate_config
from headsieve.errors import HeadsieveError
from headsieve.io.fetch import fetch
from headsieve.models.load import hub_kwargs

from support.cli import one_error_line, run_cli, tokenize_args
from support.corpora import GOOD
from support.workflow import REPO, sample_config

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def config_error(config) -> str:
    with pytest.raises(HeadsieveError) as err:
        validate_config(config, SCHEMA)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(surprise=True), "config key 'surprise': unknown key"),
        (lambda c: c["attention"].update(max_length="long"), "config key 'attention.max_length': 'long' is not of type 'integer'"),
        (lambda c: c.update(pruning={"fractions": [0.2, 1.0]}), "config key 'pruning.fractions[1]': 1.0 is greater than or equal to the maximum of 1"),
        (lambda c: c.update(pruning={"fractions": [-0.1]}), "config key 'pruning.fractions[0]': -0.1 is less than the minimum of 0"),
        (lambda c: c.update(pruning={"seeds": [-1]}), "config key 'pruning.seeds[0]': -1 is less than the minimum of 0"),
        (lambda c: c.update(pruning={"seeds": -2}), "config key 'pruning.seeds': -2 is not of type 'array'"),
        (lambda c: c.update(pruning={"fractions": [0.125]}), "config key 'pruning.fractions[0]': 0.125 has more than 2 decimals"),
        (lambda c: c.update(pruning={"strategies": ["prune_role:local"]}), "config key 'pruning.role_labels'"),
        (lambda c: c.update(pruning={"compensation_strategies": ["random", "keep_one:2"]}), "config key 'pruning.compensation_strategies[1]': 'keep_one:2' prunes a fixed set of heads"),
        (lambda c: c["corpora"].update({"x; rm -rf ~": c["corpora"]["ewt"]}), "name 'x; rm -rf ~' is not allowed"),
        (lambda c: c["corpora"]["ewt"].update(url="https://example.org/x"), "config key 'corpora.ewt.sha256': a url needs its sha256"),
        (lambda c: c["roles"].update(correction="bonferroni"), "config key 'roles.correction': 'bonferroni' is not one of"),
        (lambda c: c.update(tasks={"t": {"train": "ewt", "eval": "ewt"}}), "config key 'tasks.t.train': corpus 'ewt' has no labels"),
    ],
)
def test_invalid_config_is_one_line_naming_the_key(data, edit, expected):
    config = sample_config(data, roles={})
    edit(config)
    assert expected in config_error(config)


def test_downloads_are_verified_before_use(tmp_path):
    source = tmp_path / "release.conllu"
    source.write_text(GOOD, encoding="utf-8")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "resources" / "x.conllu"
    out.parent.mkdir()
    with pytest.raises(HeadsieveError, match="sha256 mismatch .* file not used"):
        fetch(source.as_uri(), "0" * 64, out)
    assert not out.exists() and list(out.parent.iterdir()) == []
    fetch(source.as_uri(), good, out)
    assert out.read_text(encoding="utf-8") == GOOD
    with pytest.raises(HeadsieveError, match="cannot download"):
        fetch((tmp_path / "gone").as_uri(), good, tmp_path / "y")


def test_trust_remote_code_is_off_unless_configured():
    assert hub_kwargs({"source": "x"})["trust_remote_code"] is False
    assert hub_kwargs({"source": "x", "trust_remote_code": True})["trust_remote_code"] is True


def test_no_unsafe_loading_in_the_code():
    """No pickle, no yaml.load, no torch.load without weights_only, no trust_remote_code=True."""
    bad = re.compile(r"import pickle|pickle\.load|yaml\.load\(|torch\.load\(|trust_remote_code=True|allow_pickle=True")
    offenders = []
    for path in list((REPO / "src").rglob("*.py")) + list((REPO / "workflow").rglob("*.smk")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_config_values_reach_the_shell_quoted():
    """Every placeholder in a rule's shell command is quoted (:q) unless it is a number or a wildcard the
    constraints restrict to letters, digits, '_', '-', '.' and '+'."""
    safe = {"threads", "wildcards.model", "wildcards.corpus", "wildcards.task", "wildcards.seed", "wildcards.fraction",
            "resources.batch_tokens", "resources.batch_size", "params.max_length", "params.shard_mb", "params.tau",
            "params.alpha", "params.examples",
            # integers the schema validates (type integer with a minimum; seeds: integers joined by spaces)
            "params.seed", "params.seeds", "params.bootstrap", "params.draws", "params.cka_examples"}  # fmt: skip
    offenders = []
    for path in (REPO / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        for block in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
            for name, quoted in re.findall(r"\{([a-z_.]+)(:q)?\}", block):
                if not quoted and name not in safe:
                    offenders.append(f"{path.name}: {{{name}}}")
    assert offenders == []


def test_mismatched_tokenizer_and_dump(tmp_path, tiny_bert, roberta_tokenizer):
    """A dump whose word pieces are not those of the tokens table is refused with one line."""
    from headsieve.attention import dump_attention
    from headsieve.io.atomic import write_table
    from headsieve.io.conllu import read_conllu
    from headsieve.models.load import load_encoder, load_tokenizer
    from headsieve.roles.score import score_dump
    from headsieve.tokens import encode_sentences, records_table

    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD + GOOD.replace("a1", "a2"), encoding="utf-8")
    sentences = read_conllu(corpus)
    bert_rows, _ = encode_sentences(load_tokenizer("t", {"source": str(tiny_bert)}), sentences, 32)
    dump_attention(load_encoder("t", {"source": str(tiny_bert)}), bert_rows, tmp_path / "dump", "t", "c", progress=False)
    other, _ = encode_sentences(roberta_tokenizer, sentences, 32)
    write_table(records_table(other, "t", "c"), tmp_path / "tokens.parquet")
    # the dump's fingerprint of (input, token ids) disagrees with the tokens before any sentence is read
    with pytest.raises(HeadsieveError, match=r"dump: made from other token ids than those in .*tokens.parquet \(another tokenizer"):
        score_dump(tmp_path / "tokens.parquet", tmp_path / "dump", "t", "c", progress=False)


def test_bad_attention_through_the_command_line(tmp_path, tiny_bert):
    """roles-score refuses a dump with NaN or rows that do not sum to 1: one line, nothing written."""
    from headsieve.io.shards import ShardWriter

    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    assert run_cli(*tokenize_args({"source": str(tiny_bert)}, corpus, tmp_path / "tokens.parquet")).returncode == 0
    import pyarrow.parquet as pq

    row = pq.read_table(tmp_path / "tokens.parquet").to_pylist()[0]
    T = row["n_pieces"]
    att = np.full((3, 4, T, T), 1.0 / T, dtype=np.float16)
    att[1, 2, 0, :] = 0.5  # a row summing to T/2
    writer = ShardWriter(tmp_path / "dump", "m", "c")
    writer.add(0, row["sentence_id"], att, row["input_ids"])
    writer.close()
    out = tmp_path / "roles"
    proc = run_cli(
        "roles-score", "--model", "m", "--corpus", "c", "--tokens", str(tmp_path / "tokens.parquet"),
        "--dump", str(tmp_path / "dump"), "--scores", str(out / "scores.parquet"),
        "--head-stats", str(out / "head_stats.parquet"),
    )  # fmt: skip
    assert "sentence 'a1': attention rows do not sum to 1" in one_error_line(proc)
    assert not out.exists() or list(out.iterdir()) == []


def test_glue_file_errors_through_the_command_line(tmp_path, tiny_bert):
    tsv = tmp_path / "sst.tsv"
    tsv.write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n", encoding="utf-8")
    args = tokenize_args({"source": str(tiny_bert)}, tsv, tmp_path / "t.parquet")
    args[args.index("--corpus-spec") + 1] = json.dumps({"format": "glue", "task": "sst2"})
    assert "sst.tsv:3: unknown label 'maybe'" in one_error_line(run_cli(*args))
    tsv.write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    assert "sst.tsv:2: not UTF-8" in one_error_line(run_cli(*args))
    assert not (tmp_path / "t.parquet").exists()


# ---------------------------------------------------------------- issue 18: degenerate samples, config typos


def test_tau_by_role_typo_is_one_line_naming_the_key(data):
    """It used to be accepted (and to replace the default map)."""
    config = sample_config(data, roles={"tau_by_role": {"blok": 1.5}})
    assert "config key 'roles.tau_by_role.blok': unknown role 'blok' (known: local," in config_error(config)
    config = sample_config(data, roles={"tau_by_role": {"block": 0.6, "dep:nsubj": 2.0}})
    assert validate_config(config, SCHEMA)["roles"]["tau_by_role"] == {"block": 0.6, "dep:nsubj": 2.0}


def test_degenerate_samples_are_not_tested():
    """n < 2 and sd 0 give no t, no p and a reason; a real spread is tested as before."""
    from headsieve.roles.tests import t_test_greater, untested_reason

    n, mean, sd = np.array([1, 3, 3, 10]), np.array([9.0, 9.0, 3.0, 4.0]), np.array([np.nan, 0.0, 0.0, 1.0])
    t, p = t_test_greater(n, mean, sd, 3.0)
    assert np.isnan(t[:3]).all() and np.isnan(p[:3]).all()
    assert t[3] == pytest.approx((4.0 - 3.0) / (1.0 / np.sqrt(10)))
    assert list(untested_reason(n, mean, sd)) == ["fewer than 2 inputs", "no spread (sd 0)", "no spread (sd 0)", ""]


def scores_frame(per_sentence: list[float], role="local", heads=2):
    import pandas as pd

    rows = [
        {"model": "m", "corpus": "c", "sentence_index": k, "layer": 0, "head": h, "role": role, "score": s + 0.1 * h}
        for k, s in enumerate(per_sentence)
        for h in range(heads)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "per_sentence, reason",
    [
        ([0.9, 0.9, 0.9], "no spread (sd 0)"),  # three copies of one sentence: t was infinite, p 0, "significant"
        ([0.9], "fewer than 2 inputs"),  # a one-sentence corpus
    ],
)
def test_copies_and_single_sentences_get_no_labels_and_a_reason(per_sentence, reason):
    from headsieve.roles.tests import role_tests

    tests = role_tests(scores_frame(per_sentence), tau=0.4)
    assert not tests["label"].any()
    assert tests["p"].isna().all() and tests["p_adj"].isna().all()
    assert (tests["untested_reason"] == reason).all()


def test_a_spread_sample_is_still_tested_and_labelled():
    from headsieve.roles.tests import role_tests

    rng = np.random.default_rng(0)
    tests = role_tests(scores_frame(list(0.8 + 0.05 * rng.standard_normal(12))), tau=0.4)
    assert tests["label"].all() and (tests["untested_reason"] == "").all()


def test_untested_samples_give_a_summary_line():
    """For the role summary (instead of "0 of 72 heads" and "nan%"): how many samples were not tested and why."""
    from headsieve.roles.tests import role_tests, untested_lines

    (line,) = untested_lines(role_tests(scores_frame([0.9]), tau=0.4))
    assert line == "- not tested: 2 of 2 head x role samples (fewer than 2 inputs: 2); no label there"
    assert untested_lines(role_tests(scores_frame([0.9, 0.5, 0.7]), tau=0.4)) == []
