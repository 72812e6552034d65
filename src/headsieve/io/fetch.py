"""Download an official data release, verify its sha256 before use, optionally take one archive member."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import atomic_path, write_errors

log = logging.getLogger(__name__)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, sha256: str, output: str | os.PathLike, member: str | None = None, timeout: float = 60) -> None:
    """Download ``url`` to ``output`` (atomically); with ``member``, extract that file from the zip/tar archive.

    The downloaded bytes must have the given sha256, else nothing is written.  ``file://`` URLs work too.
    """
    output = Path(output)
    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as tmpdir:
        download = Path(tmpdir) / "download"
        try:
            with write_errors(output):  # a full disk is not a network problem
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(download, "wb") as fh:
                    shutil.copyfileobj(resp, fh, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise HeadsieveError(f"cannot download {url}: {reason} (no network? use a local data_dir mirror)") from None
        got = sha256_file(download)
        if got != sha256.lower():
            raise HeadsieveError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); file not used")
        log.info("downloaded %s (%d bytes, sha256 ok)", url, download.stat().st_size)
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as tmp:
            if member is None:
                shutil.copyfile(download, tmp)
            else:
                _extract(download, member, tmp, url)


def _extract(archive: Path, member: str, dest: Path, url: str) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise HeadsieveError(f"{url}: archive has no member '{member}'")
            with zf.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    try:
        with tarfile.open(archive) as tf:
            try:
                src = tf.extractfile(member)
            except KeyError:
                src = None
            if src is None:
                raise HeadsieveError(f"{url}: archive has no file member '{member}'")
            with src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except tarfile.TarError:
        raise HeadsieveError(f"{url}: not a zip or tar archive, cannot take member '{member}'") from None
