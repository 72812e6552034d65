"""Dependency trees for text without gold trees, from a spaCy pipeline installed from PyPI.

The syntactic roles need a tree per input.  UD treebanks bring gold trees; GLUE sentences (the inputs the
reference computed its role maps on) do not, so they are parsed here, one tree per input, and written as
CoNLL-U, which the rest of the pipeline reads like any treebank.  The parser's name and version go into
every sentence's comments (``# parser = ...``) and into the rule's log, so a role map says where its trees
came from.

What parsing changes: spaCy tokenises by its own rules and labels with its own scheme (English pipelines:
ClearNLP labels such as ``dobj``, ``prep``, ``pobj``, not UD's ``obj``, ``case``, ``obl``), so relation
roles of a parsed corpus are not the same set as a treebank's; the union role ``syntactic`` takes the
relations of :data:`headsieve.roles.sieve.CORE_RELATIONS` that the parser uses.  spaCy may split one input
into several sentences (several roots); the inputs here are single units, so every root after the first
is attached to the first root with the relation ``parataxis`` and the count is reported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import Sentence

#: relation given to the roots of the second and later sentences spaCy finds inside one input
EXTRA_ROOT_RELATION = "parataxis"


@dataclass
class ParseStats:
    inputs: int = 0
    words: int = 0
    extra_roots: int = 0  # inputs spaCy split into more than one sentence (roots re-attached)

    def summary(self) -> str:
        return f"{self.inputs} inputs, {self.words} words; {self.extra_roots} split by the parser (roots joined)"


def load_parser(name: str):
    """The spaCy pipeline installed as package ``name`` (e.g. ``en_core_web_sm``), parser included."""
    try:
        import spacy
    except ImportError:
        raise HeadsieveError(
            f"parser '{name}': spaCy is not installed (pip install -e '.[parse]', then install the pipeline)"
        ) from None
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise HeadsieveError(
            f"parser '{name}': no installed spaCy pipeline of that name (python -m spacy download {name}, "
            f"or pip install the package that ships it)"
        ) from None
    nlp = module.load() if hasattr(module, "load") else spacy.load(name)
    if "parser" not in nlp.pipe_names:
        raise HeadsieveError(f"parser '{name}': the pipeline has no dependency parser (components: {nlp.pipe_names})")
    return nlp


def parser_id(nlp) -> str:
    """``<package> <version> (spaCy <version>)``: what the trees came from."""
    import spacy

    meta = nlp.meta
    return f"{meta.get('lang', 'xx')}_{meta.get('name', '?')} {meta.get('version', '?')} (spaCy {spacy.__version__})"


def doc_to_sentence(doc, sent_id: str, text: str) -> tuple[Sentence, int]:
    """One input's parse as one tree: (sentence, number of extra roots joined to the first)."""
    words = [t.text for t in doc if not t.is_space]
    index = {}  # spaCy token index -> 1-based word index (whitespace tokens dropped)
    for t in doc:
        if not t.is_space:
            index[t.i] = len(index) + 1
    if not words:
        raise HeadsieveError(f"input '{sent_id}': nothing to parse (empty text)")
    heads, deprels = [], []
    first_root = None
    extra = 0
    for t in doc:
        if t.is_space:
            continue
        head = t.head
        while head.is_space and head.head.i != head.i:  # a whitespace token's dependents go to its head
            head = head.head
        if head.i == t.i or head.is_space:
            if first_root is None:
                first_root = index[t.i]
                heads.append(0)
                deprels.append("root")
                continue
            extra += 1
            heads.append(first_root)
            deprels.append(EXTRA_ROOT_RELATION)
            continue
        heads.append(index[head.i])
        deprels.append(t.dep_ or "dep")
    sentence = Sentence(
        sent_id=sent_id,
        text=text,
        tokens=list(words),
        words=list(words),
        word_token=list(range(len(words))),
        heads=heads,
        deprels=deprels,
        upos=[t.pos_ or "X" for t in doc if not t.is_space],
    )
    return sentence, int(extra > 0)


def parse_texts(nlp, items: list[tuple[str, str]], batch_size: int = 64, progress=None) -> tuple[list[Sentence], ParseStats]:
    """Parse (sent_id, text) items, one tree each, in order."""
    stats = ParseStats()
    sentences = []
    docs = nlp.pipe((text for _, text in items), batch_size=batch_size)
    for (sent_id, text), doc in zip(items, docs):
        sentence, split = doc_to_sentence(doc, sent_id, text)
        sentences.append(sentence)
        stats.inputs += 1
        stats.words += len(sentence.words)
        stats.extra_roots += split
        if progress is not None:
            progress.update(1)
    return sentences, stats


def _clean(value: str) -> str:
    return value.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def conllu_text(sentences: list[Sentence], parser: str) -> str:
    """Sentences as CoNLL-U (basic tree only), each with ``# parser``, ``# sent_id`` and ``# text`` comments."""
    out = []
    for s in sentences:
        out.append(f"# parser = {parser}")
        out.append(f"# sent_id = {_clean(s.sent_id)}")
        out.append(f"# text = {_clean(s.text)}")
        for k, form in enumerate(s.words):
            form = _clean(form) or "_"
            out.append(f"{k + 1}\t{form}\t_\t{s.upos[k]}\t_\t_\t{s.heads[k]}\t{_clean(s.deprels[k])}\t_\t_")
        out.append("")
    return "\n".join(out) + "\n"
