"""Atomic output: write to a temporary sibling, then rename into place.

A killed or failing step never leaves a half-written artifact under the final name.  A write that fails
for want of space (a full disk, a quota, a file size limit, a read-only file system) becomes one line,
:class:`HeadsieveError`, naming the output; the original exception stays attached as its cause (the
command line writes its traceback to the log only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from headsieve.errors import HeadsieveError

#: errors of writing, not of the data: no space, quota, file size limit, read-only file system
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def write_errors(path) -> Iterator[None]:
    """Turn a failed write of ``path`` (see :data:`WRITE_ERRNOS`) into one line that says what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        raise HeadsieveError(
            f"{path}: cannot write ({err.strerror or os.strerror(err.errno)}); free space or raise the limit, then rerun"
        ) from err


def _tmp_sibling(path: Path) -> Path:
    """The temporary sibling of ``path`` for this process, after creating the folder and removing what killed
    writers of ``path`` left behind."""
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove_stale(path: Path) -> None:
    """Remove temporaries a killed writer of ``path`` left behind (one writer per output at a time)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        with write_errors(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    with write_errors(path):
        tmp.mkdir()
    try:
        with write_errors(path):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a Parquet table atomically, with settings that give the same bytes for the same table."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def write_frame(frame, path: str | os.PathLike, schema: pa.Schema | None = None, metadata: dict | None = None) -> None:
    """Write a pandas DataFrame as Parquet atomically (no index column); ``metadata`` (e.g. a provenance
    record) is the schema's only metadata (pandas' own is left out: it names the pandas version)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(metadata)
    write_table(table, path)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj, path: str | os.PathLike) -> None:
    """Write JSON atomically, keys sorted (the same bytes for the same object)."""
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
