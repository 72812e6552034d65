"""Provenance and coverage of artifacts: tokens.parquet and the dump record what they were made from, and
every reader checks that against its own inputs and config; a dump holds every input exactly once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from headsieve.io.shards import INDEX_NAME, ShardWriter, index_provenance, read_index
from headsieve.tokens import read_provenance

from support.cli import refused, run_cli, tokenize_args
from support.corpora import GOOD


def two_sentences() -> str:
    other = GOOD.replace("a1", "a2").replace("They didn't go.", "We did go.").replace("\tThey\tthey\t", "\tWe\twe\t")
    return GOOD + other


def tokenize(tmp_path, model_dir, text, corpus_key="c", max_length=64, name="tokens.parquet"):
    corpus = tmp_path / f"{corpus_key}.conllu"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / name
    args = tokenize_args({"source": str(model_dir)}, corpus, out, log=tmp_path / f"{name}.log")
    args[args.index("--max-length") + 1] = str(max_length)
    args[args.index("--corpus") + 1] = corpus_key
    proc = run_cli(*args)
    return proc, out, corpus


def dump(tmp_path, model_dir, tokens, corpus_key="c", max_length=None, out=None):
    out = out or tmp_path / "attention"
    args = ["--log", str(tmp_path / "dump.log"), "dump", "--model", "m", "--model-spec",
            json.dumps({"source": str(model_dir)}), "--corpus", corpus_key, "--tokens", str(tokens), "--output", str(out)]  # fmt: skip
    if max_length is not None:
        args += ["--max-length", str(max_length)]
    return run_cli(*args), out


def score(tmp_path, tokens, dump_dir):
    out = tmp_path / "roles"
    proc = run_cli(
        "--log", str(tmp_path / "score.log"), "roles-score", "--model", "m", "--corpus", "c", "--tokens", str(tokens),
        "--dump", str(dump_dir), "--scores", str(out / "scores.parquet"), "--head-stats", str(out / "head_stats.parquet"),
    )  # fmt: skip
    return proc, out / "scores.parquet"


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_bert):
    """tokens.parquet and its dump of a two-sentence corpus, through the command line."""
    tmp_path = tmp_path_factory.mktemp("made")
    proc, tokens, corpus = tokenize(tmp_path, tiny_bert, two_sentences())
    assert proc.returncode == 0, proc.stderr
    proc, dump_dir = dump(tmp_path, tiny_bert, tokens, max_length=64)
    assert proc.returncode == 0, proc.stderr
    return tmp_path, tokens, dump_dir, corpus


def test_tokens_and_dump_record_what_they_were_made_from(made, tiny_bert):
    tmp_path, tokens, dump_dir, corpus = made
    record = read_provenance(tokens)
    assert record["model"] == "m" and record["corpus"] == "c" and record["max_length"] == 64
    assert record["input_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert record["inputs"] == [corpus.name] and record["n_inputs"] == 2 and record["duplicates_dropped"] == 0
    assert record["corpus_spec"] == {"format": "conllu"} and record["model_source"] == str(tiny_bert)
    made_from = index_provenance(read_index(dump_dir))
    assert made_from["model"] == "m" and made_from["corpus"] == "c" and made_from["max_length"] == 64
    assert made_from["tokens_sha256"] == hashlib.sha256(tokens.read_bytes()).hexdigest()
    assert made_from["corpus_sha256"] == record["input_sha256"] and made_from["n_sentences"] == 2
    proc, scores = score(tmp_path, tokens, dump_dir)
    assert proc.returncode == 0, proc.stderr
    assert sorted(set(pq.read_table(scores, columns=["sentence_index"]).column(0).to_pylist())) == [0, 1]


def test_dump_refuses_tokens_of_another_corpus_or_length(tmp_path, tiny_bert):
    """It used to check the tokens' model only: tokens of another corpus key cut at 16 were dumped."""
    proc, other, _ = tokenize(tmp_path, tiny_bert, two_sentences(), corpus_key="c2", max_length=16)
    assert proc.returncode == 0, proc.stderr
    proc, out = dump(tmp_path, tiny_bert, other, corpus_key="c", max_length=64)
    refused(proc, "tokens were made of corpus ['c2'], not 'c'", out)
    proc, short, _ = tokenize(tmp_path, tiny_bert, two_sentences(), max_length=16, name="short.parquet")
    assert proc.returncode == 0, proc.stderr
    proc, out = dump(tmp_path, tiny_bert, short, max_length=64)
    refused(proc, "short.parquet: made for max_length 16, not 64: rerun the tokenize step", out)


def rewrite_dump(made, tmp_path, rows_of) -> Path:
    """A dump of the made tokens written by an outside writer (ShardWriter) with the rows ``rows_of`` picks."""
    _, tokens, dump_dir, _ = made
    rows = pq.read_table(tokens).to_pylist()
    attention = {r["sentence_index"]: att for r, att in _iter(dump_dir)}
    writer = ShardWriter(tmp_path / "outside", "m", "c")
    for row in rows_of(rows):
        writer.add(row["sentence_index"], row["sentence_id"], attention[row["sentence_index"]], row["input_ids"])
    writer.close()
    return tmp_path / "outside"


def _iter(dump_dir):
    from headsieve.io.shards import iter_dump

    return list(iter_dump(dump_dir))


def test_every_row_written_twice_is_refused(made, tmp_path):
    """It used to double n (6 -> 12) and the labels.  ShardWriter refuses a repeat; an index written by
    other means is refused when read."""
    from headsieve.errors import HeadsieveError

    with pytest.raises(HeadsieveError, match="sentence 'a1': sentence_index 0 added twice"):
        rewrite_dump(made, tmp_path, lambda rows: rows + rows)
    dump_dir = rewrite_dump(made, tmp_path / "again", lambda rows: rows)
    table = pq.read_table(dump_dir / INDEX_NAME)
    import pyarrow as pa

    doubled = pa.concat_tables([table, table]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(doubled, dump_dir / INDEX_NAME)
    proc, scores = score(tmp_path, made[1], dump_dir)
    refused(proc, "index.parquet: sentence_index 0 is listed twice (rows 1 and 3); every input must be in a dump exactly once", scores)


def test_missing_rows_are_refused(made, tmp_path):
    """It used to score half the sentences without a word."""
    dump_dir = rewrite_dump(made, tmp_path, lambda rows: rows[:1])
    proc, scores = score(tmp_path, made[1], dump_dir)
    refused(proc, "1 of the 2 inputs of", scores)
    assert "are not in the dump (first: sentence_index 1)" in proc.stderr


def test_rows_dropped_from_the_index_disagree_with_the_recorded_count(made, tmp_path):
    dump_dir = rewrite_dump(made, tmp_path, lambda rows: rows)
    table = pq.read_table(dump_dir / INDEX_NAME)
    pq.write_table(table.slice(0, 1), dump_dir / INDEX_NAME)  # the metadata (2 sentences) stays
    proc, scores = score(tmp_path, made[1], dump_dir)
    refused(proc, "index.parquet: 1 sentences listed, but the dump was written with 2", scores)


def test_shard_outside_the_dump_folder_is_refused(made, tmp_path):
    dump_dir = rewrite_dump(made, tmp_path, lambda rows: rows)
    (tmp_path / "outside.npz").write_bytes((dump_dir / "shard-00000.npz").read_bytes())
    table = pq.read_table(dump_dir / INDEX_NAME)
    shard = table.schema.get_field_index("shard")
    table = table.set_column(shard, "shard", [["../outside.npz"] * table.num_rows])
    pq.write_table(table, dump_dir / INDEX_NAME)
    proc, scores = score(tmp_path, made[1], dump_dir)
    refused(proc, "shard '../outside.npz' is not a plain .npz file name inside the dump folder", scores)


def test_deleted_index_says_what_to_rerun(made, tmp_path):
    dump_dir = rewrite_dump(made, tmp_path, lambda rows: rows)
    (dump_dir / INDEX_NAME).unlink()
    proc, scores = score(tmp_path, made[1], dump_dir)
    refused(proc, "no dump index (not an attention dump folder, or an incomplete one): delete the folder and rerun "
            "the dump (rule dump_attention", scores)  # fmt: skip


def test_dump_of_another_model_key_is_refused(made, tmp_path):
    _, tokens, dump_dir, _ = made
    out = tmp_path / "roles"
    proc = run_cli(
        "--log", str(tmp_path / "s.log"), "roles-score", "--model", "m", "--corpus", "other", "--tokens", str(tokens),
        "--dump", str(dump_dir), "--scores", str(out / "scores.parquet"), "--head-stats", str(out / "h.parquet"),
    )  # fmt: skip
    refused(proc, "made for corpus 'c', not 'other'", out / "scores.parquet")


def test_duplicate_inputs_are_dropped_reported_and_counted(tmp_path, tiny_bert):
    """Three copies of one sentence: the first is kept, the log warns, the tokens record the count."""
    other = two_sentences().split("\n\n")[1].replace("a2", "b1") + "\n\n"
    text = GOOD + GOOD.replace("a1", "a2") + GOOD.replace("a1", "a3") + other
    proc, tokens, _ = tokenize(tmp_path, tiny_bert, text)
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(tokens, columns=["sentence_id", "sentence_index"]).to_pylist()
    assert [(r["sentence_id"], r["sentence_index"]) for r in rows] == [("a1", 0), ("b1", 1)]
    assert read_provenance(tokens)["duplicates_dropped"] == 2
    log = (tmp_path / "tokens.parquet.log").read_text()
    assert "WARNING: 2 duplicate inputs dropped" in log and "a2 (= a1), a3 (= a1)" in log
    assert "duplicate inputs dropped 2" in log


def test_a_dump_reads_back_after_an_outside_writer(tmp_path):
    """ShardWriter computes the count and the fingerprint itself: an outside writer gets a consistent index."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp_path / "d", "m", "c", shard_bytes=500)
    for k in range(5):
        att = rng.dirichlet(np.ones(4), size=(1, 2, 4)).astype(np.float16)
        writer.add(k, f"s{k}", att, list(range(4)))
    writer.close()
    assert index_provenance(read_index(tmp_path / "d"))["n_sentences"] == 5


# ---------------------------------------------------------------- role scores and tests


def roles_test(tmp_path, scores, name="tests.parquet"):
    out = tmp_path / name
    proc = run_cli("roles-test", "--scores", str(scores), "--alpha", "0.05", "--correction", "bh", "--output", str(out))
    return proc, out


def test_scores_and_tests_record_what_they_were_made_from(made, tmp_path):
    from headsieve.roles.score import read_scores_provenance

    _, tokens, dump_dir, _ = made
    proc, scores = score(tmp_path, tokens, dump_dir)
    assert proc.returncode == 0, proc.stderr
    record = read_scores_provenance(scores)
    assert record["model"] == "m" and record["corpus"] == "c" and record["n_inputs"] == 2
    assert record["tokens_sha256"] == hashlib.sha256(tokens.read_bytes()).hexdigest()
    assert record["inputs_fingerprint"] == index_provenance(read_index(dump_dir))["inputs_fingerprint"]
    assert record["options"]["score"] == "mass"
    assert pq.read_schema(scores.parent / "head_stats.parquet").metadata == pq.read_schema(scores).metadata
    proc, tests = roles_test(tmp_path, scores)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(pq.read_schema(tests).metadata[b"headsieve_provenance"])
    assert meta["scores_sha256"] == hashlib.sha256(scores.read_bytes()).hexdigest()
    assert (meta["alpha"], meta["correction"], meta["inputs_fingerprint"]) == (0.05, "bh", record["inputs_fingerprint"])


def test_report_refuses_tests_of_other_scores(made, tmp_path):
    """The report retests the scores (stability): scores other than those tested would mix two runs."""
    _, tokens, dump_dir, _ = made
    proc, scores = score(tmp_path, tokens, dump_dir)
    assert proc.returncode == 0, proc.stderr
    proc, tests = roles_test(tmp_path, scores)
    assert proc.returncode == 0, proc.stderr
    other = tmp_path / "other_scores.parquet"
    table = pq.read_table(scores)
    pq.write_table(table.slice(0, table.num_rows - 1), other)  # not the scores the tests were made from
    summary = tmp_path / "summary.md"
    proc = run_cli("roles-report", "--tests", str(tests), "--scores", str(other), "--figures", str(tmp_path / "f"),
                   "--tables", str(tmp_path / "t"), "--summary", str(summary))  # fmt: skip
    refused(proc, f"tests.parquet: made from another scores table than {other} (rerun the test_roles step)", summary)


def test_fine_tuning_comparison_refuses_scores_of_other_inputs(made, tmp_path, tiny_bert):
    _, tokens, dump_dir, _ = made
    proc, before = score(tmp_path, tokens, dump_dir)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "b").mkdir()
    proc, tokens_b, _ = tokenize(tmp_path / "b", tiny_bert, GOOD)  # other inputs: one of the two sentences
    assert proc.returncode == 0, proc.stderr
    proc, dump_b = dump(tmp_path / "b", tiny_bert, tokens_b, max_length=64)
    assert proc.returncode == 0, proc.stderr
    proc, after = score(tmp_path / "b", tokens_b, dump_b)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "change.parquet"
    proc = run_cli("roles-compare", "--before", str(before), "--after", str(after), "--seeds", "1", "--task", "t",
                   "--output", str(out), "--agreement", str(tmp_path / "a.parquet"), "--by-layer", str(tmp_path / "l.parquet"),
                   "--summary", str(tmp_path / "s.md"), "--figure", str(tmp_path / "fig"), "--title", "t")  # fmt: skip
    refused(proc, "scores of other inputs than", out)


# ------------------------------------------------------------------ records of later artifacts (io.provenance)


def test_artifact_records_are_read_from_parquet_json_or_a_folder(tmp_path):
    """A missing artifact, an unreadable or absent record: one line naming the file and the rule to rerun."""
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.io.atomic import write_frame
    from headsieve.io.provenance import expect_provenance, provenance_metadata, read_artifact_provenance

    write_frame(pd.DataFrame({"x": [1]}), tmp_path / "t.parquet", metadata=provenance_metadata({"seed": 1, "spec": {"a": [1, 2]}}))
    assert expect_provenance(tmp_path / "t.parquet", {"seed": 1, "spec": {"a": (1, 2)}}, "r") == {"seed": 1, "spec": {"a": [1, 2]}}
    (tmp_path / "job").mkdir()
    (tmp_path / "job/metrics.json").write_text(json.dumps({"a@0.5": {}, "provenance": {"seed": 2}}))
    assert read_artifact_provenance(tmp_path / "job", "prune_finetune") == {"seed": 2}
    cases = [
        (tmp_path / "none.parquet", r"none\.parquet: missing \(rerun rule r\)"),
        (tmp_path / "job/other", r"other: missing"),
    ]
    (tmp_path / "bad.json").write_text("{not json")
    cases.append((tmp_path / "bad.json", r"bad\.json: unreadable \(.*\): rerun rule r"))
    (tmp_path / "list.json").write_text(json.dumps({"provenance": [1]}))
    cases.append((tmp_path / "list.json", r"list\.json: unreadable provenance record; rerun rule r"))
    (tmp_path / "bare.json").write_text(json.dumps({"eval": {}}))
    cases.append((tmp_path / "bare.json", r"bare\.json: records no provenance \(made by another tool or an older headsieve\): rerun rule r"))
    for path, message in cases:
        with pytest.raises(HeadsieveError, match=message):
            read_artifact_provenance(path, "r")
    with pytest.raises(HeadsieveError, match=r"t\.parquet: made for seed 1, not 2: rerun rule r \(it was made from other"):
        expect_provenance(tmp_path / "t.parquet", {"seed": 2}, "r")


def test_coverage_checks_name_the_cell_and_the_inputs():
    from headsieve.errors import HeadsieveError
    from headsieve.io.provenance import check_cells, check_same_cells

    check_cells([("a", {(1, "x")}), ("b", {(2, "x")})], "cell")
    with pytest.raises(HeadsieveError, match=r"^a: cell \(1, 'x'\) is also in a \(every cell exactly once\)$"):
        check_cells([("a", {(1, "x")}), ("a", {(1, "x")})], "cell")
    check_same_cells({"seed 1": {"x", "y"}, "seed 2": {"y", "x"}}, "strategy")
    with pytest.raises(HeadsieveError, match=r"^seed 2: no strategy 'y' \(the others have it"):
        check_same_cells({"seed 1": {"x", "y"}, "seed 2": {"x"}}, "strategy")
