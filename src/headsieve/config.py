"""Config validation: JSON schema (with defaults filled in) plus cross-reference checks.

Every problem is one line naming the config key, e.g.
``config key 'corpora.ewt_dev.format': 'conllx' is not one of ['conllu', 'glue', 'xnli']``.
"""

from __future__ import annotations

import copy
import glob
import os
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from headsieve.errors import HeadsieveError

DATA_DIR_ENV = "HEADSIEVE_DATA_DIR"


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultFilling = _with_defaults(Draft202012Validator)


def ensure_cli_on_path() -> None:
    """Put the running interpreter's bin folder on PATH when the ``headsieve`` command is not found there
    (snakemake started from a virtualenv that is not activated); jobs, local or SLURM, inherit PATH."""
    import shutil
    import sys

    if shutil.which("headsieve") is None:
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def load_yaml(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise HeadsieveError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise HeadsieveError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    return data or {}


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise one line on the first problem."""
    schema = load_yaml(schema_path)
    validator = _DefaultFilling(schema)
    roles = config.get("roles") if isinstance(config, dict) else None
    if isinstance(roles, dict) and isinstance(roles.get("tau_by_role"), dict):
        _check_role_names(config)  # before the schema, whose name pattern would not say which names exist
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = _key(list(err.absolute_path) + [extra[0]]) if extra else _key(err.absolute_path)
            raise HeadsieveError(f"config key '{key}': unknown key")
        if "propertyNames" in err.relative_schema_path or "propertyNames" in err.schema_path:
            raise HeadsieveError(
                f"config key '{_key(err.absolute_path)}': name {err.instance!r} is not allowed "
                "(use letters, digits, '_' and '-', starting with a letter or digit)"
            )
        raise HeadsieveError(f"config key '{_key(err.absolute_path)}': {err.message}")
    _check_references(config)
    _check_translation(config)
    _check_llm(config)
    _check_role_names(config)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        config["data_dir"] = env
    return config


#: corpus formats that hold trees and no labels (a parsed corpus is written as CoNLL-U)
TREEBANK_FORMATS = ("conllu", "parsed")


def _check_listed(key: str, names, defined, what: str, show_defined: bool = False) -> None:
    """Every name of the list at config ``key`` is one of ``defined`` (the models, corpora or tasks), else one
    line naming ``key[i]`` (and, when ``show_defined``, the defined names)."""
    for i, name in enumerate(names):
        if name not in defined:
            listing = f" (defined: {', '.join(defined) or 'none'})" if show_defined else ""
            raise HeadsieveError(f"config key '{key}[{i}]': unknown {what} '{name}'{listing}")


def _check_references(config: dict) -> None:
    models, corpora = config.get("models", {}), config.get("corpora", {})
    for section in ("attention", "roles"):
        block = config.get(section) or {}
        _check_listed(f"{section}.models", block.get("models", []), models, "model", show_defined=True)
        _check_listed(f"{section}.corpora", block.get("corpora", []), corpora, "corpus", show_defined=True)
    tasks = config.get("tasks", {})
    for key, task in tasks.items():
        for split in ("train", "eval"):
            corpus = task[split]
            if corpus not in corpora:
                raise HeadsieveError(f"config key 'tasks.{key}.{split}': unknown corpus '{corpus}'")
            if corpora[corpus]["format"] in TREEBANK_FORMATS:
                raise HeadsieveError(
                    f"config key 'tasks.{key}.{split}': corpus '{corpus}' has no labels ({corpora[corpus]['format']})"
                )
    _check_listed("roles.finetuned", (config.get("roles") or {}).get("finetuned", []), tasks, "task")
    pruning = config.get("pruning") or {}
    _check_listed("pruning.models", pruning.get("models", []), models, "model")
    _check_listed("pruning.tasks", pruning.get("tasks", []), tasks, "task", show_defined=True)
    for i, value in enumerate(pruning.get("fractions", [])):
        if abs(round(value, 2) - value) > 1e-9:
            raise HeadsieveError(f"config key 'pruning.fractions[{i}]': {value} has more than 2 decimals (fractions are 0.00 to 0.99)")
    from headsieve.pruning.strategies import is_fixed_size, needs_role_labels

    strategies = list(pruning.get("strategies", []))
    for i, name in enumerate(pruning.get("compensation_strategies", [])):
        try:
            fixed = is_fixed_size(name)
        except HeadsieveError as err:
            raise HeadsieveError(f"config key 'pruning.compensation_strategies[{i}]': {err}") from None
        if fixed:
            raise HeadsieveError(
                f"config key 'pruning.compensation_strategies[{i}]': '{name}' prunes a fixed set of heads, not a share"
            )
    if needs_role_labels(strategies):
        corpus = pruning.get("role_labels")
        if not corpus:
            raise HeadsieveError("config key 'pruning.role_labels': role strategies need the corpus of the role tests")
        if corpus not in corpora:
            raise HeadsieveError(f"config key 'pruning.role_labels': unknown corpus '{corpus}'")
    block = config.get("multilingual") or {}
    _check_listed("multilingual.models", block.get("models", []), models, "model")
    for language, corpus in (block.get("languages") or {}).items():
        if corpus not in corpora or corpora[corpus]["format"] != "conllu":
            raise HeadsieveError(f"config key 'multilingual.languages.{language}': '{corpus}' is not a conllu corpus")
    prunability = block.get("prunability") or {}
    _check_listed("multilingual.prunability.models", prunability.get("models", []), models, "model")
    _check_listed("multilingual.prunability.tasks", prunability.get("tasks", []), tasks, "task")
    for task, evals in (prunability.get("evaluations") or {}).items():
        for language, corpus in evals.items():
            if corpus not in corpora or corpora[corpus]["format"] in TREEBANK_FORMATS:
                raise HeadsieveError(
                    f"config key 'multilingual.prunability.evaluations.{task}.{language}': '{corpus}' is not a labelled corpus"
                )
    for key, spec in corpora.items():
        if spec["format"] == "parsed":
            _check_parsed(key, spec, corpora)
            continue
        if spec["format"] == "glue" and "task" not in spec:
            raise HeadsieveError(f"config key 'corpora.{key}.task': a glue corpus needs a task")
        if spec.get("task") == "custom" and not ("columns" in spec and "labels" in spec):
            raise HeadsieveError(f"config key 'corpora.{key}': a custom task needs columns and labels")
        if "path" not in spec and "url" not in spec:
            raise HeadsieveError(f"config key 'corpora.{key}': give a path (under data_dir) or a url with its sha256")
        if "url" in spec and "sha256" not in spec:
            raise HeadsieveError(f"config key 'corpora.{key}.sha256': a url needs its sha256")


def _check_translation(config: dict) -> None:
    """The translation section's languages name conllu corpora, its strategies exist (headsieve.translation.workflow)."""
    from headsieve.translation.workflow import check_languages, check_strategies

    settings = config.get("translation") or {}
    check_languages(settings, config.get("corpora", {}))
    check_strategies(settings.get("strategies", []))



# ---- llm section (issue 17: decoder-only language models)
def _check_llm(config: dict) -> None:
    """The llm section names defined models, conllu corpora, and strategies of the registry whose role (for role
    strategies) is a causal role, and the importance strategy has text to rank heads on; one line naming the key
    otherwise."""
    from headsieve.pruning.strategies import STRATEGIES, parse_strategy
    from headsieve.roles.registry import role_names

    block = config.get("llm") or {}
    models, corpora = config.get("models", {}), config.get("corpora", {})
    _check_listed("llm.models", block.get("models", []), models, "model", show_defined=True)
    inputs, evaluation = block.get("inputs") or {}, (block.get("pruning") or {}).get("evaluation") or {}
    texts = [(f"llm.inputs.text[{i}]", c) for i, c in enumerate(inputs.get("text", []))]
    if evaluation.get("perplexity"):
        texts.append(("llm.pruning.evaluation.perplexity", evaluation["perplexity"]))
    for key, corpus in texts:
        if corpus not in corpora or corpora[corpus]["format"] != "conllu":
            raise HeadsieveError(f"config key '{key}': '{corpus}' is not a conllu corpus (UD text)")
    causal = role_names("causal")
    for i, name in enumerate((block.get("pruning") or {}).get("strategies", [])):
        where = f"config key 'llm.pruning.strategies[{i}]'"
        try:
            base, arg = parse_strategy(name)
        except HeadsieveError as err:
            raise HeadsieveError(f"{where}: {err}") from None
        if base == "importance" and not inputs.get("text"):
            raise HeadsieveError(f"{where}: 'importance' ranks heads on the role text: llm.inputs.text names no corpus")
        if STRATEGIES[base].uses_labels and arg not in causal and f"causal:{arg}" not in causal:
            raise HeadsieveError(f"{where}: '{arg}' is not a causal role (causal roles: {', '.join(causal)})")
# ---- end llm section

def _check_parsed(key: str, spec: dict, corpora: dict) -> None:
    """A parsed corpus names a single-text corpus to parse and the spaCy pipeline that parses it."""
    for needed in ("source", "parser"):
        if needed not in spec:
            raise HeadsieveError(f"config key 'corpora.{key}.{needed}': a parsed corpus needs a {needed}")
    source = spec["source"]
    if source not in corpora:
        raise HeadsieveError(f"config key 'corpora.{key}.source': unknown corpus '{source}'")
    if corpora[source]["format"] == "parsed":
        raise HeadsieveError(f"config key 'corpora.{key}.source': '{source}' is a parsed corpus itself")


# ---------------------------------------------------------------- settings shared with the command line (H6)

#: the config schema: the one place that defines the type and range of every setting; Snakemake validates the
#: config against it and the command line checks its arguments against it (:func:`check_setting`).  Package
#: data (pyproject.toml), so an installed headsieve has it; workflow/schemas/config.schema.yaml links to it.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def _check_role_names(config: dict) -> None:
    """Keys of ``roles.tau_by_role`` must name roles (a typo would silently keep the default tau)."""
    tau_by_role = (config.get("roles") or {}).get("tau_by_role") or {}
    check_role_names(tau_by_role, lambda name: f"config key 'roles.tau_by_role.{name}'")


def check_role_names(mapping: dict, where) -> None:
    """One line naming the first key of ``mapping`` that is not a role (``where(key)`` names the setting)."""
    from headsieve.roles.registry import is_role, role_names

    for name in mapping:  # roles of encoders and of decoder-only models (causal:*)
        if not (is_role(str(name), "bidirectional") or is_role(str(name), "causal")):
            known = ", ".join(role_names("bidirectional") + role_names("causal") + ("dep:<relation>",))
            raise HeadsieveError(f"{where(name)}: unknown role '{name}' (known: {known})")


def setting_schema(key: str, schema_path: str | os.PathLike | None = None) -> dict:
    """The schema of one dotted config key (``roles.alpha``)."""
    schema_path = Path(schema_path or SCHEMA_PATH)
    if not schema_path.is_file():
        raise HeadsieveError(f"{schema_path}: config schema not found (reinstall headsieve: it ships the schema as package data)")
    node = load_yaml(schema_path)
    for part in key.split("."):
        items = part.endswith("[]")  # one item of a list setting (pruning.fractions[])
        node = (node.get("properties") or {}).get(part[:-2] if items else part)
        if items and node is not None:
            node = node.get("items")
        if node is None:
            raise KeyError(key)
    return node


def check_setting(value, key: str, flag: str) -> None:
    """Fail with one line when a command-line value lies outside what the schema allows for ``key``."""
    import math

    def finite(v):
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, dict):
            return all(finite(x) for x in v.values())
        return True

    if not finite(value):
        raise HeadsieveError(f"{flag} {value}: not a finite number (config key {key})")
    if key == "roles.tau_by_role" and isinstance(value, dict):
        check_role_names(value, lambda name: f"{flag} key '{name}'")
    errors = list(Draft202012Validator(setting_schema(key)).iter_errors(value))
    if errors:
        raise HeadsieveError(f"{flag} {json_text(value)}: {errors[0].message} (the range of config key {key})")


def json_text(value) -> str:
    import json

    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def corpus_local_path(config: dict, key: str) -> list[Path] | None:
    """The corpus file(s) in the data mirror (``data_dir``/path), or None when they are not there.

    A path with wildcards (``glue/MNLI-kshot/*/train.tsv``) names every matching file, in sorted order."""
    spec = config["corpora"][key]
    if "path" not in spec:
        return None
    path = Path(os.path.expanduser(spec["path"]))
    if not path.is_absolute():
        path = Path(os.path.expanduser(config["data_dir"])) / path
    if any(c in spec["path"] for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        return matches or None
    return [path] if path.is_file() else None


def corpus_missing_message(config: dict, key: str) -> str:
    spec = config["corpora"][key]
    where = Path(os.path.expanduser(config["data_dir"])) / spec["path"] if "path" in spec else None
    return (
        f"corpus '{key}': file '{where}' not found and no url to download it from; "
        f"set data_dir in the config (or {DATA_DIR_ENV}) to your data mirror, or give corpora.{key}.url and sha256"
    )
