# Config validation, path helpers, input functions and wildcard constraints.
import json
import os
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    from headsieve.config import corpus_local_path, corpus_missing_message, validate_config
    from headsieve.errors import HeadsieveError
except ImportError as err:
    raise WorkflowError(
        f"the headsieve package is not importable ({err}); run the setup in README.md "
        "(pip install -e .) in the environment that runs snakemake"
    )

# Rules call the `headsieve` command. When snakemake runs from a virtualenv that is not activated,
# put that environment's bin folder on PATH so jobs find the command that belongs to this snakemake.
if shutil.which("headsieve") is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

try:
    validate_config(config, Path(workflow.current_basedir) / "../schemas/config.schema.yaml")
except HeadsieveError as err:
    raise WorkflowError(str(err))


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    corpus=r"[A-Za-z0-9][A-Za-z0-9_-]*",


def spec_json(section, key):
    """A config entry as canonical JSON: the rule param that carries it (a change reruns the step)."""
    return json.dumps(config[section][key], sort_keys=True)


def corpus_file(wildcards):
    """The corpus file: the data mirror's copy, else the downloaded one under resources/."""
    local = corpus_local_path(config, wildcards.corpus)
    if local is not None:
        return str(local)
    spec = config["corpora"][wildcards.corpus]
    if "url" not in spec:
        raise WorkflowError(corpus_missing_message(config, wildcards.corpus))
    name = Path(spec.get("member") or spec.get("path") or spec["url"].split("?")[0]).name
    return f"resources/corpora/{wildcards.corpus}/{name}"


ROLE_FIGURES = ("role_map", "relation_map", "heads_per_layer", "pvalues", "colocation")


def role_options():
    """The scoring options of the roles section (tau, alpha and correction belong to the tests)."""
    keys = ("local_window", "direction", "aggregation", "block_weighting", "relations", "union", "subtypes")
    return {k: config["roles"][k] for k in keys}


def role_pairs():
    """(model, corpus) pairs whose head roles are analysed."""
    block = config["roles"]
    return [(m, c) for m in block["models"] for c in block["corpora"]]


def attention_pairs():
    """(model, corpus) pairs whose attention is analysed."""
    block = config["attention"]
    return [(m, c) for m in block["models"] for c in block["corpora"]]


def all_targets():
    targets = []
    for model, corpus in attention_pairs():
        targets.append(f"results/{model}/{corpus}/attention")
    for model, corpus in role_pairs():
        targets.append(f"results/{model}/{corpus}/roles/summary.md")
        targets.append(f"results/{model}/{corpus}/roles/head_stats.parquet")
    return targets
