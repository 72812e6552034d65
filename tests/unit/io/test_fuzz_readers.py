"""Property-based fuzzing (hypothesis) of the CoNLL-U, GLUE TSV and XNLI readers and of the dump reader.

Random mutations of valid files must either parse to a structure that passes the project's own consistency
checks, or raise the project's one-line error (with a line number where a line is at fault); never another
exception, never a silent inconsistency.  Example counts keep the whole file well under two minutes.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hypothesis import HealthCheck, given, settings  # the test extra installs it
from hypothesis import strategies as st

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import _find_cycle, read_conllu
from headsieve.io.glue import read_glue, task_spec
from headsieve.io.shards import INDEX_NAME, ShardWriter, iter_dump, read_index

from support.corpora import GOOD

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", "120")), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

EXTRA = """# sent_id = b2
# text = From the AP comes this story :
1\tFrom\tfrom\tADP\tIN\t_\t3\tcase\t3:case\t_
2\tthe\tthe\tDET\tDT\t_\t3\tdet\t3:det\t_
3\tAP\tAP\tPROPN\tNNP\t_\t4\tobl\t4:obl\t_
4\tcomes\tcome\tVERB\tVBZ\t_\t0\troot\t0:root\t_
5\tthis\tthis\tDET\tDT\t_\t6\tdet\t6:det\t_
6\tstory\tstory\tNOUN\tNN\t_\t4\tnsubj\t4:nsubj\t_
7\t:\t:\tPUNCT\t:\t_\t4\tpunct\t4:punct\t_

"""

SST2 = "sentence\tlabel\nit 's a charming journey .\t1\nunflinchingly bleak\t0\na fine film\t1\n"
XNLI = "Ein Satz .\tNoch einer .\tneutral\nZwei Saetze .\tZwei .\tentailment\nDrei .\tVier .\tcontradiction\n"
MNLI = (
    "index\tpromptID\tpairID\tgenre\tb1\tb2\tp1\tp2\tsentence1\tsentence2\tlabel1\tgold_label\n"
    "0\t1\t1n\tgov\t_\t_\t_\t_\tPrices rise .\tCosts go up .\tentailment\tentailment\n"
    "1\t2\t2c\tgov\t_\t_\t_\t_\tIt rains .\tIt is dry .\tcontradiction\tcontradiction\n"
)

PIECES = ["\t", "\n", "\n\n", "-", ".", "_", "0", "1", "2", "9", "#", "=", " ", "a", "\r", "1-2", "\ufeff", "é"]


def mutate(text: str, edits) -> str:
    """Apply (kind, position, piece) edits: delete a character, insert a piece, duplicate or drop a line."""
    for kind, where, piece in edits:
        if not text:
            text = piece
            continue
        k = where % len(text)
        if kind == 0:
            text = text[:k] + text[k + 1 :]
        elif kind == 1:
            text = text[:k] + piece + text[k:]
        else:
            lines = text.split("\n")
            j = where % len(lines)
            if kind == 2:
                lines.insert(j, lines[j])
            else:
                del lines[j]
            text = "\n".join(lines)
    return text


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.sampled_from(PIECES)), min_size=1, max_size=4)


def write(text: str, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line_error(err: HeadsieveError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    whole_file = ("no sentences (empty corpus)", "no examples")
    assert re.match(re.escape(str(path)) + r":\d+: ", message) or any(w in message for w in whole_file), message


def check_sentence(sent) -> None:
    """The consistency every later stage relies on."""
    n = len(sent.words)
    assert n >= 1 and len(sent.heads) == len(sent.deprels) == len(sent.upos) == len(sent.word_token) == n
    assert sent.word_token == sorted(sent.word_token)
    assert set(sent.word_token) == set(range(len(sent.tokens)))  # every token holds a word, in order
    assert all(0 <= h <= n for h in sent.heads) and sent.heads.count(0) == 1
    assert all(h != k + 1 for k, h in enumerate(sent.heads))
    assert _find_cycle(sent.heads) is None
    assert all(d not in ("", "_") for d in sent.deprels)
    assert all(t for t in sent.tokens)


@FUZZ
@given(EDITS)
def test_fuzz_conllu(edits):
    path = write(mutate(GOOD + EXTRA, edits), "x.conllu")
    try:
        sentences = read_conllu(path)
    except HeadsieveError as err:
        assert_one_line_error(err, path)
        return
    ids = [s.sent_id for s in sentences]
    assert len(sentences) >= 1
    for sent in sentences:
        check_sentence(sent)
    assert all(ids)


def check_examples(examples, spec, pair: bool) -> None:
    lines = [e.line for e in examples]
    assert lines == sorted(set(lines))
    for e in examples:
        assert e.label in spec.labels and spec.labels[e.label_id] == e.label
        assert e.text_a and "\t" not in e.text_a and "\n" not in e.text_a
        assert (e.text_b is not None) == pair
        if pair:
            assert e.text_b and "\t" not in e.text_b


@pytest.mark.parametrize("task, text, pair", [("sst2", SST2, False), ("xnli", XNLI, True), ("mnli", MNLI, True)])
@FUZZ
@given(edits=EDITS)
def test_fuzz_glue_and_xnli(task, text, pair, edits):
    spec = task_spec(task)
    path = write(mutate(text, edits), f"{task}.tsv")
    try:
        examples = read_glue(path, spec)
    except HeadsieveError as err:
        assert_one_line_error(err, path)
        return
    assert examples
    check_examples(examples, spec, pair)


# ---------------------------------------------------------------- the dump reader


def make_dump(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, "m", "c", shard_bytes=400)
    for k, T in enumerate((3, 5, 4, 2)):
        att = rng.dirichlet(np.ones(T), size=(2, 2, T)).astype(np.float16)
        writer.add(k, f"s{k}", att, list(range(T)))
    writer.close()


COLUMNS = ["sentence_index", "shard", "offset", "n_pieces", "n_layers", "n_heads"]
VALUES = {
    "sentence_index": st.integers(-2, 6),
    "shard": st.sampled_from(["shard-00000.npz", "shard-00001.npz", "shard-00009.npz", "../x.npz", "/etc/passwd",
                              ".hidden.npz", "a/b.npz", ""]),  # fmt: skip
    "offset": st.integers(-10, 200),
    "n_pieces": st.integers(-1, 8),
    "n_layers": st.integers(-1, 3),
    "n_heads": st.integers(-1, 3),
}
INDEX_EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 3), st.sampled_from(COLUMNS), st.integers(0, 10_000)),
    st.tuples(st.just("dup"), st.integers(0, 3), st.just(""), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just(""), st.just(0)),
)


@FUZZ
@given(st.lists(INDEX_EDIT, min_size=1, max_size=3), st.data())
def test_fuzz_dump_index(edits, data):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-dump-"))
    make_dump(folder)
    table = pq.read_table(folder / INDEX_NAME)
    rows = table.to_pylist()
    for kind, k, column, _ in edits:
        if not rows:
            break
        k %= len(rows)
        if kind == "set":
            rows[k][column] = data.draw(VALUES[column])
        elif kind == "dup":
            rows.append(dict(rows[k]))
        else:
            del rows[k]
    schema = pa.schema([f if f.name not in COLUMNS else pa.field(f.name, pa.int64() if f.name != "shard" else pa.string())
                        for f in table.schema])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(table.schema.metadata), folder / INDEX_NAME)
    try:
        index = read_index(folder)
        got = list(iter_dump(folder))
    except HeadsieveError as err:
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    # accepted: every sentence once, each array of its row's shape with rows summing to 1
    assert index.num_rows == len(got) == len({r["sentence_index"] for r, _ in got})
    for row, att in got:
        assert att.shape == (row["n_layers"], row["n_heads"], row["n_pieces"], row["n_pieces"])
        np.testing.assert_allclose(att.astype(np.float32).sum(-1), 1.0, atol=2e-2)


@FUZZ
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_fuzz_dump_shard_bytes(where, junk):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-shard-"))
    make_dump(folder)
    shard = sorted(folder.glob("shard-*.npz"))[where % 2]
    raw = bytearray(shard.read_bytes())
    k = where % len(raw)
    raw[k : k + len(junk)] = junk
    shard.write_bytes(bytes(raw))
    try:
        got = list(iter_dump(folder))
    except HeadsieveError as err:
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    assert len(got) == 4
    for row, att in got:
        assert np.isfinite(att.astype(np.float32)).all()
        np.testing.assert_allclose(att.astype(np.float32).sum(-1), 1.0, atol=2e-2)
