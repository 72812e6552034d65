"""The llm section of the config (issue 17 item 6): schema defaults, the default run's and the GPU overlay's
settings, and one-line errors naming the key for every kind of bad value."""

from __future__ import annotations

import copy

import pytest

from headsieve.config import SCHEMA_PATH, load_yaml, validate_config
from headsieve.errors import HeadsieveError

from support.paths import REPO


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` over ``base`` as Snakemake merges --configfile files (mappings merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def default_config() -> dict:
    return load_yaml(REPO / "config" / "config.yaml")


def test_an_empty_llm_section_gets_every_default():
    llm = validate_config({"llm": {}}, SCHEMA_PATH)["llm"]
    assert llm["models"] == [] and llm["chunk"] is None
    assert set(llm["inputs"]) == {"text", "max_sentences", "max_length", "repeated", "needles"}
    assert set(llm["inputs"]["repeated"]) == {"count", "length", "seed"}
    assert set(llm["inputs"]["needles"]) == {"count", "context", "needle", "seed"}
    assert set(llm["roles"]) == {"window", "score", "max_uniform_share", "tau", "alpha", "correction"}
    pruning = llm["pruning"]
    assert len(pruning["seeds"]) >= 5 and 0.0 in pruning["fractions"] and "random" in pruning["strategies"]
    evaluation = pruning["evaluation"]
    # the evaluation inputs are not the role inputs: other seeds by default
    assert evaluation["copying"]["seed"] != llm["inputs"]["repeated"]["seed"]
    assert evaluation["needles"]["seed"] != llm["inputs"]["needles"]["seed"]


def test_the_default_run_has_smollm2_roles_and_a_small_pruning_grid():
    config = validate_config(default_config(), SCHEMA_PATH)
    llm = config["llm"]
    assert llm["models"] == ["smollm2"] and config["models"]["smollm2"]["source"] == "smollm2"
    assert llm["inputs"]["text"] == ["ewt_dev"] and llm["pruning"]["evaluation"]["perplexity"] == "ewt_test"
    assert config["corpora"]["ewt_test"]["path"].endswith("en_ewt-ud-test.conllu")  # held out from the role text
    pruning = llm["pruning"]
    assert len(pruning["seeds"]) >= 5 and len([f for f in pruning["fractions"] if f > 0]) == 2
    assert set(pruning["strategies"]) == {"random", "prune_role:causal:induction", "prune_role:causal:sink"}


def test_the_gpu_overlay_validates_over_the_default_config():
    config = validate_config(merged(default_config(), load_yaml(REPO / "config" / "llm.yaml")), SCHEMA_PATH)
    llm = config["llm"]
    sources = [config["models"][m]["source"] for m in llm["models"]]
    assert "HuggingFaceTB/SmolLM2-135M" in sources and "Qwen/Qwen2.5-0.5B" in sources
    assert llm["chunk"] is not None and 2 * llm["inputs"]["repeated"]["length"] + 1 > llm["chunk"]  # inputs span chunks


@pytest.mark.parametrize(
    "change, key",
    [
        ({"bogus": 1}, "llm.bogus"),
        ({"models": ["nope"]}, "llm.models[0]"),
        ({"inputs": {"text": ["sst2_dev"]}}, "llm.inputs.text[0]"),
        ({"inputs": {"repeated": {"length": 1}}}, "llm.inputs.repeated.length"),
        ({"chunk": 0}, "llm.chunk"),
        ({"roles": {"correction": "bonferroni"}}, "llm.roles.correction"),
        ({"pruning": {"seeds": [1, 2, 3, 4]}}, "llm.pruning.seeds"),
        ({"pruning": {"fractions": [1.0]}}, "llm.pruning.fractions[0]"),
        ({"pruning": {"strategies": ["nonesuch"]}}, "llm.pruning.strategies[0]"),
        ({"pruning": {"strategies": ["prune_role:dep:nsubj"]}}, "llm.pruning.strategies[0]"),
        ({"pruning": {"evaluation": {"perplexity": "mrpc_dev"}}}, "llm.pruning.evaluation.perplexity"),
        ({"inputs": {"text": []}, "pruning": {"strategies": ["importance"]}}, "llm.pruning.strategies[0]"),
    ],
)
def test_a_bad_llm_setting_is_one_line_naming_its_key(change, key):
    config = merged(default_config(), {"llm": change})
    with pytest.raises(HeadsieveError) as err:
        validate_config(config, SCHEMA_PATH)
    message = str(err.value)
    assert f"config key '{key}'" in message and "\n" not in message


def test_role_strategies_take_causal_roles_by_full_or_short_name_and_importance_the_text():
    for name in ("prune_role:causal:induction", "spare_role:sink", "prune_role:causal:retrieval", "importance"):
        validate_config(merged(default_config(), {"llm": {"pruning": {"strategies": ["random", name]}}}), SCHEMA_PATH)
