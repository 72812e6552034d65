"""README.md shows the default run's per-language relative drops (``docs/img/relative_drops_nli.png``): the figure
is redrawn here from that run's table (``results/multilingual/nli/relative_drops.parquet``, copied verbatim with
its provenance to ``docs/multilingual/``) and must come out byte for byte the same."""

from __future__ import annotations

import pandas as pd

from headsieve.io.provenance import read_file_provenance
from headsieve.multilingual.analysis import language_facts
from headsieve.plots.multilingual import drop_heatmap

from support.paths import REPO

TABLE = REPO / "docs" / "multilingual" / "relative_drops.parquet"
FIGURE = REPO / "docs" / "img" / "relative_drops_nli.png"


def test_the_readme_figure_is_drawn_from_the_default_runs_table(tmp_path):
    drops = pd.read_parquet(TABLE)
    drop_heatmap(drops, language_facts(), tmp_path / "relative_drops", "task nli")  # the rule's title
    assert (tmp_path / "relative_drops.png").read_bytes() == FIGURE.read_bytes()
    assert f"({FIGURE.relative_to(REPO)})" in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_table_is_the_default_runs():
    record = read_file_provenance(TABLE, "relative_drops", "")
    assert record["rule"] == "multilingual_pruning" and record["task"] == "nli"
    drops = pd.read_parquet(TABLE)
    assert set(drops["model"]) == {"e5"} and set(drops["language"]) == {"de", "en"}
    assert drops["strategy"].str.startswith("layer:").sum() and drops["strategy"].str.startswith("band:").sum()
