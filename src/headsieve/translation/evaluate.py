"""Translate a test set under many head masks in one process, and score BLEU and chrF.

:class:`TranslationEvaluator` tokenises the sources once (sorted by length, batched, kept on the device)
and attaches the head gates once (a :class:`headsieve.models.masking.MaskedModel`); each mask is written into
the gate tensors in place before the test set is generated again.  A gate of 0 removes a head's contribution
exactly as physical pruning does (tested, including greedy generation with the KV cache), so masking
stands in for pruning when only the scores are wanted.

Masks are ``{kind: 0/1 array [layers, heads]}`` (0 = pruned), kinds ``encoder``, ``decoder``, ``cross``
(:func:`headsieve.models.masking.mask_from_heads`).
Generation is deterministic: greedy (``num_beams=1``) or beam search, never sampling; the model's other
generation settings (e.g. Marian's ban on generating the pad token) are kept.
"""

from __future__ import annotations

import torch

from headsieve.errors import HeadsieveError
from headsieve.models.masking import MaskedModel, pruned_counts
from headsieve.models.runtime import eval_mode
from headsieve.translation.bleu import corpus_scores
from headsieve.translation.data import SentencePair


def encode_sources(tokenizer, texts: list[str], batch_size: int, max_length: int) -> tuple[list[dict], list[int]]:
    """Batches (padded ``input_ids``, ``attention_mask``) of the texts, longest first, and the text order."""
    if batch_size < 1:
        raise HeadsieveError(f"batch size {batch_size} must be at least 1")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        features = [{"input_ids": ids[i], "attention_mask": encoded["attention_mask"][i]} for i in chunk]
        batches.append(dict(tokenizer.pad(features, padding=True, return_tensors="pt")))
    return batches, order


class TranslationEvaluator(MaskedModel):
    """BLEU and chrF of one model under many head masks, without reloading the model or re-tokenising.

    ``pairs``: the test sentence pairs.  ``source_prefix`` is put before every source (T5: e.g.
    ``"translate English to German: "``).  ``tokenize``: sacrebleu's BLEU tokeniser.
    ``generate_options``: more ``generate`` arguments (e.g. ``length_penalty``); sampling is refused.
    The gate hooks stay attached until :meth:`close` (or the end of a ``with`` block).
    """

    what = "translation evaluator"

    def __init__(
        self,
        model,
        tokenizer,
        pairs: list[SentencePair],
        *,
        batch_size: int = 16,
        num_beams: int = 1,
        max_new_tokens: int = 256,
        max_source_length: int = 256,
        source_prefix: str = "",
        tokenize: str = "13a",
        generate_options: dict | None = None,
        device=None,
        progress: bool = True,
    ):
        if not pairs:
            raise HeadsieveError("no test sentence pairs to translate")
        options = dict(generate_options or {})
        if options.get("do_sample"):
            raise HeadsieveError("translation evaluation is deterministic: do_sample must be false")
        super().__init__(model, device, progress)
        self.tokenizer = tokenizer
        self.references = [pair.target for pair in pairs]
        self.tokenize = tokenize
        self.generate_options = dict(options, do_sample=False, num_beams=int(num_beams),
                                     max_new_tokens=int(max_new_tokens), use_cache=True)  # fmt: skip
        sources = [source_prefix + pair.source for pair in pairs]
        batches, self.order = encode_sources(tokenizer, sources, batch_size, max_source_length)
        self.batches = [{k: v.to(self.device) for k, v in batch.items()} for batch in batches]

    def translate(self, mask=None) -> list[str]:
        """Translations of the test sources (in the pairs' order) with the heads where ``mask`` is 0 off."""
        self.set_mask(mask)
        texts: list[str] = []
        with eval_mode(self.model), torch.inference_mode():
            for batch in self.batches:
                out = self.model.generate(**batch, **self.generate_options)
                texts += [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        result = [""] * len(texts)
        for position, index in enumerate(self.order):
            result[index] = texts[position]
        return result

    def evaluate(self, mask=None, *, keep_translations: bool = False) -> dict:
        """BLEU, chrF (:func:`headsieve.translation.bleu.corpus_scores`), ``n`` and heads pruned, in total
        and per kind (``heads_pruned_encoder`` ...); ``translations`` too if ``keep_translations``."""
        values = self.set_mask(mask)
        hypotheses = self.translate(values)
        row = corpus_scores(hypotheses, self.references, tokenize=self.tokenize)
        row["n"] = len(self.references)
        per_kind = pruned_counts(values)
        row["heads_pruned"] = sum(per_kind.values())
        row.update({f"heads_pruned_{kind}": count for kind, count in per_kind.items()})
        if keep_translations:
            row["translations"] = hypotheses
        return row
