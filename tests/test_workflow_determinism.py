"""The whole default pipeline, run twice in two working directories, gives byte-identical tables and metrics.

The config is ``config/config.yaml`` itself with every stage kept (roles on the pre-trained and the fine-tuned
model; pruning with every strategy under both protocols, compensation; the e5 conversion, roles per language
and per-language prunability) and only its sizes cut to fit a test: fewer sentences, training examples, seeds,
fractions, steps and languages. The full-size default run twice is in the README.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from workflow_utils import REPO, snakemake, write_config

pytestmark = pytest.mark.e2e

LANGUAGES = ("de", "en", "fi")  # of the 19: a close language, English, an agglutinative one
COMPARED = (".parquet", ".json", ".md", ".csv", ".tsv", ".npz", ".safetensors")


def small_default_config(data) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    config["data_dir"] = str(data)
    for key, corpus in config["corpora"].items():
        if corpus["format"] in ("conllu", "parsed"):
            corpus["max_sentences"] = 24 if key == "ewt_dev" else 12
        elif key in config["roles"]["corpora"]:  # the pair corpora of the role maps
            corpus["max_sentences"] = 16
    config["tasks"]["nli"].update(max_train=32, max_eval=16, max_length=48, finetune={"epochs": 1, "batch_size": 16})
    config["tasks"]["sst2"].update(max_train=64, max_eval=32, max_length=40)
    config["tasks"]["mrpc"].update(max_train=32, max_eval=16, max_length=48, finetune={"epochs": 1})
    config["roles"]["finetuned_seeds"] = [1, 2]  # several seeds, as the default, at test size
    pruning = config["pruning"]
    pruning["seeds"] = pruning["seeds"][:1]
    pruning["fractions"] = [0.0, 0.5]
    pruning["importance_examples"] = 32
    pruning["finetune"] = {"max_steps": 4, "batch_size": 16, "learning_rate": 5.0e-5, "checkpoint_every": 2}
    pruning["compensation_examples"] = 8
    multilingual = config["multilingual"]
    multilingual["languages"] = {code: multilingual["languages"][code] for code in LANGUAGES}
    multilingual["prunability"]["tasks"] = ["nli"]  # sst2 takes the same rules
    multilingual["study"].update(seeds=[1, 2], fractions=[0.0, 0.5], cka_examples=16, max_eval=16)
    return config


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    return value


def _artifacts(workdir):
    root = workdir / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in COMPARED}


def test_default_pipeline_twice_is_byte_identical(tmp_path, data):
    config = small_default_config(data)
    runs = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        proc = snakemake(workdir, config=write_config(workdir, config))
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs.append(_artifacts(workdir))
    first, second = runs

    assert sorted(first) == sorted(second)
    names = list(first)
    # every stage of the default run made its tables
    for part in ("minilm/ewt_dev/roles/tests.parquet", "minilm--sst2/ewt_dev/roles/tests.parquet",
                 "minilm/ewt_dev/roles/finetuned-sst2/change.parquet", "minilm/sst2/pruning/evaluations.parquet",
                 "minilm/sst2/seed1/compensation.parquet", "e5/multilingual/similarity.parquet",
                 "multilingual/nli/relative_drops.parquet", "minilm/qnli_dev/roles/tests.parquet",
                 "minilm/ewt_dev_parsed/roles/gold_agreement.parquet", "minilm/sst2_dev_parsed/roles/tests.parquet"):  # fmt: skip
        assert any(part in name for name in names), f"no {part} among {names[:20]}"
    assert sum(name.endswith(".parquet") for name in names) >= 20
    assert "summary.md" in names  # the run's results document (results_summary)

    differing = [
        name for name in names if not name.endswith("metrics.json") and first[name].read_bytes() != second[name].read_bytes()
    ]
    assert not differing, f"differ between two runs of the same config: {differing}"
    metrics = [name for name in names if name.endswith("metrics.json")]
    assert len(metrics) >= 5
    for name in metrics:  # identical but for the wall-clock time a job took
        a, b = (_without_seconds(json.loads(run[name].read_text(encoding="utf-8"))) for run in (first, second))
        assert a == b, name
        # real numbers, not empty records that match trivially (a prune_finetune job's metrics hold one record
        # per strategy@fraction)
        records = [a] if "eval" in a else list(a.values())
        assert records and all(r["eval"] for r in records), name
    for name in names:
        if name.endswith(".parquet"):
            assert pq.read_metadata(first[name]).num_rows > 0 or "dropped" in name, name
