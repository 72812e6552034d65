"""End to end: the offline multilingual encoder converted by its rule, role maps on three PUD languages,
and per-language prunability on English and German NLI, through the real snakemake (small subsets)."""

from __future__ import annotations

import pandas as pd
import pytest

from workflow_utils import sample_config, snakemake, write_config

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
        }
    )
    config["roles"] = {"models": [], "corpora": []}
    config["tasks"] = {"nli": {"train": "mnli_train", "eval": "mnli_dev", "max_train": 64, "max_eval": 32, "max_length": 64}}
    config["pruning"] = {"finetune": {"max_steps": 4, "batch_size": 16, "checkpoint_every": 2}}
    config["multilingual"] = {
        "models": ["e5"],
        "languages": {code: f"pud_{code}" for code in LANGUAGES},
        "prunability": {"models": ["e5"], "tasks": ["nli"], "seeds": [1],
                        "evaluations": {"nli": {"en": "mnli_dev", "de": "xnli_de"}}},  # fmt: skip
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
