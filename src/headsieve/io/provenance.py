"""The provenance record an artifact carries in its Parquet schema metadata (what it was made from)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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


# ---------------------------------------------------------------- checks of a record against a reader's own inputs


def check_provenance(recorded: dict, expected: dict, where: str, fix: str) -> None:
    """Each setting in ``expected`` (a reader's own config; None: not checked) equals what the artifact
    recorded; one line naming ``where``, the field and what to do (``fix``) when not."""
    for key, value in expected.items():
        if value is None:
            continue
        if key not in recorded:
            raise HeadsieveError(f"{where}: records no {key} (made by another tool or an older headsieve): {fix}")
        if recorded[key] != value:
            raise HeadsieveError(f"{where}: made for {key} {recorded[key]!r}, not {value!r}: {fix}")


def canonical(value):
    """``value`` as it reads back from a record (JSON round trip: tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True))


def record_sha256(record: dict) -> str:
    """sha256 of a record's canonical JSON: what a later artifact records of the one it was made from."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def rerun(rule: str) -> str:
    """What to do about an artifact that does not fit: rerun the rule that makes it."""
    return f"rerun rule {rule} (it was made from other inputs or settings)"


def record_file(path) -> Path:
    """The file holding an artifact's record: the artifact itself, or a folder's ``metrics.json``."""
    path = Path(path)
    return path / "metrics.json" if path.is_dir() else path


def read_artifact_provenance(path, rule: str) -> dict:
    """The provenance record of an artifact ``path`` made by rule ``rule``: the schema metadata of a Parquet
    file, the ``provenance`` key of a JSON file, or the ``metrics.json`` of a folder; one line naming ``path``
    and the rule to rerun when it is missing, unreadable or has no record."""
    source = record_file(path)
    if not source.is_file():
        raise HeadsieveError(f"{source}: missing (rerun rule {rule})")
    if source.suffix == ".json":
        try:
            value = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HeadsieveError(f"{source}: unreadable ({str(err).splitlines()[0]}): rerun rule {rule}") from None
        record = value.get("provenance") if isinstance(value, dict) else None
        if record is not None and not isinstance(record, dict):
            raise HeadsieveError(f"{source}: unreadable provenance record; rerun rule {rule}")
        record = record or {}
    else:
        record = read_file_provenance(source, "the output of rule " + rule, f"rerun rule {rule}")
    if not record:
        raise HeadsieveError(f"{source}: records no provenance (made by another tool or an older headsieve): rerun rule {rule}")
    return record


def expect_provenance(path, expected: dict, rule: str) -> dict:
    """The record of artifact ``path`` (made by ``rule``) after checking it against ``expected``."""
    record = read_artifact_provenance(path, rule)
    check_provenance(record, canonical(expected), str(record_file(path)), rerun(rule))
    return record


def check_cells(cells: list, what: str) -> None:
    """Coverage of collected inputs: ``cells`` lists (input, the cells (hashable) it holds); every cell must
    come from exactly one input (an input given twice too).  One line naming the cell and both inputs."""
    seen = {}
    for source, held in cells:
        for cell in held:
            if cell in seen:
                raise HeadsieveError(f"{source}: {what} {cell} is also in {seen[cell]} (every cell exactly once)")
            seen[cell] = source


def check_same_cells(groups: dict, what: str) -> None:
    """Coverage across groups (e.g. seeds): ``groups`` maps a group name to its set of cells; every group must
    hold the same cells.  One line naming the first group that lacks a cell another group has, and the cell."""
    union = set().union(*groups.values()) if groups else set()
    for name, held in groups.items():
        missing = sorted(union - set(held), key=str)
        if missing:
            raise HeadsieveError(f"{name}: no {what} {missing[0]!r} (the others have it; an input is missing or incomplete)")
