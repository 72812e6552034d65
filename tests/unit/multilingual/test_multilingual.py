"""Multilingual analyses against planted truth, the language-facts table, per-language prunability tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from headsieve.multilingual.analysis import (
    FACTS,
    language_facts,
    layer_distribution,
    map_similarity,
    relative_drops,
    roles_by_language,
    similarity_by_fact,
)
from headsieve.multilingual.layers import layer_masks


def test_language_facts_cover_the_pud_languages(data):
    facts = language_facts()
    codes = {p.name.split("_")[0] for p in (data / "ud").glob("UD_*-PUD/*.conllu")}
    assert len(codes) == 19 and codes <= set(facts.index)
    assert set(FACTS) <= set(facts.columns)
    assert facts.loc["fi", "morphology"] == "agglutinative" and facts.loc["tr", "word_order"] == "SOV"
    assert facts.loc["en", "resources"] == "high" and facts.loc["is", "resources"] == "low"


def role_table(rng, labelled: set, roles=("local", "cls", "syntactic"), L=4, H=4) -> pd.DataFrame:
    rows = []
    for layer, head, role in itertools.product(range(L), range(H), roles):
        on = (layer, head, role) in labelled
        rows.append({"layer": layer, "head": head, "role": role, "n": 100, "mean": (5 if on else 1) + rng.normal(0, 0.1),
                     "p_adj": 0.001 if on else 0.9, "label": on})  # fmt: skip
    return pd.DataFrame(rows)


def planted_languages(rng):
    """Two groups of languages: the agglutinative ones share one role map, the fusional ones another."""
    facts = language_facts()
    group_a = {(0, 0, "local"), (1, 1, "cls"), (2, 2, "syntactic"), (3, 3, "cls")}
    group_b = {(0, 1, "local"), (3, 0, "cls"), (1, 2, "syntactic"), (2, 3, "local")}
    tables = {}
    for code in ("fi", "tr", "ko", "id", "en", "de", "fr", "ru", "es", "it"):
        base = group_a if facts.loc[code, "morphology"] == "agglutinative" else group_b
        noise = {(int(rng.integers(4)), int(rng.integers(4)), "local")}
        tables[code] = role_table(rng, base | noise)
    return tables


def test_similarity_finds_the_planted_groups():
    rng = np.random.default_rng(0)
    by_language = roles_by_language(planted_languages(rng))
    assert set(by_language.columns) == {"language", "layer", "head", "role", "n", "mean", "p_adj", "label"}
    sim = map_similarity(by_language)
    assert len(sim) == 45
    within = sim[(sim.language_a == "fi") & (sim.language_b == "tr")].jaccard.item()
    across = sim[(sim.language_a == "en") & (sim.language_b == "fi")].jaccard.item()
    assert within > 0.5 > across
    facts = language_facts()
    tested = similarity_by_fact(sim, facts, "jaccard", permutations=2000).set_index("fact")
    assert tested.loc["morphology", "p"] < 0.01 and tested.loc["morphology", "difference"] > 0.3
    # word order is not what the maps were planted on: no effect to find
    assert tested.loc["word_order", "p"] > 0.05
    corr = similarity_by_fact(sim, facts, "correlation", permutations=500).set_index("fact")
    assert corr.loc["morphology", "difference"] > 0


def test_layer_distribution_counts_labels():
    rng = np.random.default_rng(1)
    by_language = roles_by_language({"en": role_table(rng, {(0, 0, "cls"), (0, 1, "cls"), (3, 2, "cls")})})
    dist = layer_distribution(by_language)
    cls = dist[dist.role == "cls"].set_index("layer")
    assert cls.loc[0, "heads"] == 2 and cls.loc[3, "heads"] == 1 and cls.loc[1, "heads"] == 0
    assert cls.loc[0, "share"] == pytest.approx(0.5)


def test_layer_masks():
    masks = {name: mask["encoder"] for name, mask in layer_masks(6, 4).items()}  # {kind: array} per mask
    assert list(masks)[:3] == ["none", "layer:0", "layer:1"] and "band:top" in masks
    assert masks["none"].sum() == 24 and (masks["layer:2"][2] == 0).all() and masks["layer:2"].sum() == 20
    assert (masks["band:top"][4:] == 0).all() and masks["band:top"][:4].sum() == 16


def test_relative_drops():
    rows = []
    for language, base, layer0 in (("en", 0.8, 0.4), ("de", 0.6, 0.6)):
        for seed in (1, 2):
            for strategy, value in (("none", base), ("layer:0", layer0), ("band:top", base / 2)):
                rows.append({"model": "m", "task": "nli", "language": language, "seed": seed, "strategy": strategy,
                             "metric": "accuracy", "value": value, "primary": True})  # fmt: skip
    drops = relative_drops(pd.DataFrame(rows)).set_index(["language", "strategy"])
    assert drops.loc[("en", "layer:0"), "relative_drop"] == pytest.approx(0.5)
    assert drops.loc[("de", "layer:0"), "relative_drop"] == pytest.approx(0.0)
    assert drops.loc[("de", "band:top"), "kind"] == "band" and drops.loc[("de", "band:top"), "where"] == "top"
    assert ("en", "none") not in drops.index


def test_multi_file_corpora(data):
    from headsieve.io.glue import read_glue, task_spec

    files = sorted((data / "glue/MNLI-kshot").glob("*/train.tsv"))
    examples = read_glue(files, task_spec("mnli"))
    assert len(files) == 5 and len(examples) == 240
    assert [e.example_id for e in examples[:3]] == ["0", "1", "2"] and examples[-1].example_id == "239"
    assert len(read_glue(files, task_spec("mnli"), max_examples=100)) == 100
