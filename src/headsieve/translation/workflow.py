"""Settings of the translation workflow (``config/translation.yaml``) for ``workflow/rules/translation.smk``.

The rules file keeps only wiring; reading and checking the settings, and finding a model's PUD files,
live here.  Every problem is a one-line :class:`HeadsieveError` naming the settings key.
"""

from __future__ import annotations

import json
import os
from numbers import Integral

import yaml

from headsieve.errors import HeadsieveError
from headsieve.translation.data import pud_file

#: sections every settings file must have
SECTIONS = ("models", "pairs", "importance", "generation", "roles", "seeds", "fractions", "strategies")


def load_settings(path: str | os.PathLike) -> dict:
    """The checked ``translation`` section of a settings file."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except FileNotFoundError:
        raise HeadsieveError(
            f"{path}: translation settings file not found"
        ) from None
    except yaml.YAMLError as err:
        raise HeadsieveError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    settings = (document or {}).get("translation") if isinstance(document, dict) else None
    if not isinstance(settings, dict):
        raise HeadsieveError(f"{path}: no 'translation' section")
    check_settings(settings, str(path))
    return settings


def check_settings(settings: dict, where: str = "translation settings") -> None:
    """Fail with one line on the first missing section, model entry, strategy, fraction or seed problem."""
    from headsieve.pruning.strategies import check_fraction
    from headsieve.translation.strategies import check_strategy

    for section in SECTIONS:
        if section not in settings:
            raise HeadsieveError(f"{where}: key 'translation.{section}' is missing")
    if not isinstance(settings["models"], dict) or not settings["models"]:
        raise HeadsieveError(f"{where}: 'translation.models' must name at least one model")
    for key, spec in settings["models"].items():
        for field in ("source", "source_language", "target_language"):
            if not isinstance(spec, dict) or not str(spec.get(field) or "").strip():
                raise HeadsieveError(f"{where}: key 'translation.models.{key}.{field}' is missing")
    for name in settings["strategies"]:
        check_strategy(name)
    for fraction in settings["fractions"]:
        check_fraction(fraction)
    for seed in settings["seeds"]:
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise HeadsieveError(f"{where}: seed {seed!r} in 'translation.seeds' is not a non-negative integer")


def ud_dir(settings: dict, data_dir: str | None) -> str:
    """Where the PUD treebanks are: ``ud_dir``, else ``<data_dir>/ud``."""
    return settings.get("ud_dir") or os.path.join(data_dir or "../shared/data", "ud")


def language_files(settings: dict, data_dir: str | None, key: str) -> dict[str, str]:
    """``{"source": file, "target": file}``: the PUD files of model ``key``'s language pair."""
    spec = settings["models"][key]
    root = ud_dir(settings, data_dir)
    return {
        "source": str(pud_file(root, spec["source_language"])),
        "target": str(pud_file(root, spec["target_language"])),
    }


def as_json(value) -> str:
    """A settings entry as canonical JSON (a rule param: a change reruns the step)."""
    return json.dumps(value, sort_keys=True)


def translation_title(settings: dict, key: str) -> str:
    """Figure title of model ``key``: the key, the model's name (a hub id, or a folder's name), the pair."""
    spec = settings["models"][key]
    source = os.path.expanduser(str(spec["source"]))
    name = os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
    return f"{key}: {name}, {spec['source_language']} -> {spec['target_language']}"
