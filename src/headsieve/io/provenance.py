"""The provenance record an artifact carries in its Parquet schema metadata (what it was made from)."""

from __future__ import annotations

import json

from headsieve.errors import HeadsieveError

#: the schema metadata key of the record (JSON)
PROVENANCE_KEY = b"headsieve_provenance"


def provenance_metadata(record: dict) -> dict:
    """Schema metadata holding ``record`` (canonical JSON: the same record, the same bytes)."""
    return {PROVENANCE_KEY: json.dumps(record, sort_keys=True)}


def parse_provenance(meta: dict, where, fix: str) -> dict:
    """The record in schema metadata ``meta`` ({} when there is none); one line naming ``where`` and what to do
    (``fix``) when it is not a JSON object."""
    raw = meta.get(PROVENANCE_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise HeadsieveError(f"{where}: unreadable provenance record; {fix}")
    return value


def read_file_provenance(path, what: str, fix: str) -> dict:
    """The provenance record of the Parquet file ``path`` ({} when it has none); one line naming ``path`` when
    it cannot be read (as ``what``: "tokens", "scores") or its record is unreadable (then what to do: ``fix``)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read {what} ({str(err).splitlines()[0]})") from None
    return parse_provenance(meta, path, fix)
