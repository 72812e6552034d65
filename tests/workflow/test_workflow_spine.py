"""End to end: the real snakemake, the real minilm model, real UD data from the mirror."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from headsieve.io.shards import iter_dump
from headsieve.models.load import load_encoder

from support.workflow import sample_config, snakemake, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def spine_run(tmp_path_factory, data):
    workdir = tmp_path_factory.mktemp("spine")
    config = write_config(workdir, sample_config(data, n=40))
    proc = snakemake(workdir, "results/minilm/ewt/attention", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, config


def test_tokens_and_dump_from_real_run(spine_run):
    workdir, _ = spine_run
    tokens = pq.read_table(workdir / "results/minilm/ewt/tokens.parquet").to_pylist()
    assert len(tokens) == 40
    assert tokens[0]["sentence_id"].startswith("weblog-") and tokens[0]["pieces"][0] == "[CLS]"
    assert (workdir / "logs/minilm/ewt/tokenize.log").read_text().count("tokenized:") == 1
    assert (workdir / "benchmarks/minilm/ewt/dump_attention.tsv").exists()
    model = load_encoder("minilm", {"source": "minilm"})
    by_index = {t["sentence_index"]: t for t in tokens}
    rows = 0
    for row, att in iter_dump(workdir / "results/minilm/ewt/attention"):
        rows += 1
        if row["sentence_index"] % 10:
            continue
        rec = by_index[row["sentence_index"]]
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([rec["input_ids"]]), output_attentions=True)
        fresh = torch.stack(out.attentions, 1)[0].numpy()
        assert att.shape == (6, 12, rec["n_pieces"], rec["n_pieces"])
        np.testing.assert_allclose(att.astype(np.float32), fresh, atol=1e-3, rtol=2e-3)
    assert rows == 40


def test_rerun_does_nothing(spine_run):
    workdir, config = spine_run
    proc = snakemake(workdir, "results/minilm/ewt/attention", "-n", config=config)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["attention"].update(models=["nope"]), "config key 'attention.models[0]': unknown model 'nope'"),
        (lambda c: c.update(unknown_key=1), "config key 'unknown_key': unknown key"),
        (lambda c: c["attention"].update(max_length="long"), "config key 'attention.max_length': 'long' is not of type"),
        (lambda c: c["corpora"].update({"x; rm -rf ~": c["corpora"]["ewt"]}), "name 'x; rm -rf ~' is not allowed"),
        (lambda c: c["corpora"]["ewt"].update(path="ud/none.conllu"), "corpus 'ewt': file '"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, data, edit, expected):
    config = sample_config(data, n=5)
    edit(config)
    proc = snakemake(tmp_path, config=write_config(tmp_path, config))
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_corpus_missing_locally_is_downloaded_and_verified(tmp_path, data):
    """A corpus absent from data_dir is fetched from its url into resources/, sha256-checked; a wrong
    checksum stops the run with one line and leaves no file."""
    source = data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu"
    config = sample_config(tmp_path / "no-mirror", n=10)
    config["corpora"]["ewt"].update(
        url=source.as_uri(), sha256="531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"
    )
    proc = snakemake(tmp_path, "results/minilm/ewt/tokens.parquet", config=write_config(tmp_path, config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    fetched = tmp_path / "resources/corpora/ewt/en_ewt-ud-dev.conllu"
    assert fetched.read_bytes() == source.read_bytes()
    bad = tmp_path / "bad"
    config["corpora"]["ewt"]["sha256"] = "0" * 64
    proc = snakemake(bad, "results/minilm/ewt/tokens.parquet", config=write_config(bad, config))
    assert proc.returncode != 0
    assert "sha256 mismatch" in (proc.stdout + proc.stderr)
    assert not (bad / "resources/corpora/ewt/en_ewt-ud-dev.conllu").exists()
