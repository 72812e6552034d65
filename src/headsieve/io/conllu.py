"""CoNLL-U reader (Universal Dependencies), with the checks UD defines for basic trees.

UD distinguishes *surface tokens* (what is written: ``didn't``) from *syntactic words* (``did``, ``n't``).
A multi-word token line (ID ``29-30``) gives the surface form of a range of words; the words inside
it carry the tree.  Empty nodes (ID ``8.1``) belong to the enhanced graph only and have no basic head:
they are skipped.  A model reads the surface tokens; each word is linked to the surface token it sits
in (``word_token``), so the word pieces of a word are the pieces of its surface token.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from headsieve.errors import HeadsieveError

_INT = re.compile(r"^[1-9][0-9]*$")
_RANGE = re.compile(r"^([1-9][0-9]*)-([1-9][0-9]*)$")
_EMPTY = re.compile(r"^[0-9]+\.[1-9][0-9]*$")


@dataclass
class Sentence:
    """One UD sentence: surface tokens, syntactic words and the basic dependency tree."""

    sent_id: str
    text: str
    tokens: list[str] = field(default_factory=list)  # surface tokens, in order
    words: list[str] = field(default_factory=list)  # syntactic words (FORM), in order
    word_token: list[int] = field(default_factory=list)  # index into ``tokens`` for each word
    heads: list[int] = field(default_factory=list)  # HEAD per word: 0 = root, else 1-based word index
    deprels: list[str] = field(default_factory=list)  # DEPREL per word (with subtypes, e.g. nmod:poss)
    upos: list[str] = field(default_factory=list)
    line: int = 0  # line number (1-based) where the sentence starts


def read_text(path: str | os.PathLike) -> str:
    """Read a whole file as UTF-8; a file that is not UTF-8 fails with the line and byte offset."""
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise HeadsieveError(f"{path}: file not found") from None
    except OSError as err:
        raise HeadsieveError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise HeadsieveError(f"{path}:{line}: not UTF-8 (byte offset {err.start}); convert the file to UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def read_conllu(path, max_sentences: int | None = None) -> list[Sentence]:
    """Parse and check a CoNLL-U file (or a list of files, read in order); return its sentences in order.

    Checks (each a one-line :class:`HeadsieveError` naming file and line): 10 tab-separated columns,
    well-formed IDs in sequence, HEAD in range, a DEPREL other than ``_``, exactly one root, no cycle,
    multi-word ranges that cover existing words and do not overlap.  An empty file fails too.
    """
    if isinstance(path, (list, tuple)):
        sentences = []
        for one in path:
            left = None if max_sentences is None else max_sentences - len(sentences)
            if left == 0:
                break
            sentences += read_conllu(one, left)
        return sentences
    text = read_text(path)
    sentences: list[Sentence] = []
    block: list[tuple[int, str]] = []
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line.strip() == "":
            if block:
                sentences.append(_parse_block(path, block, len(sentences)))
                block = []
                if max_sentences is not None and len(sentences) >= max_sentences:
                    break
            continue
        block.append((lineno, line))
    if block and (max_sentences is None or len(sentences) < max_sentences):
        sentences.append(_parse_block(path, block, len(sentences)))
    if not sentences:
        raise HeadsieveError(f"{path}: no sentences (empty corpus)")
    return sentences


def _parse_block(path, block: list[tuple[int, str]], index: int) -> Sentence:
    sent = Sentence(sent_id="", text="", line=block[0][0])
    ranges: list[tuple[int, int, str, int]] = []  # (first, last, form, lineno)
    word_lines: list[int] = []
    for lineno, line in block:
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep and key.strip() == "sent_id":
                sent.sent_id = value.strip()
            elif sep and key.strip() == "text":
                sent.text = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise HeadsieveError(f"{path}:{lineno}: expected 10 tab-separated columns, found {len(cols)}")
        tid, form, _lemma, upos, _xpos, _feats, head, deprel, _deps, _misc = cols
        if not form.strip():
            raise HeadsieveError(f"{path}:{lineno}: empty FORM (every word and multi-word token needs its text)")
        m = _RANGE.match(tid)
        if m:
            first, last = int(m.group(1)), int(m.group(2))
            if last <= first or first != len(sent.words) + 1:
                raise HeadsieveError(f"{path}:{lineno}: bad multi-word token range '{tid}'")
            if ranges and first <= ranges[-1][1]:
                raise HeadsieveError(
                    f"{path}:{lineno}: multi-word token range '{tid}' overlaps '{ranges[-1][0]}-{ranges[-1][1]}' "
                    f"(line {ranges[-1][3]})"
                )
            ranges.append((first, last, form, lineno))
            continue
        if _EMPTY.match(tid):
            continue  # empty node: enhanced graph only
        if not _INT.match(tid):
            raise HeadsieveError(f"{path}:{lineno}: bad word ID '{tid}'")
        if int(tid) != len(sent.words) + 1:
            raise HeadsieveError(f"{path}:{lineno}: word ID {tid} out of sequence (expected {len(sent.words) + 1})")
        if not (head == "0" or _INT.match(head)):
            raise HeadsieveError(f"{path}:{lineno}: HEAD '{head}' is not a word index")
        if deprel.strip() in ("", "_"):
            raise HeadsieveError(f"{path}:{lineno}: DEPREL '{deprel}' is unspecified (every word needs its relation)")
        sent.words.append(form)
        sent.heads.append(int(head))
        sent.deprels.append(deprel)
        sent.upos.append(upos)
        word_lines.append(lineno)
    n = len(sent.words)
    if not sent.sent_id:
        sent.sent_id = f"s{index + 1}"
    if n == 0:
        raise HeadsieveError(f"{path}:{sent.line}: sentence '{sent.sent_id}' has no words")
    for k, h in enumerate(sent.heads):
        if h > n:
            raise HeadsieveError(f"{path}:{word_lines[k]}: HEAD {h} out of range 0..{n} in sentence '{sent.sent_id}'")
        if h == k + 1:
            raise HeadsieveError(f"{path}:{word_lines[k]}: word {k + 1} is its own HEAD in sentence '{sent.sent_id}'")
    roots = [k + 1 for k, h in enumerate(sent.heads) if h == 0]
    if not roots:
        raise HeadsieveError(f"{path}:{sent.line}: sentence '{sent.sent_id}' has no root (no word with HEAD 0)")
    if len(roots) > 1:
        raise HeadsieveError(
            f"{path}:{word_lines[roots[1] - 1]}: sentence '{sent.sent_id}' has {len(roots)} roots (words {roots})"
        )
    cycle = _find_cycle(sent.heads)
    if cycle:
        raise HeadsieveError(
            f"{path}:{word_lines[cycle[0] - 1]}: sentence '{sent.sent_id}' has a cycle in its tree "
            f"(words {' -> '.join(map(str, cycle + [cycle[0]]))})"
        )
    # surface tokens: a multi-word range gives one token; every other word is its own token
    range_at = {first: (last, form, lineno) for first, last, form, lineno in ranges}
    k = 1
    while k <= n:
        if k in range_at:
            last, form, lineno = range_at[k]
            if last > n:
                raise HeadsieveError(f"{path}:{lineno}: multi-word token {k}-{last} runs past the last word {n}")
            sent.tokens.append(form)
            sent.word_token.extend([len(sent.tokens) - 1] * (last - k + 1))
            k = last + 1
        else:
            sent.tokens.append(sent.words[k - 1])
            sent.word_token.append(len(sent.tokens) - 1)
            k += 1
    if not sent.text:
        sent.text = " ".join(sent.tokens)
    return sent


def _find_cycle(heads: list[int]) -> list[int] | None:
    """Return the words (1-based) of a cycle in the head function, or None for a tree."""
    n = len(heads)
    state = [0] * (n + 1)  # 0 unvisited, 1 on current path, 2 done (reaches the root)
    for start in range(1, n + 1):
        path = []
        node = start
        while node != 0 and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = heads[node - 1]
        if node != 0 and state[node] == 1:
            return path[path.index(node):]
        for p in path:
            state[p] = 2
    return None
