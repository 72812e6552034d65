"""Parallel sentence pairs from two CoNLL-U files aligned by ``# sent_id`` (the UD PUD treebanks).

The PUD treebanks hold the same 1,000 sentences in 19 languages with the same ``sent_id`` values; their
``# text =`` lines are the sentences.  Files need not list the sentences in the same order (Icelandic PUD
does not): pairs are matched by ``sent_id`` and returned in the *source* file's order.  The workflow takes
the two files from the config's ``corpora`` entries (``translation.languages`` names them per language).

Importance (which decides what to prune) must not be computed on the sentences BLEU is scored on:
:func:`split_pairs` makes a seeded, disjoint split into an importance pool and a test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_conllu


@dataclass(frozen=True)
class SentencePair:
    """One aligned sentence: its ``sent_id``, the source and the reference translation."""

    sent_id: str
    source: str
    target: str


def read_sentences(path: str | os.PathLike, max_sentences: int | None = None) -> dict[str, str]:
    """``{sent_id: text}`` of a CoNLL-U file, in file order (``# text =`` lines); duplicate ids fail."""
    texts: dict[str, str] = {}
    for sentence in read_conllu(path, max_sentences):
        if sentence.sent_id in texts:
            raise HeadsieveError(f"{path}:{sentence.line}: sent_id '{sentence.sent_id}' occurs twice")
        if not sentence.text.strip():
            raise HeadsieveError(f"{path}:{sentence.line}: sentence '{sentence.sent_id}' has no text")
        texts[sentence.sent_id] = sentence.text
    return texts


def align(
    source: dict[str, str], target: dict[str, str], *, strict: bool = True, names=("source", "target")
) -> list[SentencePair]:
    """Pairs of the sentences with the same ``sent_id``, in the source's order.

    ``strict``: every id must be in both (else a one-line error naming the first id missing); otherwise
    only the ids in both are kept (at least one).
    """
    if strict:
        for a, b, name_a, name_b in ((source, target, *names), (target, source, *names[::-1])):
            missing = [k for k in a if k not in b]
            if missing:
                raise HeadsieveError(
                    f"{len(missing)} sentence(s) of the {name_a} file are not in the {name_b} file "
                    f"(first: sent_id '{missing[0]}'); pass strict=False to keep the common ones"
                )
    pairs = [SentencePair(k, text, target[k]) for k, text in source.items() if k in target]
    if not pairs:
        raise HeadsieveError(f"the {names[0]} and {names[1]} files share no sent_id (not parallel treebanks?)")
    return pairs


def read_parallel(
    source_path: str | os.PathLike,
    target_path: str | os.PathLike,
    *,
    strict: bool = True,
    max_pairs: int | None = None,
) -> list[SentencePair]:
    """Sentence pairs of two parallel CoNLL-U files aligned by ``sent_id`` (source file order).

    ``max_pairs`` keeps the first pairs (in source order) after alignment.
    """
    pairs = align(read_sentences(source_path), read_sentences(target_path), strict=strict,
                  names=(str(source_path), str(target_path)))  # fmt: skip
    return pairs if max_pairs is None else pairs[:max_pairs]


def split_pairs(pairs: list[SentencePair], n_pool: int, seed: int) -> tuple[list[SentencePair], list[SentencePair]]:
    """A seeded split into (importance pool of ``n_pool`` pairs, test set of the rest), both in input order.

    The same (pairs, n_pool, seed) always gives the same split; the two parts are disjoint.
    """
    if not 0 <= n_pool < len(pairs):
        raise HeadsieveError(f"importance pool of {n_pool} pairs must leave test pairs (there are {len(pairs)})")
    pick = set(np.random.default_rng([int(seed), 8086]).permutation(len(pairs))[:n_pool].tolist())
    pool = [p for i, p in enumerate(pairs) if i in pick]
    test = [p for i, p in enumerate(pairs) if i not in pick]
    return pool, test


def read_pairs(source_path, target_path, pairs_spec: dict) -> tuple[list[SentencePair], list[SentencePair]]:
    """(importance pool, test pairs) of two parallel CoNLL-U files, split as ``pairs_spec`` says:
    ``importance_pool`` (pairs, default 200), ``split_seed`` (default 0), ``max_pool`` and ``max_test`` (the
    first pairs of each part; null = all)."""
    pairs = read_parallel(source_path, target_path)
    pool, test = split_pairs(pairs, int(pairs_spec.get("importance_pool", 200)), int(pairs_spec.get("split_seed", 0)))
    if pairs_spec.get("max_pool") is not None:
        pool = pool[: int(pairs_spec["max_pool"])]
    if pairs_spec.get("max_test") is not None:
        test = test[: int(pairs_spec["max_test"])]
    return pool, test
