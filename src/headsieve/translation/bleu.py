"""Corpus BLEU and chrF with sacrebleu (pinned in pyproject: ``sacrebleu==2.6.0``).

Scores are sacrebleu's own, with its defaults (BLEU: 13a tokenisation, exponential smoothing, mixed case;
chrF: character 6-grams, beta 2, no word n-grams), one reference per sentence; each result carries the
metric's signature so that a reported number says how it was computed.

BLEU tokenisation: ``13a`` by default; Chinese targets use sacrebleu's ``zh`` (see
:func:`bleu_tokenizer`).  Languages written without spaces between words (Thai) or needing a morphological
tokeniser (Japanese ``ja-mecab``, Korean ``ko-mecab``: extra packages) get whitespace-based BLEU that
means little: report chrF there, which needs no tokeniser.
"""

from __future__ import annotations

from headsieve.errors import HeadsieveError

#: BLEU tokeniser per target language code, where it differs from 13a
TOKENIZERS = {"zh": "zh"}


def bleu_tokenizer(target_language: str | None) -> str:
    """The sacrebleu BLEU tokeniser for a target language code (``13a`` unless listed in :data:`TOKENIZERS`)."""
    return TOKENIZERS.get((target_language or "").split("_")[0].lower(), "13a")


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise HeadsieveError(f"{len(hypotheses)} translations for {len(references)} references (must be equal)")
    if not references:
        raise HeadsieveError("no sentences to score")
    if not all(isinstance(s, str) for s in list(hypotheses) + list(references)):
        raise HeadsieveError("translations and references must be strings")


def corpus_scores(hypotheses: list[str], references: list[str], *, tokenize: str = "13a") -> dict:
    """Corpus ``bleu`` and ``chrf`` (0-100) plus BLEU's details and both signatures.

    Keys: ``bleu``, ``chrf``, ``bleu_bp`` (brevity penalty), ``bleu_p1``..``bleu_p4`` (n-gram precisions,
    percent), ``sys_len``, ``ref_len`` (BLEU token counts), ``bleu_signature``, ``chrf_signature``.
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check(hypotheses, references)
    try:
        bleu = BLEU(tokenize=tokenize)
    except Exception as err:  # unknown tokeniser or one whose extra package is missing
        raise HeadsieveError(f"sacrebleu BLEU tokeniser '{tokenize}' is not usable: {err}") from None
    chrf = CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    row = {"bleu": float(b.score), "chrf": float(c.score), "bleu_bp": float(b.bp)}
    row.update({f"bleu_p{n + 1}": float(p) for n, p in enumerate(b.precisions)})
    row.update(sys_len=int(b.sys_len), ref_len=int(b.ref_len))
    row.update(bleu_signature=str(bleu.get_signature()), chrf_signature=str(chrf.get_signature()))
    return row
