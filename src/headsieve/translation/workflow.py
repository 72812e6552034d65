"""What ``workflow/rules/translation.smk`` needs of the config's ``translation`` section beyond the schema.

The section is typed, defaulted and validated with the rest of the config (``workflow/schemas/config.schema.yaml``,
:func:`headsieve.config.validate_config`); the checks the schema cannot make live here: strategy names exist
in the strategy registry, and each model's languages name PUD corpora of ``corpora`` (through
``translation.languages``).  Every problem is a one-line :class:`HeadsieveError` naming the config key.
"""

from __future__ import annotations

import json
import os

from headsieve.errors import HeadsieveError

#: the sides of a translation pair, each a model entry's ``<side>_language``
SIDES = ("source", "target")


def check_strategies(strategies: list[str]) -> None:
    """One line naming the first entry of ``translation.strategies`` that the strategy registry refuses
    (tried on a small encoder-decoder head space; role strategies need labels, which translation has not)."""
    from headsieve.pruning.strategies import check_strategy

    for i, name in enumerate(strategies):
        try:
            check_strategy(name)
        except HeadsieveError as err:
            raise HeadsieveError(f"config key 'translation.strategies[{i}]': {err}") from None


def check_languages(settings: dict, corpora: dict) -> None:
    """Every language of ``translation.languages`` is a one-file conllu corpus; every model's languages are there."""
    languages = settings.get("languages") or {}
    for code, corpus in languages.items():
        where = f"config key 'translation.languages.{code}'"
        if corpus not in corpora:
            raise HeadsieveError(f"{where}: unknown corpus '{corpus}' (a PUD treebank entry of corpora)")
        spec = corpora[corpus]
        if spec["format"] != "conllu":
            raise HeadsieveError(f"{where}: corpus '{corpus}' is {spec['format']}, not a conllu treebank")
        if any(c in spec.get("path", "") for c in "*?["):
            raise HeadsieveError(f"{where}: corpus '{corpus}' names several files ({spec['path']}); give one file")
    for key, spec in (settings.get("models") or {}).items():
        for side in SIDES:
            code = spec[f"{side}_language"]
            if code not in languages:
                raise HeadsieveError(
                    f"config key 'translation.models.{key}.{side}_language': '{code}' is not in translation.languages "
                    f"(add its PUD corpus there, e.g. {code}: pud_{code})"
                )


def pair_corpora(settings: dict, key: str) -> dict[str, str]:
    """``{"source": corpus key, "target": corpus key}`` of translation model ``key``."""
    spec, languages = settings["models"][key], settings["languages"]
    return {side: languages[spec[f"{side}_language"]] for side in SIDES}


def as_json(value) -> str:
    """A settings entry as canonical JSON (a rule param: a change reruns the step)."""
    return json.dumps(value, sort_keys=True)


def translation_title(settings: dict, key: str) -> str:
    """Figure title of model ``key``: the key, the model's name (a hub id, or a folder's name), the pair."""
    spec = settings["models"][key]
    source = os.path.expanduser(str(spec["source"]))
    name = os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
    return f"{key}: {name}, {spec['source_language']} -> {spec['target_language']}"
