"""Loading an encoder-decoder translation model from its config entry (the model spec).

The spec: ``source`` (hub id or folder), optional ``revision``, ``trust_remote_code``; the other keys
(``source_prefix``, ``bleu_tokenize``, ``target_language``) are read by the steps that use them.
"""

from __future__ import annotations

import os

from headsieve.errors import HeadsieveError
from headsieve.models import heads as H
from headsieve.models.load import hub_kwargs, load_error


def _source(spec: dict) -> str:
    source = str(spec.get("source", "")).strip()
    if not source:
        raise HeadsieveError(
            "translation model spec has no 'source' (a hub id such as Helsinki-NLP/opus-mt-en-de, or a folder)"
        )
    return os.path.expanduser(source)


def _load_error(source: str, err: Exception) -> HeadsieveError:
    return load_error("translation model", source, err, "translation.models.<key>.source")


def load_config(spec: dict):
    """The model's transformers config, checked to be a supported encoder-decoder."""
    from transformers import AutoConfig

    source = _source(spec)
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs(spec))
    except Exception as err:
        raise _load_error(source, err) from None
    if H.config_space(config).single is not None:
        raise HeadsieveError(
            f"model type '{config.model_type}' cannot be head-masked or pruned as an encoder-decoder "
            f"(it has the single attention kind {H.config_space(config).single.kind})"
        )
    return config


def model_shapes(spec: dict) -> dict[str, tuple[int, int]]:
    """``{kind: (layers, heads)}`` of the model, from its config alone (no weights loaded)."""
    return H.config_space(load_config(spec)).shapes


def load_model(spec: dict, device: str = "cpu"):
    """(model in eval mode with eager attention, tokenizer); a folder saved by ``save_pruned`` is re-pruned."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    source = _source(spec)
    config = load_config(spec)
    try:
        if getattr(config, H.record_key(config), None):
            model = H.load_pruned(source, AutoModelForSeq2SeqLM, device=device)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(source, attn_implementation="eager", **hub_kwargs(spec))
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs(spec))
    except HeadsieveError:
        raise
    except Exception as err:  # transformers raises OSError/ValueError/ImportError (e.g. sentencepiece missing)
        raise _load_error(source, err) from None
    return model.to(device).eval(), tokenizer
