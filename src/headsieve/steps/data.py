"""Steps of ``workflow/rules/data.smk``: verified downloads and parsed corpora."""

from __future__ import annotations

import logging

from headsieve.steps.settings import Corpus

log = logging.getLogger(__name__)


def fetch(url: str, sha256: str, output, member: str | None = None) -> None:
    """Rule ``fetch``: download ``url`` (``member`` of a zip/tar archive), check its sha256, write ``output``."""
    from headsieve.io.fetch import fetch as download

    download(url, sha256, output, member or None)


def parse(corpus: Corpus, parser: str, output) -> None:
    """Rule ``parse``: the texts of ``corpus`` (its ``spec`` is the entry of the corpus to parse) -> CoNLL-U with
    the trees of the installed spaCy pipeline ``parser`` (its name and version recorded)."""
    from headsieve.io.atomic import write_text
    from headsieve.io.parse import conllu_text, load_parser, parse_texts, parser_id
    from headsieve.io.sources import source_texts
    from headsieve.progress import progress_bar

    items = source_texts(corpus.key, corpus.spec, corpus.files)
    nlp = load_parser(parser)
    name = parser_id(nlp)
    log.info("parsing %d inputs of %s with %s", len(items), corpus.files, name)
    with progress_bar(total=len(items), desc="parse") as bar:
        sentences, stats = parse_texts(nlp, items, progress=bar)
    log.info("parsed: %s", stats.summary())
    write_text(conllu_text(sentences, name), output)
