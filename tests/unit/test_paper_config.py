"""The GPU overlay ``config/paper.yaml`` over the default config (issue 15): it validates, and it runs the
full grid the default trims to fit 2 CPU cores (all 19 parallel PUD languages, not the default's 8)."""

from __future__ import annotations

from snakemake.utils import update_config

from headsieve.config import SCHEMA_PATH, load_yaml, validate_config

from support.manifest import LANGUAGES
from support.paths import REPO


def configs() -> tuple[dict, dict]:
    default = load_yaml(REPO / "config" / "config.yaml")
    paper = load_yaml(REPO / "config" / "config.yaml")
    update_config(paper, load_yaml(REPO / "config" / "paper.yaml"))  # as snakemake --configfile merges it
    return validate_config(default, SCHEMA_PATH), validate_config(paper, SCHEMA_PATH)


def test_the_paper_overlay_validates_and_runs_every_pud_language():
    default, paper = configs()
    pud = sorted(key for key, spec in default["corpora"].items() if key.startswith("pud_"))
    assert len(pud) == 19
    assert sorted(paper["multilingual"]["languages"].values()) == pud
    assert paper["multilingual"]["languages"] == {key.removeprefix("pud_"): key for key in pud}


def test_the_default_runs_a_subset_that_holds_the_cut_down_runs_languages():
    default, _ = configs()
    languages = default["multilingual"]["languages"]
    assert len(languages) < 19
    assert set(LANGUAGES) <= set(languages)  # the recorded cut-down run (tests/support/manifest.py) picks these
    assert all(corpus == f"pud_{code}" for code, corpus in languages.items())
