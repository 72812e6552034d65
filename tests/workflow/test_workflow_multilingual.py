"""End to end: the offline multilingual encoder converted by its rule, role maps on three PUD languages,
per-language prunability on English and German NLI, and the study (random-pruning curves of minilm against
e5 and per-layer CKA on MRPC, two seeds), through the real snakemake (small subsets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from headsieve.multilingual.analysis import t_interval

from support.workflow import sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e

LANGUAGES = {"en": "UD_English-PUD/en_pud-ud-test.conllu", "de": "UD_German-PUD/de_pud-ud-test.conllu",
             "fi": "UD_Finnish-PUD/fi_pud-ud-test.conllu"}  # fmt: skip


def multilingual_config(data) -> dict:
    config = sample_config(data, n=20)
    config["attention"] = {"models": [], "corpora": []}
    config["models"]["e5"] = {"source": "resources/models/multilingual-e5-small"}
    for code, path in LANGUAGES.items():
        config["corpora"][f"pud_{code}"] = {"format": "conllu", "path": f"ud/{path}", "max_sentences": 25}
    config["corpora"].update(
        {
            "mnli_train": {"format": "glue", "task": "mnli", "path": "glue/MNLI-kshot/*/train.tsv"},
            "mnli_dev": {"format": "glue", "task": "mnli", "path": "glue/MNLI-kshot/*/dev_matched.tsv"},
            "xnli_de": {"format": "xnli", "path": "xnli/de/test.txt"},
            "mrpc_train": {"format": "glue", "task": "mrpc", "path": "glue/MRPC/train.tsv", "max_sentences": 64},
            "mrpc_test": {"format": "glue", "task": "mrpc", "path": "glue/MRPC/test.tsv", "max_sentences": 48},
        }
    )
    config["roles"] = {"models": [], "corpora": []}
    config["tasks"] = {"nli": {"train": "mnli_train", "eval": "mnli_dev", "max_train": 64, "max_eval": 32, "max_length": 64},
                       "mrpc": {"train": "mrpc_train", "eval": "mrpc_test", "max_length": 64}}  # fmt: skip
    config["pruning"] = {"finetune": {"max_steps": 4, "batch_size": 16, "checkpoint_every": 2}}
    config["multilingual"] = {
        "models": ["e5"],
        "languages": {code: f"pud_{code}" for code in LANGUAGES},
        "prunability": {"models": ["e5"], "tasks": ["nli"], "seeds": [1],
                        "evaluations": {"nli": {"en": "mnli_dev", "de": "xnli_de"}}},  # fmt: skip
        "study": {"models": ["minilm", "e5"], "tasks": ["mrpc"], "seeds": [1, 2], "fractions": [0.0, 0.5],
                  "cka_examples": 8},  # fmt: skip
    }
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("multilingual")
    proc = snakemake(workdir, config=write_config(workdir, multilingual_config(data)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def test_converted_model_and_roles_per_language(run):
    assert (run / "resources/models/multilingual-e5-small/model.safetensors").exists()
    by_language = pd.read_parquet(run / "results/e5/multilingual/roles_by_language.parquet")
    assert set(by_language.language) == set(LANGUAGES)
    assert by_language.groupby("language").size().nunique() <= 2  # the same roles per language, relations aside
    assert by_language[["layer", "head"]].drop_duplicates().shape[0] == 144  # 12 layers x 12 heads
    similarity = pd.read_parquet(run / "results/e5/multilingual/similarity.parquet")
    assert len(similarity) == 3 and similarity.jaccard.between(0, 1).all()
    by_fact = pd.read_parquet(run / "results/e5/multilingual/similarity_by_fact.parquet")
    assert {"fact", "mean_sharing", "mean_not_sharing", "p"} <= set(by_fact.columns)
    for name in ("role_distribution", "similarity"):
        assert (run / f"results/e5/multilingual/figures/{name}.png").stat().st_size > 5000


def test_prunability_per_language(run):
    evaluations = pd.read_parquet(run / "results/e5/nli/seed1/languages.parquet")
    assert set(evaluations.language) == {"en", "de"}
    primary = evaluations[evaluations.primary]
    assert set(primary.strategy) == {"none"} | {f"layer:{k}" for k in range(12)} | {"band:bottom", "band:middle", "band:top"}
    assert (primary[primary.strategy == "band:top"].heads_pruned == 48).all()
    assert (primary.n == 32).all()
    drops = pd.read_parquet(run / "results/multilingual/nli/relative_drops.parquet")
    assert len(drops) == 2 * 15 and set(drops.kind) == {"layer", "band"}
    assert (run / "results/multilingual/nli/relative_drops.png").stat().st_size > 5000


def test_study_curves_influence_and_generated_summary(run):
    out = run / "results/multilingual"
    curves = pd.read_parquet(out / "fraction_curves.parquet")
    assert set(curves.model) == {"minilm", "e5"} and set(curves.seed) == {1, 2} and set(curves.fraction) == {0.0, 0.5}
    assert (curves.metric == "accuracy").all() and (curves.loc[curves.fraction == 0, "relative_drop"] == 0).all()
    raw = pd.read_parquet(run / "results/e5/mrpc/seed1/random_curve.parquet")
    assert set(raw.heads_pruned) == {0, 72} and (raw.n == 48).all()  # half of e5's 144 heads
    tests = pd.read_parquet(out / "fraction_tests.parquet")
    assert len(tests) == 1 and {"ci_low", "ci_high", "p", "p_adj", "correction"} <= set(tests.columns)
    cka = pd.read_parquet(out / "layer_cka.parquet")
    assert len(cka) == 2 * (7 + 13) and cka.cka.between(0, 1 + 1e-9).all()
    influence = pd.read_parquet(out / "layer_influence.parquet")
    assert set(influence.model) == {"minilm", "e5"} and {"slope", "ci_low", "ci_high", "p_permutation"} <= set(influence.columns)
    text = (out / "summary.md").read_text()
    for (model, fraction), g in curves[curves.fraction > 0].groupby(["model", "fraction"]):
        mean, low, high = t_interval(g.relative_drop)  # recomputed from the artifact
        assert f"| {model} | mrpc | {mean:.3f} [{low:.3f}, {high:.3f}] |" in text
    for r in influence.itertuples():
        change = 1 - cka[(cka.model == r.model) & (cka.layer > 0)].pivot(index="seed", columns="layer", values="cka")
        depth = change.columns.to_numpy(float) / len(change.columns)
        slopes = [np.polyfit(depth, row, 1)[0] for row in change.to_numpy()]
        assert f"{np.mean(slopes):.3f}" in text
    for name in ("fraction_curves", "layer_influence"):
        assert (out / f"figures/{name}.png").stat().st_size > 5000
