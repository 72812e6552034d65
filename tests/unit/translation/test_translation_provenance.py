"""Provenance and coverage of the translation artifacts (issue #18 item 2): importance, masks, scores and
roles record the model spec, the pairs and their files' sha256; each reader refuses a table made for another
model or other pairs, and the collected scores hold every (seed, strategy, fraction) exactly once."""

from __future__ import annotations

import pandas as pd
import pytest

from headsieve.errors import HeadsieveError
from headsieve.io.provenance import read_artifact_provenance
from headsieve.steps import translation as T
from headsieve.steps.pruning import write_made_from
from headsieve.steps.settings import SentencePairs

SPEC = {"source": "Helsinki-NLP/opus-mt-en-de", "target_language": "de"}
OTHER = {"source": "t5-small", "source_prefix": "translate English to German: "}
MADE = {"model_spec": SPEC, "pairs": {"importance_pool": 6}, "source_sha256": "a" * 64, "target_sha256": "b" * 64,
        "generation": {"batch_size": 4}}  # fmt: skip


def scores(path, seed: int, strategies=("random", "importance"), **changes):
    """The score table of one seed as translation_evaluate writes it (two fractions per strategy)."""
    rows = [{"strategy": s, "fraction": f, "seed": seed, "bleu": 20.0 - 10 * f, "chrf": 50.0, "n": 5}
            for s in strategies for f in (0.0, 0.5)]  # fmt: skip
    write_made_from(pd.DataFrame(rows), path, dict(MADE, seed=seed, strategies=sorted(strategies), **changes))
    return path


def refused(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(HeadsieveError, match=match) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_masks_and_evaluation_refuse_tables_of_another_model(tmp_path):
    importance = tmp_path / "importance.parquet"
    write_made_from(pd.DataFrame({"kind": ["encoder"], "layer": [0], "head": [0], "importance": [1.0]}), importance,
                    dict(MADE, model_spec=OTHER))  # fmt: skip
    line = refused("importance.parquet: made for model_spec .*rerun rule translation_importance", T.select_masks, SPEC,
                   ["importance"], [0.5], 1, tmp_path / "masks.parquet", importance=importance)  # fmt: skip
    assert "t5-small" in line
    masks = tmp_path / "masks.parquet"
    write_made_from(pd.DataFrame({"strategy": ["random"]}), masks, {"model_spec": OTHER, "seed": 1, "strategies": ["random"]})
    pairs = SentencePairs("en.conllu", "de.conllu", {"importance_pool": 6})
    refused("masks.parquet: made for model_spec .*rerun rule translation_masks", T.evaluate_masks, SPEC, masks, pairs, {},
            tmp_path / "scores.parquet")  # fmt: skip
    assert not (tmp_path / "scores.parquet").exists()


def test_collect_checks_pairs_and_every_cell_once(tmp_path):
    one, two = scores(tmp_path / "s1.parquet", 1), scores(tmp_path / "s2.parquet", 2)
    frame = T.collect([one, two], tmp_path / "all.parquet")
    assert len(frame) == 8 and read_artifact_provenance(tmp_path / "all.parquet", "-")["seeds"] == [1, 2]
    refused("is also in", T.collect, [one, scores(tmp_path / "again.parquet", 1)], tmp_path / "a.parquet")
    refused(r"no \(strategy, fraction\) \('importance', 0.0\)", T.collect, [one, scores(tmp_path / "part.parquet", 3, ["random"])],
            tmp_path / "b.parquet")  # fmt: skip
    other_pairs = scores(tmp_path / "other.parquet", 4, source_sha256="c" * 64)
    refused("other.parquet: made for source_sha256 .*rerun rule translation_evaluate", T.collect, [one, other_pairs],
            tmp_path / "c.parquet")  # fmt: skip
    bare = tmp_path / "bare.parquet"
    pd.read_parquet(two).to_parquet(bare, index=False)
    refused("bare.parquet: records no provenance", T.collect, [bare], tmp_path / "d.parquet")
    assert not any((tmp_path / f"{n}.parquet").exists() for n in "abcd")


def test_report_refuses_importance_or_roles_of_another_model(tmp_path):
    T.collect([scores(tmp_path / "s1.parquet", 1)], tmp_path / "all.parquet")
    for name, spec in (("importance", OTHER), ("roles", SPEC)):
        write_made_from(pd.DataFrame({"x": [1]}), tmp_path / f"{name}.parquet", dict(MADE, model_spec=spec))
    refused("importance.parquet: made for model_spec", T.report, tmp_path / "all.parquet", tmp_path / "importance.parquet",
            tmp_path / "roles.parquet", "m", tmp_path / "cmp.parquet", tmp_path / "fig", "t")  # fmt: skip
    assert not (tmp_path / "cmp.parquet").exists()
