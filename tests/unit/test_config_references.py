"""The config's references between sections: every listed model, corpus and task must be defined; the error
names the list entry."""

from __future__ import annotations

import pytest

from headsieve.config import _check_references
from headsieve.errors import HeadsieveError

BASE = {
    "models": {"m": {}},
    "corpora": {"c": {"format": "glue", "task": "sst2", "path": "glue/SST-2/dev.tsv"}},
    "tasks": {"k": {"train": "c", "eval": "c"}},
}


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"attention": {"models": ["m", "x"]}}, "config key 'attention.models[1]': unknown model 'x' (defined: m)"),
        ({"roles": {"corpora": ["y"]}}, "config key 'roles.corpora[0]': unknown corpus 'y' (defined: c)"),
        ({"roles": {"finetuned": ["z"]}}, "config key 'roles.finetuned[0]': unknown task 'z'"),
        ({"pruning": {"models": ["q"]}}, "config key 'pruning.models[0]': unknown model 'q'"),
        ({"pruning": {"tasks": ["k", "q"]}}, "config key 'pruning.tasks[1]': unknown task 'q' (defined: k)"),
        ({"multilingual": {"models": ["q"]}}, "config key 'multilingual.models[0]': unknown model 'q'"),
        ({"multilingual": {"prunability": {"models": ["q"]}}}, "config key 'multilingual.prunability.models[0]': unknown model 'q'"),
        ({"multilingual": {"prunability": {"tasks": ["q"]}}}, "config key 'multilingual.prunability.tasks[0]': unknown task 'q'"),
    ],
)
def test_an_unknown_name_in_a_list_is_one_line_naming_the_entry(section, expected):
    with pytest.raises(HeadsieveError) as err:
        _check_references(dict(BASE, **section))
    assert str(err.value) == expected


def test_defined_names_pass():
    config = dict(BASE, attention={"models": ["m"], "corpora": ["c"]}, pruning={"models": ["m"], "tasks": ["k"]})
    _check_references(config)
