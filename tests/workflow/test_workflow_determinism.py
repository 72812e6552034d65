"""The whole default pipeline gives the same bytes as the run recorded in ``tests/data/default_outputs.json``
(but for the outputs changed on purpose since: ``default_outputs_changes.json``, each with why;
tests/support/manifest.py).

The recorded digests come from another run: another working directory, another process, made before the change
under test. Equality with them is run-to-run determinism (the same config and seed give the same bytes), so the
pipeline runs once here; running it twice in the same session proved no more and doubled the suite's longest test.

The config is ``config/config.yaml`` itself with every stage kept (roles on the pre-trained and the fine-tuned
model; pruning with every strategy under both protocols, compensation; the e5 conversion, roles per language
and per-language prunability; the SmolLM2 roles and pruning) and only its sizes cut to fit a test: fewer
sentences, training examples, seeds, fractions, steps and languages. A change meant to change outputs records
them again with the change that explains it.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from support.manifest import MANIFEST, artifacts, digest, expected_digests, small_default_config, without_seconds
from support.workflow import snakemake, write_config

pytestmark = pytest.mark.e2e


def test_default_pipeline_gives_the_recorded_bytes(tmp_path, data):
    workdir = tmp_path / "run"
    proc = snakemake(workdir, config=write_config(workdir, small_default_config(data)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = artifacts(workdir)
    names = list(run)

    # every stage of the default run made its tables
    for part in ("minilm/ewt_dev/roles/tests.parquet", "minilm--sst2/ewt_dev/roles/tests.parquet",
                 "minilm/ewt_dev/roles/finetuned-sst2/change.parquet", "minilm/sst2/pruning/evaluations.parquet",
                 "minilm/sst2/seed1/compensation.parquet", "e5/multilingual/similarity.parquet",
                 "multilingual/nli/relative_drops.parquet", "minilm/qnli_dev/roles/tests.parquet",
                 "minilm/ewt_dev_parsed/roles/gold_agreement.parquet", "minilm/sst2_dev_parsed/roles/tests.parquet",
                 "llm/smollm2/role_tests.parquet", "llm/smollm2/comparisons.parquet"):  # fmt: skip
        assert any(part in name for name in names), f"no {part} among {names[:20]}"
    assert sum(name.endswith(".parquet") for name in names) >= 20
    assert "summary.md" in names  # the run's results document (results_summary)

    metrics = [name for name in names if name.endswith("metrics.json")]
    assert len(metrics) >= 5
    for name in metrics:
        record = without_seconds(json.loads(run[name].read_text(encoding="utf-8")))
        # real numbers, not empty records that match trivially (a prune_finetune job's metrics hold one record
        # per strategy@fraction)
        records = [record] if "eval" in record else [v for k, v in record.items() if k != "provenance"]  # #18
        assert records and all(r["eval"] for r in records), name
    for name in names:
        if name.endswith(".parquet"):
            assert pq.read_metadata(run[name]).num_rows > 0 or "dropped" in name, name

    recorded = expected_digests()
    assert sorted(recorded) == sorted(names), "the run made other outputs than the recorded run"
    changed = [name for name in names if digest(run[name]) != recorded[name]]
    assert not changed, f"differ from the recorded outputs ({MANIFEST.name}): {changed}"
