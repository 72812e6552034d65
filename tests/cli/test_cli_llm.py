"""The llm commands as the rules call them (headsieve llm-*): masks of a tiny decoder folder, role tests and the
report from tables, and one-line errors that leave no output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from support.cli import refused, run_cli
from support.decoder import HEADS, LAYERS
from support.llm import tiny_decoder_folder

EWT_DEV = "ud/UD_English-EWT/en_ewt-ud-dev.conllu"


@pytest.fixture(scope="module")
def model(tmp_path_factory, data) -> dict:
    folder = tiny_decoder_folder(tmp_path_factory.mktemp("llm_cli") / "gpt2", "gpt2", data / EWT_DEV)
    return {"source": str(folder)}


def test_llm_masks_command(model, tmp_path):
    out = tmp_path / "masks.parquet"
    proc = run_cli("llm-masks", "--model", "tiny", "--model-spec", json.dumps(model), "--tests=",
                   "--strategies", '["random", "top"]', "--fractions", "[0.0, 0.5]", "--seed", "3",
                   "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    masks = pd.read_parquet(out)
    assert set(masks["strategy"]) == {"random", "top"} and (masks["seed"] == 3).all()
    top = masks[(masks.strategy == "top") & (masks.fraction == 0.5)]
    assert len(top) == LAYERS * HEADS // 2 and top["layer"].min() >= LAYERS // 2  # the top layers first


def test_llm_masks_refuses_a_role_strategy_without_tests(model, tmp_path):
    out = tmp_path / "masks.parquet"
    proc = run_cli("llm-masks", "--model", "tiny", "--model-spec", json.dumps(model), "--tests=",
                   "--strategies", '["prune_role:causal:sink"]', "--fractions", "[0.5]", "--seed", "1",
                   "--output", str(out))  # fmt: skip
    refused(proc, "needs the role labels table", out)


def test_llm_role_tests_and_report_commands(tmp_path):
    rng = np.random.default_rng(0)
    planted = (1, 2)  # the one induction head
    rows = [("m", "repeated", i, layer, head, head // 2, "causal:induction",
             0.9 if (layer, head) == planted else rng.uniform(0, 0.3), 10, 0, "mass")
            for i in range(12) for layer in range(2) for head in range(4)]  # fmt: skip
    from headsieve.io.atomic import write_frame
    from headsieve.io.provenance import provenance_metadata
    from headsieve.steps.llm import EVALUATION_COLUMNS, SCORE_COLUMNS

    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    scores["score"] += rng.normal(0, 0.01, len(scores))
    # the records the llm_role_scores and llm_evaluate steps write (the report checks them)
    write_frame(scores, tmp_path / "scores.parquet", metadata=provenance_metadata({"model": "m", "stand_in": ""}))
    tests, kv = tmp_path / "tests.parquet", tmp_path / "kv.parquet"
    proc = run_cli("llm-role-tests", "--scores", str(tmp_path / "scores.parquet"), "--tau", "null", "--alpha", "0.05",
                   "--correction", "bh", "--output", str(tests), "--kv-output", str(kv))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    labelled = pd.read_parquet(tests).query("label")
    assert list(zip(labelled.layer, labelled["head"])) == [planted]  # the planted head only (mass tau 0.4)
    evaluations = []
    for seed in range(1, 6):
        slope = {"random": 1, "prune_role:causal:induction": 3}  # copying loss per share pruned
        frame = pd.DataFrame([("m", s, f, seed, 4, 0, "copying_loss", 1.0 + f * slope[s] + rng.normal(0, 0.05), 10)
                              for s in slope for f in (0.0, 0.5)], columns=EVALUATION_COLUMNS)  # fmt: skip
        evaluations.append(tmp_path / f"ev{seed}.parquet")
        made = {"model": "m", "stand_in": "", "seed": seed, "tests_sha256": None}
        write_frame(frame, evaluations[-1], metadata=provenance_metadata(made))
    proc = run_cli("llm-report", "--model", "m", "--tests", str(tests), "--kv-tests", str(kv), "--evaluations",
                   *map(str, evaluations), "--figures", str(tmp_path / "figures"), "--evaluations-out",
                   str(tmp_path / "evaluations.parquet"), "--comparisons", str(tmp_path / "comparisons.parquet"),
                   "--summary", str(tmp_path / "summary.md"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comparisons = pd.read_parquet(tmp_path / "comparisons.parquet")
    row = comparisons.set_index("strategy").loc["prune_role:causal:induction"]
    assert row["p_adj"] < 0.05 and row["ci_low"] < 1.0 < row["ci_high"]  # planted: 3 x 0.5 - 1 x 0.5 = 1.0 worse
    assert (tmp_path / "figures" / "copying_loss.pdf").exists() and "causal:induction" in (tmp_path / "summary.md").read_text()


def test_llm_role_scores_refuses_bad_json(model, tmp_path):
    out = tmp_path / "scores.parquet"
    proc = run_cli("llm-role-scores", "--model", "tiny", "--model-spec", json.dumps(model), "--inputs", "{not json",
                   "--options", "{}", "--output", str(out))  # fmt: skip
    refused(proc, "bad JSON argument", out)
