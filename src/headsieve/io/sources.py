"""A corpus read from its config entry: the reader its format names, with its options.

``read_examples`` and ``read_sentences`` turn one ``corpora.<key>`` entry and its file(s) into examples or
sentences; ``source_texts`` gives the raw text of each input (what a parser reads).
"""

from __future__ import annotations

from headsieve.errors import HeadsieveError


def read_sentences(spec: dict, paths):
    """The sentences of a CoNLL-U corpus entry (``max_sentences`` honoured)."""
    from headsieve.io.conllu import read_conllu

    return read_conllu(paths, spec.get("max_sentences"))


def read_examples(spec: dict, paths):
    """The examples of a GLUE or XNLI corpus entry (task, columns, header, language, ``max_sentences``)."""
    from headsieve.io.glue import read_glue, task_spec

    task = "xnli" if spec["format"] == "xnli" else spec["task"]
    custom = spec if task == "custom" else None
    return read_glue(paths, task_spec(task, custom), spec.get("header"), spec.get("language"), spec.get("max_sentences"))


def source_texts(corpus: str, spec: dict, paths) -> list[tuple[str, str]]:
    """(input id, raw text) of every input of a single-text corpus, in order.

    A treebank gives each sentence's ``# text`` (its surface tokens joined when the comment is missing); a
    GLUE corpus its first text.  Sentence pairs are refused: a parser gives one tree per input.
    """
    if spec["format"] == "conllu":
        return [(s.sent_id, s.text) for s in read_sentences(spec, paths)]
    examples = read_examples(spec, paths)
    pairs = [ex for ex in examples if ex.text_b is not None]
    if pairs:
        raise HeadsieveError(
            f"corpus '{corpus}': its inputs are sentence pairs (line {pairs[0].line}); a parser gives one tree per "
            "input, so parse a single-sentence corpus"
        )
    return [(ex.example_id, ex.text_a) for ex in examples]
