"""Provenance and coverage of the multilingual artifacts (issue #18 item 2): the per-language evaluations,
the random-pruning curves and layer CKA record the fine-tuning they come from; the role maps check the role
tests' model and corpora; collecting steps refuse a (model, seed) given twice or an input that lacks a cell."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from headsieve.errors import HeadsieveError
from headsieve.steps import multilingual as M
from headsieve.steps.pruning import write_made_from
from headsieve.steps.settings import Model, RandomPruningSettings, TaskSettings

FINETUNED = {"rule": "finetune", "model": "bert", "model_spec": {"source": "bert-base"}, "seed": 1, "max_length": 64,
             "eval_sha256": "e" * 64}  # fmt: skip


def finetuned(tmp_path, **changes):
    folder = tmp_path / "finetuned"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"eval": {}, "provenance": dict(FINETUNED, **changes)}))
    return folder


def refused(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(HeadsieveError, match=match) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_evaluations_refuse_a_fine_tuning_of_another_seed_or_model(tmp_path):
    folder = finetuned(tmp_path)
    line = refused("made for seed 1, not 2", M.evaluate_languages, folder, {}, {"max_length": 64}, "bert", "xnli", 2,
                   tmp_path / "languages.parquet")  # fmt: skip
    assert "finetuned/metrics.json" in line and "rerun rule finetune" in line
    refused("finetuned/metrics.json: made for model 'bert', not 'e5'", M.evaluate_languages, folder, {}, {"max_length": 64}, "e5", "xnli", 1,
            tmp_path / "languages.parquet")  # fmt: skip
    task = TaskSettings({"max_length": 64}, eval_spec={"format": "xnli"}, eval=[__file__])
    refused("made for eval_sha256", M.effects, folder, Model("bert", {"source": "bert-base"}), "xnli", task,
            RandomPruningSettings([0.5]), 1, curve=tmp_path / "c.parquet", cka=tmp_path / "k.parquet")  # fmt: skip
    assert not list(tmp_path.glob("*.parquet"))


def languages(path, model: str, seed: int, langs=("de", "en"), task="xnli"):
    write_made_from(pd.DataFrame({"language": list(langs)}), path,
                    {"model": model, "task": task, "seed": seed, "evals": {k: {"sha256": k} for k in langs}})  # fmt: skip
    return path


def test_multilingual_pruning_checks_each_model_and_seed_once(tmp_path):
    one = languages(tmp_path / "a.parquet", "bert", 1)
    refused(r"\(model, seed\) \('bert', 1\) is also in", M.pruning, [one, languages(tmp_path / "b.parquet", "bert", 1)],
            tmp_path / "drops.parquet", tmp_path / "fig", "t")  # fmt: skip
    refused("no language 'en'", M.pruning, [one, languages(tmp_path / "c.parquet", "e5", 1, langs=("de",))],
            tmp_path / "drops.parquet", tmp_path / "fig", "t")  # fmt: skip
    refused("made for task 'xnli', not 'mnli'|made for task 'mnli', not 'xnli'", M.pruning,
            [one, languages(tmp_path / "d.parquet", "e5", 1, task="mnli")], tmp_path / "drops.parquet", tmp_path / "fig", "t")  # fmt: skip
    assert not (tmp_path / "drops.parquet").exists()


def test_role_maps_check_the_model_and_each_language_corpus(tmp_path):
    tests = {}
    for language, model, corpus in (("de", "e5", "pud_de"), ("en", "bert", "pud_en"), ("fr", "e5", "pud_de")):
        tests[language] = tmp_path / f"{language}.parquet"
        write_made_from(pd.DataFrame({"layer": [0]}), tests[language], {"model": model, "corpus": corpus})
    refused("en.parquet: made for model 'bert', not 'e5'.*rerun rule test_roles", M.roles, {k: tests[k] for k in ("de", "en")},
            tmp_path / "out", tmp_path / "fig", "t")  # fmt: skip
    refused("fr.parquet: tests of corpus 'pud_de', as for language de", M.roles, {k: tests[k] for k in ("de", "fr")},
            tmp_path / "out", tmp_path / "fig", "t")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_study_pairs_curves_and_cka_of_the_same_runs(tmp_path):
    def effects(name, model, seed, run="r"):
        path = tmp_path / f"{name}.parquet"
        write_made_from(pd.DataFrame({"x": [0]}), path, {"model": model, "task": "sst2", "seed": seed, "run": run})
        return path

    curves = [effects("c1", "bert", 1), effects("c2", "e5", 1)]
    refused(r"\(model, task, seed\) \('bert', 'sst2', 1\) is also in", M.study, curves + [effects("c3", "bert", 1, "x")],
            [], ["bert", "e5"], tmp_path / "out", tmp_path / "fig", "t")  # fmt: skip
    line = refused("the cka tables: no .*'e5', 'sst2', 1", M.study, curves, [effects("k1", "bert", 1)], ["bert", "e5"],
                   tmp_path / "out", tmp_path / "fig", "t")  # fmt: skip
    assert "an input is missing" in line
    refused("no .*'bert', 'sst2', 1", M.study, curves, [effects("k1", "bert", 1, "other run"), effects("k2", "e5", 1)],
            ["bert", "e5"], tmp_path / "out", tmp_path / "fig", "t")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_chain_reads_its_own_records(tmp_path, tiny_bert, data, one_thread):
    """A real fine-tuning, its per-language evaluations and random-pruning effects, then the drops: every
    reader accepts what its writer recorded."""
    from headsieve.io.provenance import read_artifact_provenance, record_sha256
    from headsieve.steps import pruning as P

    sst2 = {"format": "glue", "task": "sst2"}
    options = {"max_length": 32, "max_train": 32, "max_eval": 16}
    task = TaskSettings(options, sst2, [data / "glue/SST-2/train.tsv"], sst2, [data / "glue/SST-2/dev.tsv"])
    model = Model("tiny", {"source": str(tiny_bert)})
    P.finetune(model, task, {"max_steps": 1, "batch_size": 16}, 1, tmp_path / "finetuned", tmp_path / "work")
    made = record_sha256(read_artifact_provenance(tmp_path / "finetuned", "finetune"))
    evals = {"en": {"spec": sst2, "paths": [str(data / "glue/SST-2/dev.tsv")]}}
    M.evaluate_languages(tmp_path / "finetuned", evals, options, "tiny", "sst2", 1, tmp_path / "languages.parquet")
    record = read_artifact_provenance(tmp_path / "languages.parquet", "-")
    assert record["finetuned"] == made and list(record["evals"]) == ["en"] and record["seed"] == 1
    M.pruning([tmp_path / "languages.parquet"], tmp_path / "drops.parquet", tmp_path / "drops", "t")
    assert read_artifact_provenance(tmp_path / "drops.parquet", "-")["inputs"] == [record_sha256(record)]
    M.effects(tmp_path / "finetuned", model, "sst2", task, RandomPruningSettings([0.0, 0.5], cka_examples=8, batch_size=16), 1,
              curve=tmp_path / "curve.parquet", cka=tmp_path / "cka.parquet")  # fmt: skip
    curve = read_artifact_provenance(tmp_path / "curve.parquet", "-")
    assert curve == read_artifact_provenance(tmp_path / "cka.parquet", "-") and curve["finetuned"] == made
