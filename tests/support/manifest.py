"""The recorded outputs of the cut-down default run: sha256 of every table, shard, checkpoint and summary.

The redesign of issue 16 promised byte-identical outputs; ``tests/data/default_outputs.json`` holds the digests of
the run made before its first move, and ``test_workflow_determinism`` compares every later run against them.
``tests/data/default_outputs_changes.json`` lists the outputs changed on purpose since, each with its new digest
and why (issue 16 changed one: the masks tables gained their ``kind`` column).  When a change is meant to change
outputs, add its files there with the reason, or record everything again (one run, a few minutes) and commit the
new file with the change that explains it::

    python tests/support/manifest.py [WORKDIR]  # runs the cut-down default config once, rewrites the manifest

With WORKDIR the run is kept there (and a killed run resumes there); without, it runs in a scratch folder.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: python tests/support/manifest.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.workflow import REPO, snakemake, write_config  # noqa: E402

MANIFEST = REPO / "tests" / "data" / "default_outputs.json"
#: outputs changed on purpose since the manifest was recorded: {name: {"sha256": ..., "why": ...}}
CHANGES = REPO / "tests" / "data" / "default_outputs_changes.json"
LANGUAGES = ("de", "en", "fi")  # of the 19: a close language, English, an agglutinative one
COMPARED = (".parquet", ".json", ".md", ".csv", ".tsv", ".npz", ".safetensors")


def small_default_config(data) -> dict:
    """``config/config.yaml`` itself, every stage kept, with only its sizes cut to fit a test."""
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
    llm = config["llm"]  # the real SmolLM2 stand-in, few inputs; 5 seeds, the schema's least
    llm["inputs"].update(max_sentences=6)
    llm["inputs"]["repeated"].update(count=4)
    llm["inputs"]["needles"].update(count=4)
    llm["pruning"]["fractions"] = [0.0, 0.25]
    evaluation = llm["pruning"]["evaluation"]
    evaluation["max_sentences"] = 4
    evaluation["copying"].update(count=4)
    evaluation["needles"].update(count=4)
    return config


def without_seconds(value):
    """A metrics record without the wall-clock time its job took (the one field that differs between runs)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    return value


def artifacts(workdir: Path) -> dict[str, Path]:
    root = workdir / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in COMPARED}


def digest(path: Path) -> str:
    """sha256 of a file's bytes; of a metrics.json, of its canonical JSON without the seconds."""
    if path.name == "metrics.json":
        record = without_seconds(json.loads(path.read_text(encoding="utf-8")))
        data = json.dumps(record, sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def digests(workdir: Path) -> dict[str, str]:
    return {name: digest(path) for name, path in artifacts(workdir).items()}


def expected_digests() -> dict[str, str]:
    """The recorded digests, with the outputs changed on purpose (:data:`CHANGES`, each with its reason)."""
    recorded = json.loads(MANIFEST.read_text(encoding="utf-8"))
    changes = json.loads(CHANGES.read_text(encoding="utf-8")) if CHANGES.exists() else {}
    unknown = sorted(set(changes) - set(recorded))
    assert not unknown, f"{CHANGES.name} names outputs the manifest does not hold: {unknown}"
    return {name: changes[name]["sha256"] if name in changes else digest for name, digest in recorded.items()}


def record(workdir: Path, data: Path, timeout: int = 4 * 3600) -> dict[str, str]:
    config = write_config(workdir, small_default_config(data))
    proc = snakemake(workdir, "--rerun-incomplete", config=config, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    found = digests(workdir)
    MANIFEST.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return found


if __name__ == "__main__":
    from support.paths import data_dir

    if len(sys.argv) > 1:
        print(f"{len(record(Path(sys.argv[1]).resolve(), data_dir()))} outputs recorded in {MANIFEST}")
    else:
        with tempfile.TemporaryDirectory() as scratch:
            print(f"{len(record(Path(scratch) / 'run', data_dir()))} outputs recorded in {MANIFEST}")
