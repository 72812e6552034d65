"""The attention steps load a fine-tuned model only if its folder records the pre-trained model and seed its
key names (issue #18 item 2: every reader checks what an artifact was made from)."""

from __future__ import annotations

import json
import shutil

import pytest

from headsieve.errors import HeadsieveError
from headsieve.steps import attention as A
from headsieve.steps.settings import Corpus, Model
from support.corpora import GOOD, write


def finetuned_folder(tmp_path, tiny_bert, record):
    """A fine-tuned model folder as rule finetune leaves it: model/ and metrics.json with ``record``."""
    folder = tmp_path / "minilm" / "sst2" / "seed2" / "finetuned"
    shutil.copytree(tiny_bert, folder / "model")
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps({"eval": {}, "provenance": record}), encoding="utf-8")
    return folder


def finetuned_model(folder, seed=2):
    return Model("minilm--sst2--seed2", {"source": str(folder / "model"), "finetuned": {"model": "minilm", "seed": seed}})


def test_a_finetuned_folder_of_the_seed_its_key_names_is_loaded(tmp_path, tiny_bert):
    folder = finetuned_folder(tmp_path, tiny_bert, {"rule": "finetune", "model": "minilm", "seed": 2})
    out = tmp_path / "tokens.parquet"
    corpus = Corpus("ud", {"format": "conllu"}, [str(write(tmp_path, GOOD))])
    A.tokenize(finetuned_model(folder), corpus, 32, out)
    assert out.is_file()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"rule": "finetune", "model": "minilm", "seed": 1}, "metrics.json: made for seed 1, not 2: rerun rule finetune"),
        ({"rule": "finetune", "model": "e5", "seed": 2}, "metrics.json: made for model 'e5', not 'minilm': rerun rule finetune"),
        (None, "metrics.json: missing (rerun rule finetune)"),
    ],
)
def test_a_finetuned_folder_of_another_model_or_seed_is_refused(tmp_path, tiny_bert, record, message):
    folder = finetuned_folder(tmp_path, tiny_bert, record)
    out = tmp_path / "tokens.parquet"
    corpus = Corpus("ud", {"format": "conllu"}, [str(write(tmp_path, GOOD))])
    with pytest.raises(HeadsieveError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        A.tokenize(finetuned_model(folder), corpus, 32, out)
    assert "\n" not in str(err.value)
    assert not out.exists()
    with pytest.raises(HeadsieveError, match="made for seed|made for model|missing"):
        A.dump(finetuned_model(folder), "ud", out, tmp_path / "dump")
    assert not (tmp_path / "dump").exists()


def test_a_pretrained_model_needs_no_record(tmp_path, tiny_bert):
    A.check_finetuned(Model("tiny", {"source": str(tiny_bert)}))
