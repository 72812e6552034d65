"""Tokenization with word alignment: corpus -> one row per input in ``tokens.parquet``.

The word-piece -> word alignment comes from the tokenizer's own ``word_ids`` (never from searching
strings, which mislocates repeated words).  UD sentences are fed as their surface tokens
(``is_split_into_words``); GLUE text is fed raw and the tokenizer's pre-tokenizer defines the words.

Truncation: inputs longer than ``max_length`` pieces are cut by the tokenizer.  A single sentence keeps
its surviving words (``word_kept`` marks words that lost a piece or all of them; relations touching
them are lost); a sentence pair that does not fit is dropped.  Both are counted in :class:`TokenStats`.

Duplicates: an input whose text (UD: its surface tokens; GLUE: its text pair) repeats an earlier one is
dropped before tokenizing (:func:`drop_duplicates`), logged with a warning and counted, so that the
per-sentence samples of the role tests hold independent inputs.

Provenance: ``tokens.parquet`` carries schema metadata ``headsieve_provenance`` (JSON): model, corpus,
max_length, the corpus spec, the input files' names and sha256, the counts above (see
:func:`read_provenance`); the dump checks it against its own model, corpus and max_length.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass, field

import pyarrow as pa

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import Sentence
from headsieve.io.glue import Example
from headsieve.io.provenance import provenance_metadata, read_file_provenance

log = logging.getLogger(__name__)

#: ``piece_special`` codes
REGULAR, CLS, SEP, OTHER_SPECIAL = 0, 1, 2, 3

TOKENS_SCHEMA = pa.schema(
    [
        ("model", pa.string()), ("corpus", pa.string()), ("sentence_index", pa.int32()), ("sentence_id", pa.string()),
        ("text", pa.string()), ("text_b", pa.string()), ("label", pa.string()),
        ("tokens", pa.list_(pa.string())), ("words", pa.list_(pa.string())), ("word_token", pa.list_(pa.int32())),
        ("word_head", pa.list_(pa.int32())), ("word_deprel", pa.list_(pa.string())),
        ("word_upos", pa.list_(pa.string())), ("word_segment", pa.list_(pa.int8())), ("word_kept", pa.list_(pa.bool_())),
        ("pieces", pa.list_(pa.string())), ("input_ids", pa.list_(pa.int32())), ("token_type_ids", pa.list_(pa.int8())),
        ("piece_token", pa.list_(pa.int32())), ("piece_segment", pa.list_(pa.int8())),
        ("piece_special", pa.list_(pa.int8())), ("n_pieces", pa.int32()), ("truncated", pa.bool_()),
        ("n_words_lost", pa.int32()), ("n_relations_lost", pa.int32()),
    ]
)  # fmt: skip


@dataclass
class TokenStats:
    inputs: int = 0
    kept: int = 0
    truncated: int = 0
    pairs_dropped: int = 0
    words_lost: int = 0
    relations: int = 0
    relations_lost: int = 0
    relations_within_token: int = 0
    words_without_pieces: int = 0
    duplicates: int = 0
    dropped_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.inputs} inputs, {self.kept} kept; {self.truncated} truncated, {self.pairs_dropped} pairs dropped "
            f"(too long); words lost to truncation {self.words_lost}; relations {self.relations}, lost to truncation "
            f"{self.relations_lost}, inside one multi-word token {self.relations_within_token}; words without pieces "
            f"{self.words_without_pieces}; duplicate inputs dropped {self.duplicates}"
        )


def _special_kinds(tokenizer, input_ids: list[int], word_ids: list[int | None]) -> list[int]:
    cls_ids = {i for i in (tokenizer.cls_token_id, tokenizer.bos_token_id) if i is not None}
    sep_ids = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None}
    kinds = []
    for tid, wid in zip(input_ids, word_ids):
        if wid is not None:
            kinds.append(REGULAR)
        elif tid in cls_ids:
            kinds.append(CLS)
        elif tid in sep_ids:
            kinds.append(SEP)
        else:
            kinds.append(OTHER_SPECIAL)
    return kinds


def _pieces_per_word(word_ids: list[int | None], n: int) -> list[int]:
    counts = [0] * n
    for w in word_ids:
        if w is not None:
            counts[w] += 1
    return counts


def _check_max_length(tokenizer, max_length: int) -> None:
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max < 10**6 and max_length > model_max:
        raise HeadsieveError(
            f"max_length {max_length} is longer than the model accepts ({model_max}); lower attention.max_length"
        )


def encode_sentences(tokenizer, sentences: list[Sentence], max_length: int) -> tuple[list[dict], TokenStats]:
    """Tokenize UD sentences by their surface tokens; one record per sentence (all are kept)."""
    _check_max_length(tokenizer, max_length)
    stats = TokenStats(inputs=len(sentences))
    batch = [s.tokens for s in sentences]
    full = tokenizer(batch, is_split_into_words=True, truncation=False, add_special_tokens=True, verbose=False)
    records = []
    for k, sent in enumerate(sentences):
        enc = full[k]
        truncated = len(enc.ids) > max_length
        full_counts = _pieces_per_word(enc.word_ids, len(sent.tokens))
        if truncated:
            enc = tokenizer(
                [sent.tokens], is_split_into_words=True, truncation=True, max_length=max_length, verbose=False
            )[0]
        counts = _pieces_per_word(enc.word_ids, len(sent.tokens))
        token_kept = [c > 0 and c == f for c, f in zip(counts, full_counts)]
        word_kept = [token_kept[t] for t in sent.word_token]
        stats.words_without_pieces += sum(1 for t in sent.word_token if full_counts[t] == 0)
        words_lost = sum(1 for t in sent.word_token if full_counts[t] > 0 and not token_kept[t])
        rel_lost = 0
        for w, h in enumerate(sent.heads):
            if h == 0:
                continue
            stats.relations += 1
            if sent.word_token[w] == sent.word_token[h - 1]:
                stats.relations_within_token += 1
            if not (word_kept[w] and word_kept[h - 1]):
                rel_lost += 1
        stats.truncated += int(truncated)
        stats.words_lost += words_lost
        stats.relations_lost += rel_lost
        records.append(
            {
                "sentence_index": k,
                "sentence_id": sent.sent_id,
                "text": sent.text,
                "text_b": None,
                "label": None,
                "tokens": list(sent.tokens),
                "words": list(sent.words),
                "word_token": list(sent.word_token),
                "word_head": list(sent.heads),
                "word_deprel": list(sent.deprels),
                "word_upos": list(sent.upos),
                "word_segment": [0] * len(sent.words),
                "word_kept": word_kept,
                **_piece_columns(tokenizer, enc),
                "truncated": truncated,
                "n_words_lost": words_lost,
                "n_relations_lost": rel_lost,
            }
        )
    stats.kept = len(records)
    return records, stats


def _piece_columns(tokenizer, enc, token_offsets: tuple[int, int] = (0, 0)) -> dict:
    word_ids = list(enc.word_ids)
    seq_ids = list(enc.sequence_ids)
    piece_token = []
    for w, s in zip(word_ids, seq_ids):
        piece_token.append(-1 if w is None else w + token_offsets[s or 0])
    type_ids = list(enc.type_ids) if enc.type_ids else [0] * len(enc.ids)
    return {
        "pieces": list(enc.tokens),
        "input_ids": list(enc.ids),
        "token_type_ids": type_ids,
        "piece_token": piece_token,
        "piece_segment": [-1 if w is None else (s or 0) for w, s in zip(word_ids, seq_ids)],
        "piece_special": _special_kinds(tokenizer, enc.ids, word_ids),
        "n_pieces": len(enc.ids),
    }


def _words_of(enc, text: str, sequence: int) -> list[str]:
    words, seen = [], set()
    for w, s in zip(enc.word_ids, enc.sequence_ids):
        if w is None or s != sequence or w in seen:
            continue
        seen.add(w)
        start, end = enc.word_to_chars(w, sequence)
        words.append(text[start:end])
    return words


def _segment_word_counts(enc, sequence: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for w, s in zip(enc.word_ids, enc.sequence_ids):
        if w is not None and s == sequence:
            counts[w] = counts.get(w, 0) + 1
    return counts


def encode_examples(tokenizer, examples: list[Example], max_length: int) -> tuple[list[dict], TokenStats]:
    """Tokenize GLUE-style examples (single texts or pairs) from raw text."""
    _check_max_length(tokenizer, max_length)
    stats = TokenStats(inputs=len(examples))
    records = []
    for k, ex in enumerate(examples):
        args = (ex.text_a,) if ex.text_b is None else (ex.text_a, ex.text_b)
        enc = tokenizer(*args, truncation=False, verbose=False)[0]
        truncated = len(enc.ids) > max_length
        if truncated and ex.text_b is not None:
            stats.pairs_dropped += 1
            stats.dropped_ids.append(ex.example_id)
            continue
        full_counts = _segment_word_counts(enc, 0)
        if truncated:
            enc = tokenizer(*args, truncation=True, max_length=max_length, verbose=False)[0]
        counts = _segment_word_counts(enc, 0)
        words_a = _words_of(enc, ex.text_a, 0)
        words_b = _words_of(enc, ex.text_b, 1) if ex.text_b is not None else []
        kept_a = [counts.get(w, 0) == full_counts[w] for w in sorted(counts)]
        words = words_a + words_b
        word_kept = kept_a + [True] * len(words_b)
        lost = len(full_counts) - sum(kept_a)
        stats.truncated += int(truncated)
        stats.words_lost += lost
        records.append(
            {
                "sentence_index": k,
                "sentence_id": ex.example_id,
                "text": ex.text_a,
                "text_b": ex.text_b,
                "label": ex.label,
                "tokens": words,
                "words": words,
                "word_token": list(range(len(words))),
                "word_head": None,
                "word_deprel": None,
                "word_upos": None,
                "word_segment": [0] * len(words_a) + [1] * len(words_b),
                "word_kept": word_kept,
                **_piece_columns(tokenizer, enc, (0, len(words_a))),
                "truncated": truncated,
                "n_words_lost": lost,
                "n_relations_lost": 0,
            }
        )
    stats.kept = len(records)
    if not records:
        raise HeadsieveError(f"no input fits max_length {max_length}: every pair is longer (raise attention.max_length)")
    return records, stats


def drop_duplicates(items: list, key, ids) -> tuple[list, list[tuple[str, str]]]:
    """``items`` without those whose ``key`` repeats an earlier one's; and (dropped id, first id) pairs."""
    first: dict = {}
    kept, dropped = [], []
    for item in items:
        k = key(item)
        if k in first:
            dropped.append((ids(item), first[k]))
        else:
            first[k] = ids(item)
            kept.append(item)
    return kept, dropped


def file_sha256(paths) -> str:
    """sha256 over the bytes of the files, in order (one file: its plain sha256)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) == 1:
        digest = hashlib.sha256()
        with open(paths[0], "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()




def records_table(records: list[dict], model: str, corpus: str, provenance: dict | None = None) -> pa.Table:
    """The tokens table; ``provenance`` (what it was made from) goes into its schema metadata."""
    for r in records:
        r["model"] = model
        r["corpus"] = corpus
    table = pa.Table.from_pylist(records, schema=TOKENS_SCHEMA)
    if provenance is not None:
        record = dict(provenance, model=model, corpus=corpus, n_inputs=len(records))
        table = table.replace_schema_metadata(provenance_metadata(record))
    return table


def read_provenance(path) -> dict:
    """The provenance record of a tokens.parquet (empty when it has none)."""
    return read_file_provenance(path, "tokens", "rerun the tokenize step")


def is_punctuation(text: str) -> bool:
    """True when every character is Unicode punctuation or a symbol (used where no UPOS tag exists)."""
    return bool(text) and all(unicodedata.category(c)[0] in "PS" for c in text)
