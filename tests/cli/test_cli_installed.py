"""The command line's range checks from an installed package, away from a checkout (issue #18 item 4): the
config schema is package data, the one file both Snakemake's validation and the CLI read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from headsieve.config import SCHEMA_PATH
from support.cli import refused
from support.paths import REPO


def test_the_workflow_and_the_package_read_one_schema():
    """workflow/schemas/config.schema.yaml is the package's schema (a link to it, not a copy)."""
    import headsieve

    assert SCHEMA_PATH.is_file()
    assert SCHEMA_PATH.parent.parent == __import__("pathlib").Path(headsieve.__file__).resolve().parent
    assert (REPO / "workflow" / "schemas" / "config.schema.yaml").resolve() == SCHEMA_PATH.resolve()
    assert "SCHEMA_PATH" in (REPO / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """headsieve built from a copy of the source (no checkout beside it) and installed into a bare folder."""
    root = tmp_path_factory.mktemp("build")
    source = root / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot build the package here: {proc.stderr.strip().splitlines()[-1:]}")
    return site


def run_installed(site, cwd, *args):
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "headsieve", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_the_installed_package_ships_the_schema(installed):
    assert (installed / "headsieve" / "schemas" / "config.schema.yaml").is_file()
    assert not (installed / "workflow").exists()


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--alpha", "7", "--alpha 7.0: 7.0 is greater than or equal to the maximum of 1 (the range of config key roles.alpha)"),
        ("--tau-by-role", '{"block": -1}', "less than the minimum of 0 (the range of config key roles.tau_by_role)"),
    ],
)
def test_range_checks_of_the_installed_cli_away_from_a_checkout(installed, tmp_path, flag, value, expected):
    """Run from tmp_path with only the installed package importable: the range check still refuses."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    args = ["--scores", "s.parquet", "--tau", "0.4", "--alpha", "0.05", "--correction", "bh", "--output", "tests.parquet"]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    proc = run_installed(installed, work, "roles-test", *args)
    refused(proc, expected, work / "tests.parquet")
    probe = subprocess.run(
        [sys.executable, "-c", "import headsieve, sys; sys.stdout.write(headsieve.__file__)"],
        capture_output=True, text=True, cwd=work, env=dict(os.environ, PYTHONPATH=str(installed)),
    )  # fmt: skip
    assert probe.stdout.startswith(str(installed)), probe.stdout  # the installed copy ran, not the checkout
