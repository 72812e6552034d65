"""Atomic output: nothing under the final name until the write succeeds; killed writers' leftovers go."""

from __future__ import annotations

import pytest

from headsieve.io.atomic import atomic_dir, atomic_path


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "dump") as tmp:
            (tmp / "shard-00000.npz").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".out.parquet.tmp-99999").write_text("left by a SIGKILL")
    (tmp_path / ".dump.tmp-99998").mkdir()
    (tmp_path / ".other.tmp-1").write_text("not ours")
    with atomic_path(tmp_path / "out.parquet") as tmp:
        tmp.write_text("done")
    with atomic_dir(tmp_path / "dump") as tmp:
        (tmp / "index.parquet").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-1", "dump", "out.parquet"]
    assert (tmp_path / "out.parquet").read_text() == "done"


def test_directory_replaces_previous_version(tmp_path):
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["b"]
