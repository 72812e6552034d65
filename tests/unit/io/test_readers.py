"""CoNLL-U and GLUE/XNLI readers: real files parse; malformed files fail with file:line."""

from __future__ import annotations

import pytest

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_conllu
from headsieve.io.glue import TASKS, read_glue, task_spec

from support.corpora import GOOD, write

def test_multiword_tokens_and_empty_nodes(tmp_path):
    (sent,) = read_conllu(write(tmp_path, GOOD))
    assert sent.sent_id == "a1"
    assert sent.tokens == ["They", "didn't", "go", "."]
    assert sent.words == ["They", "did", "n't", "go", "."]  # empty node 3.1 skipped
    assert sent.word_token == [0, 1, 1, 2, 3]
    assert sent.heads == [4, 4, 4, 0, 4]
    assert sent.deprels == ["nsubj", "aux", "advmod", "root", "punct"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("4\tnsubj\t_\t_", "4\tnsubj\t_"), "x.conllu:3: expected 10 tab-separated columns, found 9"),
        (lambda t: t.replace("\t4\tnsubj", "\t9\tnsubj"), "x.conllu:3: HEAD 9 out of range 0..5"),
        (lambda t: t.replace("\t0\troot", "\t1\troot").replace("\t4\tnsubj", "\t0\tnsubj"), None),
        (lambda t: t.replace("\t0\troot", "\t5\troot"), "has no root"),
        (lambda t: t.replace("\t4\tnsubj", "\t0\tnsubj"), "has 2 roots"),
        (lambda t: t.replace("\t4\tnsubj", "\tx\tnsubj"), "x.conllu:3: HEAD 'x' is not a word index"),
        (lambda t: t.replace("5\t.\t.", "7\t.\t."), "x.conllu:9: word ID 7 out of sequence"),
    ],
)
def test_malformed_conllu(tmp_path, edit, message):
    text = edit(GOOD)
    if message is None:  # a valid rearrangement: word 1 becomes the root, word 4 hangs from it
        (sent,) = read_conllu(write(tmp_path, text))
        assert sent.heads == [0, 4, 4, 1, 4] and sent.deprels[0] == "nsubj"
        return
    with pytest.raises(HeadsieveError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_conllu(write(tmp_path, text))


def test_cycle_is_reported_with_its_words(tmp_path):
    text = GOOD.replace("1\tThey\tthey\tPRON\tPRP\t_\t4", "1\tThey\tthey\tPRON\tPRP\t_\t2").replace(
        "2\tdid\tdo\tAUX\tVBD\t_\t4", "2\tdid\tdo\tAUX\tVBD\t_\t1"
    )
    with pytest.raises(HeadsieveError, match=r"x\.conllu:\d+: sentence 'a1' has a cycle in its tree \(words 1 -> 2 -> 1\)"):
        read_conllu(write(tmp_path, text))


def test_empty_and_missing_and_not_utf8(tmp_path):
    with pytest.raises(HeadsieveError, match="no sentences"):
        read_conllu(write(tmp_path, "\n\n"))
    with pytest.raises(HeadsieveError, match="file not found"):
        read_conllu(tmp_path / "nope.conllu")
    bad = tmp_path / "latin1.conllu"
    bad.write_bytes(GOOD.replace("They", "Th\xe9y").encode("latin-1"))
    with pytest.raises(HeadsieveError, match=r"latin1\.conllu:2: not UTF-8"):
        read_conllu(bad)


def test_real_treebanks_parse(data):
    ewt = read_conllu(data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu")
    assert len(ewt) == 2001
    assert sum(len(s.words) for s in ewt) == 25147  # word count given in the data README
    assert any(len(s.tokens) < len(s.words) for s in ewt)  # multi-word tokens exist
    pud = read_conllu(data / "ud/UD_German-PUD/de_pud-ud-test.conllu")
    assert len(pud) == 1000 and pud[0].sent_id == "n01001011"


@pytest.mark.parametrize(
    "task, path, n, pair",
    [
        ("sst2", "glue/SST-2/test.tsv", 872, False),
        ("cola", "glue/CoLA/raw/in_domain_dev.tsv", 527, False),
        ("rte", "glue/RTE/dev.tsv", 277, True),
        ("rte", "glue/RTE/val.tsv", 363, True),  # no header line
        ("mrpc", "glue/MRPC/test.tsv", 1725, True),  # header with a UTF-8 BOM
        ("mrpc", "glue/MRPC/train.tsv", 2576, True),  # no header line
        ("qnli", "glue/QNLI/dev.tsv", 5463, True),
        ("mnli", "glue/MNLI-kshot/16-13/train.tsv", 48, True),
        ("xnli", "xnli/de/test.txt", 5010, True),
    ],
)
def test_real_glue_files(data, task, path, n, pair):
    examples = read_glue(data / path, task_spec(task))
    assert len(examples) == n
    assert all((e.text_b is not None) == pair for e in examples)
    assert {e.label for e in examples} == set(TASKS[task].labels)


def test_glue_bad_label_and_missing_column(tmp_path):
    path = write(tmp_path, "sentence\tlabel\ngood film\t1\nbad film\tmaybe\n", "sst.tsv")
    with pytest.raises(HeadsieveError, match=r"sst\.tsv:3: unknown label 'maybe'"):
        read_glue(path, task_spec("sst2"))
    path = write(tmp_path, "index\tsentence1\tlabel\n0\ta\tentailment\n", "rte.tsv")
    with pytest.raises(HeadsieveError, match=r"rte\.tsv:1: header has no column 'sentence2'"):
        read_glue(path, task_spec("rte"))
    path = write(tmp_path, "0\tonly two\n", "rte2.tsv")
    with pytest.raises(HeadsieveError, match=r"rte2\.tsv:1: expected at least 4 tab-separated columns, found 2"):
        read_glue(path, task_spec("rte"))


def test_xnli_release_selects_language(tmp_path):
    header = "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2"
    rows = ["de\tneutral\t_\t_\t_\t_\tEin Satz.\tNoch einer.", "fr\tentailment\t_\t_\t_\t_\tUne phrase.\tUne autre."]
    path = write(tmp_path, "\n".join([header] + rows) + "\n", "xnli.dev.tsv")
    (ex,) = read_glue(path, task_spec("xnli"), language="fr")
    assert (ex.text_a, ex.label) == ("Une phrase.", "entailment")


def test_custom_task_columns(tmp_path):
    path = write(tmp_path, "id\ttext\ty\n1\thello\tpos\n2\tbye\tneg\n", "custom.tsv")
    spec = task_spec("custom", {"columns": {"text_a": "text", "label": "y"}, "labels": ["neg", "pos"]})
    ex = read_glue(path, spec)
    assert [(e.text_a, e.label_id) for e in ex] == [("hello", 1), ("bye", 0)]


# ---------------------------------------------------------------- issue 18: inputs that used to pass silently

MNLI_HEADER = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t" \
    "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"  # fmt: skip


def mnli_row(s1, s2, label="neutral"):
    return f"0\t1\t1n\tgov\t_\t_\t_\t_\t{s1}\t{s2}\t{label}\t{label}"


def test_glue_row_with_a_tab_inside_a_text_is_refused(tmp_path):
    """A quoted sentence1 holding a tab would shift every later column (text_b and the label)."""
    good = mnli_row("Prices rise.", "Costs go up.", "entailment")
    bad = mnli_row('"Price caps\tmay sound attractive."', "They do.", "neutral")
    path = write(tmp_path, "\n".join([MNLI_HEADER, good, bad]) + "\n", "mnli.tsv")
    with pytest.raises(HeadsieveError, match=r"mnli\.tsv:3: 13 tab-separated columns, but line 1 has 12"):
        read_glue(path, task_spec("mnli"))
    assert len(read_glue(write(tmp_path, f"{MNLI_HEADER}\n{good}\n", "ok.tsv"), task_spec("mnli"))) == 1


def test_glue_row_with_extra_columns_is_refused(tmp_path):
    path = write(tmp_path, "sentence\tlabel\ngood film\t1\nbad film\t0\textra\n", "sst.tsv")
    with pytest.raises(HeadsieveError, match=r"sst\.tsv:3: 3 tab-separated columns, but line 1 has 2"):
        read_glue(path, task_spec("sst2"))
    headerless = write(tmp_path, "a\tb\tentailment\nc\td\tneutral\tx\n", "xnli.txt")
    with pytest.raises(HeadsieveError, match=r"xnli\.txt:2: 4 tab-separated columns, but most lines have 3"):
        read_glue(headerless, task_spec("xnli"))


@pytest.mark.parametrize("task, good, bad", [
    ("mrpc", ["0\t21\t22\tShe went home.\tShe left.", "1\t31\t32\tA b.\tA c."], "1\t11\t12\tHe said.\tShe\tleft."),
    ("rte", ["1\tA dog barks.\tA dog is loud.\tentailment", "2\tBirds fly.\tFish fly.\tnot_entailment"],
     "0\tA cat sat.\tA cat is\tsitting.\tentailment"),
])  # fmt: skip
def test_headerless_glue_file_blames_a_bad_first_row_on_line_1(tmp_path, task, good, bad):
    """Without a header no line is the reference: a first row with a tab inside its last text (which keeps
    the label where it is) is blamed on line 1, not on the good row after it."""
    path = write(tmp_path, "\n".join([bad] + good) + "\n", f"{task}.tsv")
    with pytest.raises(HeadsieveError, match=rf"{task}\.tsv:1: (6|5) tab-separated columns, but most lines have (5|4)"):
        read_glue(path, task_spec(task), header=False)
    path = write(tmp_path, "\n".join(good + [bad]) + "\n", f"{task}_last.tsv")  # the same row last: blamed there
    with pytest.raises(HeadsieveError, match=rf"{task}_last\.tsv:3: "):
        read_glue(path, task_spec(task), header=False)
    assert len(read_glue(write(tmp_path, "\n".join(good) + "\n", "ok.tsv"), task_spec(task), header=False)) == 2


def test_glue_header_names_with_trailing_space(tmp_path):
    """'label ' in a header is the column 'label' (it used to be reported as an unknown label 'label')."""
    path = write(tmp_path, "sentence \tlabel \ngood film\t1\nbad film\t0\n", "sst.tsv")
    assert [(e.text_a, e.label) for e in read_glue(path, task_spec("sst2"))] == [("good film", "1"), ("bad film", "0")]


@pytest.mark.parametrize(
    "second, at, message",
    [
        ("2-3", 3, "x.conllu:4: multi-word token range '2-3' overlaps '1-2' (line 2)"),  # starts inside 1-2
        ("1-3", 2, "x.conllu:3: multi-word token range '1-3' overlaps '1-2' (line 2)"),  # a second range at word 1
    ],
)
def test_overlapping_or_duplicate_multiword_ranges(tmp_path, second, at, message):
    """They used to pass: the later range silently won, or '2-3' vanished."""
    lines = [
        "# sent_id = o1",
        "1-2\tdidnt\t_\t_\t_\t_\t_\t_\t_\t_",
        "1\tdid\tdo\tAUX\t_\t_\t3\taux\t_\t_",
        "2\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\t_",
        "3\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_",
    ]
    lines.insert(at, f"{second}\tntgo\t_\t_\t_\t_\t_\t_\t_\t_")
    with pytest.raises(HeadsieveError) as err:
        read_conllu(write(tmp_path, "\n".join(lines) + "\n\n"))
    assert message in str(err.value)


def test_unspecified_deprel_is_refused(tmp_path):
    path = write(tmp_path, GOOD.replace("\t4\tnsubj\t", "\t4\t_\t"))
    with pytest.raises(HeadsieveError, match=r"x\.conllu:3: DEPREL '_' is unspecified"):
        read_conllu(path)
