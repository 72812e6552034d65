"""The role registry (headsieve.roles.registry): one definition per role, every role list derived from it."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from headsieve.config import SCHEMA_PATH, check_role_names
from headsieve.errors import HeadsieveError
from headsieve.roles.registry import (
    ATTENTION,
    ROLE_ORDER,
    ROLES,
    containers,
    default_tau,
    is_role,
    role_family,
    role_names,
)
from headsieve.roles.causal_inputs import text_facts
from headsieve.roles.sieve import SentenceFacts
from headsieve.roles.targets import SourceFacts, diagonal_targets
from headsieve.roles.tests import role_taus
from headsieve.tokens import CLS, OTHER_SPECIAL, REGULAR, SEP

from support.synthetic import pair_row, sentence_row
from support.paths import REPO

SRC = REPO / "src" / "headsieve"

#: literals that hold role names for another reason than listing roles: (module, enclosing assignment or
#: function) -> why
NOT_ROLE_LISTS = {
    ("roles/clark.py", "PIECE_STATS"): "Clark et al.'s attention statistics (stat column), not roles",
    ("roles/separation.py", "KINDS"): "planted head kinds: the truth of the separation matrix, kept independent",
    ("roles/separation.py", "CORPUS_KINDS"): "planted head kinds per corpus (independent truth, as KINDS)",
    ("roles/separation.py", "kind_targets"): "the planted kinds' own target sets (independent truth)",
}


def role_lists(tree: ast.AST):
    """(enclosing name, line, names) of every tuple, list or set literal with >= 3 registered role names."""
    found = []

    def visit(node, owner):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            owner = node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            owner = names[0] if names else owner
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            roles = [s for s in strings if s in ROLES]
            if len(roles) >= 3:
                found.append((owner, node.lineno, roles))
        for child in ast.iter_child_nodes(node):
            visit(child, owner)

    visit(tree, "<module>")
    return found


def test_no_module_lists_roles_by_hand():
    """Outside the registry, no literal tuple, list or set names three or more roles: lists are derived."""
    offenders, excused = [], set()
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        if module == "roles/registry.py":
            continue
        for owner, line, roles in role_lists(ast.parse(path.read_text(encoding="utf-8"))):
            if (module, owner) in NOT_ROLE_LISTS:
                excused.add((module, owner))
            else:
                offenders.append(f"{module}:{line} ({owner}): {roles}")
    assert not offenders, "role lists spelled by hand (derive them from headsieve.roles.registry):\n" + "\n".join(offenders)
    assert excused == set(NOT_ROLE_LISTS), f"stale exceptions: {sorted(set(NOT_ROLE_LISTS) - excused)}"


def test_the_walk_finds_a_hand_written_list():
    """The walk above can fail: it finds a hand-written list, inside a function or at module level."""
    source = 'ORDER = ("local", "cls", "sep")\ndef f(x):\n    return x in ["prev", "next", "self", "other"]\n'
    assert [(o, n) for o, n, _ in role_lists(ast.parse(source))] == [("ORDER", 1), ("f", 3)]
    assert role_lists(ast.parse('PAIR = ("local", "cls", "uniform")')) == []


def test_schema_names_no_role():
    """The config schema leaves role names to the registry (config.check_role_names reads it)."""
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    assert "local|prev" not in text and "|delimiter|" not in text
    check_role_names({"block": 1.0, "dep:nsubj": 2.0}, lambda name: name)
    with pytest.raises(HeadsieveError, match="unknown role 'eos' .known: local, prev, next, self, cls, sep, delimiter, block, syntactic, causal:local, .*, dep:<relation>"):
        check_role_names({"eos": 1.0}, lambda name: f"config key 'roles.tau_by_role.{name}'")


def test_causal_roles_take_a_tau():
    """tau_by_role accepts the decoder roles (causal:*): in the config check, the schema and role_taus."""
    from headsieve.config import check_setting

    check_role_names({"causal:induction": 0.3, "causal:retrieval": 0.2}, lambda name: name)
    check_setting({"causal:sink": 0.5, "block": 0.6}, "roles.tau_by_role", "--tau-by-role")
    with pytest.raises(HeadsieveError, match="unknown role 'causal:inductio' "):
        check_role_names({"causal:inductio": 1.0}, lambda name: f"config key 'roles.tau_by_role.{name}'")
    table = pd.DataFrame({"role": ["causal:induction", "causal:sink", "causal:retrieval"], "form": ["mass", "ratio", "top1"]})
    assert list(role_taus(table, None, {"causal:sink": 0.7})) == [default_tau("causal:induction", "mass"), 0.7, 0.1]
    with pytest.raises(HeadsieveError, match="unknown role.s. causal:inductio"):
        role_taus(table, None, {"causal:inductio": 1.0})


def test_registry_entries_are_complete():
    """Every role applies somewhere, has a family, a threshold per score form it is scored in, nests only in
    registered roles of its own family that apply wherever it does, and piece roles have a target function."""
    assert list(ROLE_ORDER) == list(ROLES)
    for role in ROLES.values():
        assert role.attention and set(role.attention) <= set(ATTENTION), role.name
        assert role.level in ("piece", "word")
        assert (role.targets is None) == (role.level == "word"), role.name
        for outer in role.nests_in:
            assert outer in ROLES and ROLES[outer].family == role.family, (role.name, outer)
            assert set(role.attention) <= set(ROLES[outer].attention), (role.name, outer)
        forms = ("block_contrast", "block_plain", "block_entropy") if role.name == "block" else ("mass", "ratio")
        assert all(default_tau(role.name, form) > 0 for form in forms), role.name
    assert default_tau("dep:nsubj", "mass") == default_tau("syntactic", "mass")
    assert role_family("dep:amod") == "syntactic" and containers("dep:amod") == {"syntactic"}
    with pytest.raises(HeadsieveError, match="role 'local': no default tau for score form 'block_plain'"):
        default_tau("local", "block_plain")
    assert is_role("dep:obj", "bidirectional") and not is_role("dep:") and not is_role("blok")
    assert is_role("eos") and not is_role("eos", "bidirectional") and is_role("diagonal", "cross")


def test_thresholds_come_from_role_and_form():
    """role_taus takes each row's default from the registry (role, form); tau_by_role and tau override it."""
    table = pd.DataFrame({"role": ["local", "block", "dep:det", "block", "cls"],
                          "form": ["mass", "block_contrast", "ratio", "block_entropy", "ratio"]})  # fmt: skip
    expected = [default_tau(r, f) for r, f in zip(table.role, table.form)]
    assert list(role_taus(table, None, None)) == expected
    assert expected[1] != expected[3] and expected[0] != expected[4]  # forms matter
    assert list(role_taus(table, None, {"block": 0.9})) == [expected[0], 0.9, expected[2], 0.9, expected[4]]
    assert list(role_taus(table, 2.0, {"cls": 5.0})) == [2.0, 2.0, 2.0, 2.0, 5.0]
    with pytest.raises(HeadsieveError, match="unknown role.s. eos"):
        role_taus(table, None, {"eos": 1.0})


@pytest.mark.parametrize("make", [lambda rng: sentence_row(rng, 9), lambda rng: pair_row(rng, 5, 7)])
def test_nesting_holds_on_target_sets(make):
    """A declared nesting is true by definition on every input and attention: inner targets within outer."""
    rng = np.random.default_rng(0)
    facts = {"bidirectional": SentenceFacts.from_row(make(rng))}
    source = np.array([CLS, REGULAR, REGULAR, OTHER_SPECIAL, REGULAR, SEP], dtype=np.int8)
    facts["seq2seq_encoder"] = SourceFacts(source, len(source))
    facts["cross"] = SourceFacts(source, 4)
    # causal roles (issue 17): a repeated sequence with delimiters and a tree, one position per word
    facts["causal"] = text_facts(["a", "b", ",", "c", "a", "b", ",", "c"], ["X", "X", "PUNCT", "X"] * 2, [0, 1, 2, 1, 4, 7, 4, 1])
    options = {"local_window": 2, "band": 1}
    checked = 0
    for role in ROLES.values():
        for attention in role.attention if role.targets is not None else ():
            f = facts[attention]
            S = role.targets(f, options)
            assert S.dtype == bool and S.shape == (f.n_queries, f.n_pieces), (role.name, attention)
            for outer in role.nests_in:
                assert not (S & ~ROLES[outer].targets(f, options)).any(), (role.name, outer, attention)
                checked += 1
    assert checked >= 6


def test_translation_roles_and_targets():
    """The encoder-decoder roles come from the registry in display order, with the targets of their
    definitions: local window and </s> (encoder); </s>, </s> + <s> and the monotone diagonal (cross)."""
    from headsieve.translation.roles import CROSS_ROLES, ENCODER_ROLES, role_targets

    assert set(ENCODER_ROLES) == set(role_names("seq2seq_encoder")) and set(CROSS_ROLES) == set(role_names("cross"))
    assert ENCODER_ROLES == tuple(r for r in ROLE_ORDER if r in ENCODER_ROLES)
    special = np.array([CLS, REGULAR, REGULAR, REGULAR, SEP, OTHER_SPECIAL], dtype=np.int8)
    n, T = len(special), 3
    encoder = role_targets("encoder", n, special, 1, 0)
    assert list(encoder) == list(ENCODER_ROLES)
    idx = np.arange(n)
    assert (encoder["local"] == (np.abs(idx[:, None] - idx[None, :]) <= 1)).all()
    assert (encoder["eos"] == (special == SEP)[None, :].repeat(n, 0)).all()
    cross = role_targets("cross", T, special, 1, 0)
    assert list(cross) == list(CROSS_ROLES)
    assert cross["eos"].shape == (T, n) and (cross["eos"] == (special == SEP)[None, :]).all()
    assert (cross["delimiter"] == np.isin(special, [CLS, SEP])[None, :]).all()
    assert (cross["diagonal"] == diagonal_targets(T, special, 0)).all()
    assert [list(np.flatnonzero(row)) for row in cross["diagonal"]] == [[1], [2], [3]]  # t -> t-th regular token
