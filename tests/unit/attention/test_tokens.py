"""Word-piece -> word alignment from the tokenizer's own word ids: repeats, punctuation, MWTs, unicode,
truncation and pairs, for a WordPiece (BERT) and a byte-level BPE (RoBERTa) tokenizer."""

from __future__ import annotations

import pytest

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import Sentence, read_conllu
from headsieve.io.glue import Example
from headsieve.tokens import CLS, REGULAR, SEP, encode_examples, encode_sentences, records_table

from support.corpora import GOOD, write


def sentence(tokens, heads=None, deprels=None, word_token=None, words=None):
    words = words or list(tokens)
    n = len(words)
    heads = heads or [0] + [1] * (n - 1)
    return Sentence(
        sent_id="t",
        text=" ".join(tokens),
        tokens=list(tokens),
        words=words,
        word_token=word_token or list(range(n)),
        heads=heads,
        deprels=deprels or ["root"] + ["dep"] * (n - 1),
        upos=["X"] * n,
    )


def pieces_of_token(rec, t):
    return [p for p, tok in zip(rec["pieces"], rec["piece_token"]) if tok == t]


@pytest.fixture(params=["bert", "roberta"])
def tokenizer(request, bert_tokenizer, roberta_tokenizer):
    return bert_tokenizer if request.param == "bert" else roberta_tokenizer


def test_repeated_words_get_their_own_pieces(tokenizer):
    toks = ["the", "cat", "saw", "the", "cat", "and", "the", "dog"]
    (rec,), _ = encode_sentences(tokenizer, [sentence(toks)], 64)
    firsts = [rec["piece_token"].index(t) for t in range(len(toks))]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(toks)  # in order, one run per word
    # the two "cat"s have the same pieces at different positions
    assert pieces_of_token(rec, 1) == pieces_of_token(rec, 4)
    assert rec["piece_token"].index(1) != rec["piece_token"].index(4)


def test_every_piece_belongs_to_one_token_and_specials_are_marked(tokenizer):
    toks = ["Hello", ",", "world", "!", "(", "naïve", "café", ")", "😀", "Zürich", "don't"]
    (rec,), stats = encode_sentences(tokenizer, [sentence(toks)], 64)
    pt = rec["piece_token"]
    assert rec["piece_special"][0] == CLS and rec["piece_special"][-1] == SEP
    assert pt[0] == -1 and pt[-1] == -1
    inner = pt[1:-1]
    assert all(s == REGULAR for s in rec["piece_special"][1:-1])
    assert inner == sorted(inner) and set(inner) == set(range(len(toks)))  # contiguous, every word covered
    assert rec["piece_segment"][0] == -1 and set(rec["piece_segment"][1:-1]) == {0}
    assert all(rec["word_kept"]) and stats.words_without_pieces == 0


def test_bert_pieces_spell_their_word(bert_tokenizer):
    toks = ["Unbelievably", "naïve", "CAFÉS", ",", "the", "the"]
    (rec,), _ = encode_sentences(bert_tokenizer, [sentence(toks)], 64)
    for t, word in enumerate(toks):
        spelled = bert_tokenizer.convert_tokens_to_string(pieces_of_token(rec, t)).replace(" ", "")
        assert spelled == word.lower().replace("ï", "i").replace("é", "e").replace("É", "e")


def test_multiword_token_words_share_their_token_pieces(tmp_path, tokenizer):
    (sent,) = read_conllu(write(tmp_path, GOOD))
    (rec,), stats = encode_sentences(tokenizer, [sent], 64)
    assert rec["words"] == ["They", "did", "n't", "go", "."]
    assert rec["word_token"] == [0, 1, 1, 2, 3]
    assert len(pieces_of_token(rec, 1)) >= 1
    assert stats.relations == 4 and stats.relations_within_token == 0  # did->go and n't->go cross tokens
    assert rec["word_head"] == [4, 4, 4, 0, 4]


def test_truncation_flags_words_and_relations(tokenizer):
    toks = [f"word{i}" for i in range(40)]
    heads = [0] + [1] * 39  # every word depends on word 1
    (rec,), stats = encode_sentences(tokenizer, [sentence(toks, heads=heads)], 16)
    assert rec["truncated"] and rec["n_pieces"] == 16
    assert rec["piece_special"][-1] == SEP  # the tokenizer's truncation keeps the closing special token
    kept = rec["word_kept"]
    n_kept = sum(kept)
    assert kept == [True] * n_kept + [False] * (40 - n_kept)  # a prefix survives
    full_pieces = {t: pieces_of_token(rec, t) for t in range(n_kept)}
    assert all(full_pieces[t] for t in range(n_kept))
    assert rec["n_words_lost"] == 40 - n_kept
    assert rec["n_relations_lost"] == 40 - n_kept == stats.relations_lost
    assert stats.truncated == 1


def test_pairs_have_segments_and_too_long_pairs_are_dropped(tokenizer):
    examples = [
        Example("0", "A man is eating.", "Someone eats.", "entailment", 0, 1),
        Example("1", " ".join(["long"] * 200), "short", "entailment", 0, 2),
        Example("2", "Hello world", None, "entailment", 0, 3),
    ]
    records, stats = encode_examples(tokenizer, examples, 64)
    assert [r["sentence_id"] for r in records] == ["0", "2"]
    assert stats.pairs_dropped == 1 and stats.dropped_ids == ["1"]
    rec = records[0]
    seg = rec["piece_segment"]
    specials = [i for i, s in enumerate(rec["piece_special"]) if s != REGULAR]
    assert all(seg[i] == -1 for i in specials)
    regular = [s for i, s in enumerate(seg) if i not in specials]
    first_b = regular.index(1)
    assert regular == [0] * first_b + [1] * (len(regular) - first_b)
    # words of segment b are numbered after those of a; word_segment agrees with the pieces
    for p, t in enumerate(rec["piece_token"]):
        if t >= 0:
            assert rec["word_segment"][t] == seg[p]
    assert rec["words"][: rec["word_segment"].count(0)] == ["A", "man", "is", "eating", "."]
    if tokenizer.model_input_names.count("token_type_ids"):
        assert rec["token_type_ids"][-1] == 1 and rec["token_type_ids"][0] == 0


def test_single_text_truncation_keeps_prefix(bert_tokenizer):
    ex = Example("0", "one two three four five six seven eight nine ten eleven twelve", None, "1", 1, 1)
    (rec,), stats = encode_examples(bert_tokenizer, [ex], 8)
    assert rec["truncated"] and rec["n_pieces"] == 8 and rec["words"] == ["one", "two", "three", "four", "five", "six"]
    assert rec["n_words_lost"] == 6 and stats.words_lost == 6


def test_max_length_beyond_model_fails(bert_tokenizer):
    with pytest.raises(HeadsieveError, match="longer than the model accepts"):
        encode_sentences(bert_tokenizer, [sentence(["a"])], 100000)


def test_records_table_schema(bert_tokenizer, tmp_path):
    recs, _ = encode_sentences(bert_tokenizer, [sentence(["a", "b"]), sentence(["c"])], 16)
    table = records_table(recs, "m", "c")
    assert table.num_rows == 2
    assert table.column("model").to_pylist() == ["m", "m"]
    assert table.column("n_pieces").to_pylist() == [4, 3]


def test_duplicates_are_found_and_the_first_copy_kept():
    from headsieve.tokens import drop_duplicates

    examples = [
        Example("0", "a b", "c", "x", 0, 2),
        Example("1", "a b", "d", "x", 0, 3),  # same first text, another second text: not a copy
        Example("2", "a b", "c", "y", 1, 4),  # the same pair (another label): a copy of 0
        Example("3", "a b", "c", "x", 0, 5),
    ]
    kept, dropped = drop_duplicates(examples, lambda e: (e.text_a, e.text_b), lambda e: e.example_id)
    assert [e.example_id for e in kept] == ["0", "1"]
    assert dropped == [("2", "0"), ("3", "0")]


def test_provenance_is_recorded_in_the_table(bert_tokenizer, tmp_path):
    import pyarrow.parquet as pq

    from headsieve.io.atomic import write_table
    from headsieve.tokens import read_provenance

    recs, _ = encode_sentences(bert_tokenizer, [sentence(["a", "b"])], 16)
    write_table(records_table(recs, "m", "c", {"max_length": 16, "input_sha256": "ab"}), tmp_path / "t.parquet")
    record = read_provenance(tmp_path / "t.parquet")
    assert record == {"max_length": 16, "input_sha256": "ab", "model": "m", "corpus": "c", "n_inputs": 1}
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 1
    write_table(records_table(recs, "m", "c"), tmp_path / "plain.parquet")
    assert read_provenance(tmp_path / "plain.parquet") == {}
