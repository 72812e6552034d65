"""Model families the head code supports, one declarative description per module (see
:mod:`headsieve.models.families.base`), found by the config's ``model_type``.

Adding a family: a new module with a :class:`~headsieve.models.families.base.Family` named ``FAMILY``, its
entry in :data:`FAMILIES`, and tests (tests/unit/models/test_heads.py builds a tiny model of every family).
"""

from __future__ import annotations

from headsieve.errors import HeadsieveError
from headsieve.models.families import bart, bert, distilbert, gpt2, llama, t5
from headsieve.models.families.base import Family

#: every family description, in the order errors list their model types
FAMILIES: tuple[Family, ...] = (bert.FAMILY, distilbert.FAMILY, bart.FAMILY, t5.FAMILY, gpt2.FAMILY, llama.FAMILY)

_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def supported_types() -> tuple[str, ...]:
    """Every model type with a family description."""
    return tuple(_BY_TYPE)


def family_of(config) -> Family:
    """The description of the family of ``config.model_type``; a one-line error for other types."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_TYPE:
        raise HeadsieveError(
            f"model type '{model_type or type(config).__name__}' cannot be head-masked or pruned "
            f"(supported: {', '.join(_BY_TYPE)})"
        )
    return _BY_TYPE[model_type]
