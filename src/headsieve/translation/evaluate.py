"""Translate a test set under many head masks in one process, and score BLEU and chrF.

:class:`TranslationEvaluator` tokenises the sources once (sorted by length, batched, kept on the device)
and attaches :class:`headsieve.models.seq2seq_heads.HeadGates` once; each mask is written into the gate
tensors in place before the test set is generated again.  A gate of 0 removes a head's contribution
exactly as physical pruning does (tested, including greedy generation with the KV cache), so masking
stands in for pruning when only the scores are wanted.

Masks are ``{kind: 0/1 array [layers, heads]}`` (0 = pruned), kinds ``encoder``, ``decoder``, ``cross``.
Generation is deterministic: greedy (``num_beams=1``) or beam search, never sampling; the model's other
generation settings (e.g. Marian's ban on generating the pad token) are kept.
"""

from __future__ import annotations

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.seq2seq_heads import KINDS, HeadGates
from headsieve.progress import progress_bar
from headsieve.models.runtime import eval_mode, model_device
from headsieve.translation.bleu import corpus_scores
from headsieve.translation.data import SentencePair
from headsieve.translation.strategies import Seq2SeqFacts


def mask_from_heads(facts: Seq2SeqFacts, heads) -> dict[str, np.ndarray]:
    """A 0/1 float mask per kind: ones, zeros at the ``(kind, layer, head)`` triples ``heads``."""
    mask = {kind: np.ones(facts.shape(kind), dtype=np.float32) for kind in KINDS}
    for kind, layer, head in heads:
        if kind not in mask:
            raise HeadsieveError(f"head ({kind}, {layer}, {head}): kind is not one of {', '.join(KINDS)}")
        n_layers, n_heads = facts.shape(kind)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise HeadsieveError(
                f"head ({kind}, {layer}, {head}) out of range (the model has {n_layers} x {n_heads} {kind} heads)"
            )
        mask[kind][layer, head] = 0.0
    return mask


def check_mask(mask, facts: Seq2SeqFacts) -> dict[str, np.ndarray]:
    """``mask`` as ``{kind: float32 array}`` of the model's shapes holding only 0 and 1, else one line."""
    if not isinstance(mask, dict) or set(mask) != set(KINDS):
        raise HeadsieveError(f"head mask must give one array per kind ({', '.join(KINDS)})")
    checked = {}
    for kind in KINDS:
        values = np.asarray(mask[kind], dtype=np.float32)
        if values.shape != facts.shape(kind):
            raise HeadsieveError(
                f"{kind} head mask has shape {list(values.shape)}; the model needs {list(facts.shape(kind))}"
            )
        if not np.isin(values, (0.0, 1.0)).all():
            raise HeadsieveError(f"{kind} head mask must hold only 0 (pruned) and 1 (kept)")
        checked[kind] = values
    return checked


def mask_key(mask: dict[str, np.ndarray]) -> bytes:
    """Bytes identifying a mask (for evaluating each distinct mask once)."""
    return b"|".join(np.ascontiguousarray(mask[kind], dtype=np.float32).tobytes() for kind in KINDS)


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


class TranslationEvaluator:
    """BLEU and chrF of one model under many head masks, without reloading the model or re-tokenising.

    ``pairs``: the test sentence pairs.  ``source_prefix`` is put before every source (T5: e.g.
    ``"translate English to German: "``).  ``tokenize``: sacrebleu's BLEU tokeniser.
    ``generate_options``: more ``generate`` arguments (e.g. ``length_penalty``); sampling is refused.
    The gate hooks stay attached until :meth:`close` (or the end of a ``with`` block).
    """

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
        self.model = model
        self.tokenizer = tokenizer
        self.references = [pair.target for pair in pairs]
        self.tokenize = tokenize
        self.progress = progress
        self.facts = Seq2SeqFacts.from_model(model)
        self.device = model_device(model) if device is None else torch.device(device)
        self.generate_options = dict(options, do_sample=False, num_beams=int(num_beams),
                                     max_new_tokens=int(max_new_tokens), use_cache=True)  # fmt: skip
        sources = [source_prefix + pair.source for pair in pairs]
        batches, self.order = encode_sources(tokenizer, sources, batch_size, max_source_length)
        self.batches = [{k: v.to(self.device) for k, v in batch.items()} for batch in batches]
        self.gates = {kind: torch.ones(*self.facts.shape(kind), device=self.device) for kind in KINDS}
        self.hooks = HeadGates(model, self.gates).attach()

    def _set_mask(self, mask) -> dict[str, np.ndarray]:
        values = (
            {kind: np.ones(self.facts.shape(kind), np.float32) for kind in KINDS}
            if mask is None
            else check_mask(mask, self.facts)
        )
        for kind in KINDS:
            self.gates[kind].copy_(torch.from_numpy(values[kind]))  # in place: the hooks read these tensors
        return values

    def translate(self, mask=None) -> list[str]:
        """Translations of the test sources (in the pairs' order) with the heads where ``mask`` is 0 off."""
        if not self.hooks.handles:
            raise HeadsieveError("translation evaluator was closed; create a new one")
        self._set_mask(mask)
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
        values = self._set_mask(mask)
        hypotheses = self.translate(values)
        row = corpus_scores(hypotheses, self.references, tokenize=self.tokenize)
        row["n"] = len(self.references)
        per_kind = {kind: int((values[kind] == 0).sum()) for kind in KINDS}
        row["heads_pruned"] = sum(per_kind.values())
        row.update({f"heads_pruned_{kind}": count for kind, count in per_kind.items()})
        if keep_translations:
            row["translations"] = hypotheses
        return row

    def evaluate_many(self, masks: dict, *, keep_translations: bool = False) -> list[dict]:
        """One row per named mask (``{"mask": name, **evaluate(mask)}``), in the dict's order."""
        rows = []
        for name, mask in progress_bar(masks.items(), desc="masks", unit="mask", enabled=self.progress):
            rows.append({"mask": name, **self.evaluate(mask, keep_translations=keep_translations)})
        return rows

    def close(self) -> None:
        """Remove the gate hooks; the model behaves as without gates again."""
        self.hooks.remove()

    def __enter__(self) -> "TranslationEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
