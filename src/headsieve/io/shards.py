"""The attention dump format: float16 shards plus an index.

A dump is a folder::

    attention/
      index.parquet        one row per sentence (see INDEX_SCHEMA)
      shard-00000.npz      one array 'attention': every sentence's [L, H, T, T] float16, flattened, concatenated
      shard-00001.npz      ...

Sentence ``s`` lives in shard ``index.shard[s]`` at element ``offset`` with ``n_pieces = T``; its array is
``flat[offset : offset + L*H*T*T].reshape(L, H, T, T)`` with ``attention[l, h, i, j]`` the weight that query
piece ``i`` gives to key piece ``j`` in layer ``l``, head ``h`` (rows sum to 1).  Each sentence is stored
unpadded.  The shards are uncompressed ``.npz`` files written with fixed zip timestamps, so the same input
gives the same bytes.  Anything that can write this layout (see :class:`ShardWriter`) can feed the later
stages; ``input_crc`` ties each row to the token ids in ``tokens.parquet``.

Provenance and coverage: the index's schema metadata ``headsieve_provenance`` (JSON) records the model,
corpus, ``max_length`` and checksum of the tokens it was made from, the number of sentences and a
fingerprint of (sentence_index, input_crc) of every sentence.  :func:`read_index` refuses an index whose
rows repeat a sentence, disagree with the recorded count, name a shard outside the folder, or overlap in
a shard; :func:`check_coverage` refuses a dump that does not hold every input of its tokens exactly once.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import write_table
from headsieve.io.provenance import parse_provenance, provenance_metadata

FORMAT_VERSION = "1"
INDEX_NAME = "index.parquet"
#: a shard is a plain file name inside the dump folder (no folder part, no hidden file)
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.npz$")
RERUN = "delete the folder and rerun the dump (rule dump_attention, or `headsieve dump`)"

INDEX_SCHEMA = pa.schema(
    [
        ("model", pa.string()), ("corpus", pa.string()), ("sentence_index", pa.int32()), ("sentence_id", pa.string()),
        ("shard", pa.string()), ("offset", pa.int64()), ("n_pieces", pa.int32()),
        ("n_layers", pa.int16()), ("n_heads", pa.int16()), ("input_crc", pa.uint32()),
    ]
)  # fmt: skip


def input_crc(input_ids) -> int:
    """CRC32 of a sentence's token ids (as int32), to check a dump against its tokens."""
    return zlib.crc32(np.asarray(input_ids, dtype=np.int32).tobytes())


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def inputs_fingerprint(pairs) -> str:
    """sha256 over sorted (sentence_index, input_crc) pairs: which inputs, with which token ids."""
    digest = hashlib.sha256()
    for index, crc in sorted((int(i), int(c)) for i, c in pairs):
        digest.update(f"{index}:{crc};".encode())
    return digest.hexdigest()


def _write_npz(path: Path, name: str, parts: list[np.ndarray]) -> None:
    """An uncompressed .npz holding one flat array, the concatenation of ``parts``, streamed part by part.

    The zip entry has a fixed timestamp (numpy's own writer stamps the current time), so the same
    arrays give the same bytes.
    """
    dtype = parts[0].dtype
    total = sum(p.size for p in parts)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (total,)})
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(info, "w", force_zip64=True) as entry:
            entry.write(header.getvalue())
            for part in parts:
                entry.write(memoryview(np.ascontiguousarray(part, dtype=dtype)).cast("B"))


class ShardWriter:
    """Stream sentences into shards of about ``shard_bytes``; memory holds at most one shard."""

    def __init__(
        self, folder: str | os.PathLike, model: str, corpus: str, shard_bytes: int = 64 << 20, provenance: dict | None = None
    ):
        self.provenance = dict(provenance or {})  # e.g. max_length and tokens_sha256 of the tokens it was made from
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.corpus = model, corpus
        self.shard_bytes = shard_bytes
        self._parts: list[np.ndarray] = []
        self._size = 0
        self._shard = 0
        self._rows: list[dict] = []
        self._shape: tuple[int, int] | None = None
        self._seen: set[int] = set()

    def add(self, sentence_index: int, sentence_id: str, attention: np.ndarray, input_ids) -> None:
        """Add one sentence's attention, shape [layers, heads, T, T]."""
        if attention.ndim != 4 or attention.shape[2] != attention.shape[3]:
            raise ValueError(f"attention must be [layers, heads, T, T], got {attention.shape}")
        if self._shape is None:
            self._shape = attention.shape[:2]
        elif attention.shape[:2] != self._shape:
            raise ValueError(f"sentence {sentence_id}: {attention.shape[:2]} layers x heads, expected {self._shape}")
        if len(input_ids) != attention.shape[2]:
            raise ValueError(f"sentence {sentence_id}: {len(input_ids)} token ids for T={attention.shape[2]}")
        if int(sentence_index) in self._seen:
            raise HeadsieveError(
                f"{self.folder}: sentence '{sentence_id}': sentence_index {sentence_index} added twice "
                "(every input goes into a dump exactly once)"
            )
        self._seen.add(int(sentence_index))
        flat = np.ascontiguousarray(attention, dtype=np.float16).reshape(-1)  # no copy when already float16
        self._rows.append(
            {
                "model": self.model,
                "corpus": self.corpus,
                "sentence_index": int(sentence_index),
                "sentence_id": str(sentence_id),
                "shard": self._name(),
                "offset": self._size // 2,
                "n_pieces": int(attention.shape[2]),
                "n_layers": int(attention.shape[0]),
                "n_heads": int(attention.shape[1]),
                "input_crc": input_crc(input_ids),
            }
        )
        self._parts.append(flat)
        self._size += flat.nbytes
        if self._size >= self.shard_bytes:
            self._flush()

    def _name(self) -> str:
        return f"shard-{self._shard:05d}.npz"

    def _flush(self) -> None:
        if not self._parts:
            return
        _write_npz(self.folder / self._name(), "attention", self._parts)
        self._parts, self._size = [], 0
        self._shard += 1

    def close(self) -> pa.Table:
        """Write the last shard and the index; return the index."""
        self._flush()
        if not self._rows:
            raise HeadsieveError("no sentences to dump (empty corpus)")
        table = pa.Table.from_pylist(self._rows, schema=INDEX_SCHEMA)
        provenance = dict(
            self.provenance,
            model=self.model,
            corpus=self.corpus,
            n_sentences=len(self._rows),
            inputs_fingerprint=inputs_fingerprint((r["sentence_index"], r["input_crc"]) for r in self._rows),
        )
        table = table.replace_schema_metadata(
            {"headsieve_dump_format": FORMAT_VERSION, **provenance_metadata(provenance)}
        )
        write_table(table, self.folder / INDEX_NAME)
        return table


def read_index(folder: str | os.PathLike) -> pa.Table:
    """The checked index of a dump folder (see the module doc for the checks)."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise HeadsieveError(f"{path}: no dump index (not an attention dump folder, or an incomplete one): {RERUN}")
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise HeadsieveError(f"{path}: unreadable Parquet ({_first_line(err)}): {RERUN}") from None
    missing = [n for n in INDEX_SCHEMA.names if n not in table.column_names]
    if missing:
        raise HeadsieveError(f"{path}: index lacks columns {', '.join(missing)}")
    meta = table.schema.metadata or {}
    try:
        table = table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise HeadsieveError(f"{path}: index columns of the wrong type ({_first_line(err)})") from None
    _check_index(path, table, _provenance(path, meta))
    return table.replace_schema_metadata(meta)


def _provenance(path, meta: dict) -> dict:
    return parse_provenance(meta, path, RERUN)


def index_provenance(index: pa.Table) -> dict:
    """What a dump records about its making (empty for an index without a record)."""
    return _provenance(INDEX_NAME, index.schema.metadata or {})


def _check_index(path, table: pa.Table, provenance: dict) -> None:
    """Structure of the index rows: unique sentences, plain shard names, sane shapes, no overlaps."""
    rows = table.to_pydict()
    n = table.num_rows
    if n == 0:
        raise HeadsieveError(f"{path}: the index lists no sentences: {RERUN}")
    for column in INDEX_SCHEMA.names:
        if any(v is None for v in rows[column]):
            raise HeadsieveError(f"{path}: column '{column}' has missing values")
    seen: dict[int, int] = {}
    for k, s in enumerate(rows["sentence_index"]):
        if s in seen:
            raise HeadsieveError(
                f"{path}: sentence_index {s} is listed twice (rows {seen[s] + 1} and {k + 1}); every input must be "
                f"in a dump exactly once: {RERUN}"
            )
        seen[s] = k
    if "n_sentences" in provenance and provenance["n_sentences"] != n:
        raise HeadsieveError(
            f"{path}: {n} sentences listed, but the dump was written with {provenance['n_sentences']}: {RERUN}"
        )
    for name in set(rows["shard"]):
        if not _SHARD_NAME.match(name):
            raise HeadsieveError(f"{path}: shard '{name}' is not a plain .npz file name inside the dump folder")
    if len(set(rows["n_layers"])) != 1 or len(set(rows["n_heads"])) != 1:
        raise HeadsieveError(f"{path}: sentences with different numbers of layers or heads")
    if min(rows["n_layers"]) < 1 or min(rows["n_heads"]) < 1 or min(rows["n_pieces"]) < 1:
        raise HeadsieveError(f"{path}: n_layers, n_heads and n_pieces must be at least 1")
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for shard, offset, T, L, H, sid in zip(
        rows["shard"], rows["offset"], rows["n_pieces"], rows["n_layers"], rows["n_heads"], rows["sentence_id"]
    ):
        if offset < 0:
            raise HeadsieveError(f"{path}: sentence '{sid}' has a negative offset")
        spans.setdefault(shard, []).append((offset, offset + L * H * T * T, sid))
    for shard, items in spans.items():
        items.sort()
        for (_, end, sid), (start, _, nxt) in zip(items, items[1:]):
            if start < end:
                raise HeadsieveError(f"{path}: sentences '{sid}' and '{nxt}' overlap in {shard}")


def check_coverage(index: pa.Table, expected: dict[int, int], dump_dir, tokens_path) -> None:
    """Every input of the tokens (``expected``: sentence_index -> input_crc) is in the dump exactly once."""
    got = set(index.column("sentence_index").to_pylist())
    missing = sorted(set(expected) - got)
    extra = sorted(got - set(expected))
    if missing:
        raise HeadsieveError(
            f"{dump_dir}: {len(missing)} of the {len(expected)} inputs of {tokens_path} are not in the dump "
            f"(first: sentence_index {missing[0]}): {RERUN}"
        )
    if extra:
        raise HeadsieveError(
            f"{dump_dir}: {len(extra)} sentences are not in {tokens_path} (first: sentence_index {extra[0]}); "
            f"dump and tokens do not belong together: {RERUN}"
        )
    recorded = index_provenance(index).get("inputs_fingerprint")
    if recorded is not None and recorded != inputs_fingerprint(expected.items()):
        raise HeadsieveError(
            f"{dump_dir}: made from other token ids than those in {tokens_path} (another tokenizer or corpus): {RERUN}"
        )


def _load_shard(path: Path) -> np.ndarray:
    if not path.is_file():
        raise HeadsieveError(f"{path}: shard named in the index is missing: {RERUN}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz["attention"]
    except Exception as err:
        raise HeadsieveError(f"{path}: unreadable shard ({_first_line(err)}): {RERUN}") from None
    if arr.dtype != np.float16 or arr.ndim != 1:
        raise HeadsieveError(f"{path}: 'attention' must be a flat float16 array, found {arr.dtype} {arr.shape}")
    return arr


def iter_dump(folder: str | os.PathLike, check: bool = True, atol: float = 2e-2) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (index row, attention [L, H, T, T] float16) shard by shard; memory holds one shard.

    With ``check``, every sentence must be finite and have rows that sum to 1 (within ``atol``, float16).
    """
    folder = Path(folder)
    index = read_index(folder).to_pylist()
    by_shard: dict[str, list[dict]] = {}
    for row in index:
        by_shard.setdefault(row["shard"], []).append(row)
    for shard in sorted(by_shard):
        flat = _load_shard(folder / shard)
        for row in by_shard[shard]:
            L, H, T = row["n_layers"], row["n_heads"], row["n_pieces"]
            end = row["offset"] + L * H * T * T
            if row["offset"] < 0 or end > flat.size:
                raise HeadsieveError(f"{folder / shard}: sentence '{row['sentence_id']}' runs past the end of the shard")
            att = flat[row["offset"] : end].reshape(L, H, T, T)
            if check:
                check_attention(att, f"{folder / shard}: sentence '{row['sentence_id']}'", atol)
            yield row, att


def check_attention(att: np.ndarray, where: str, atol: float = 2e-2) -> None:
    """Fail with one line when attention has NaN/inf or rows that do not sum to 1."""
    a32 = att.astype(np.float32)
    if not np.isfinite(a32).all():
        raise HeadsieveError(f"{where}: attention contains NaN or infinite values")
    if (a32 < 0).any():
        raise HeadsieveError(f"{where}: attention contains negative weights")
    sums = a32.sum(-1)
    worst = float(np.abs(sums - 1).max())
    if worst > atol:
        raise HeadsieveError(f"{where}: attention rows do not sum to 1 (off by up to {worst:.3g})")
