"""The role registry: every head role is defined once, in :data:`ROLES`; every list of roles is derived from it.

An entry (:class:`Role`) holds the role's name, its family, its target function, the roles whose target sets
contain it by definition, its default threshold per score form, the attention it applies to, and whether
overview figures show it; its position in :data:`ROLES` is its display order.  Scoring (``roles.sieve``,
``translation.roles``), the tests' thresholds (``roles.tests``), the analyses and figures (``roles.analysis``,
``plots``), the multilingual role maps and the configuration check (``config``) all read the registry.

Attention a role applies to (:data:`ATTENTION`): ``bidirectional`` (self-attention of an encoder-only model
over ``[CLS] A [SEP] (B [SEP])``: the roles stage), ``seq2seq_encoder`` (encoder self-attention of an
encoder-decoder model over the source) and ``cross`` (its encoder-decoder attention from the target
positions to the source); ``causal`` (decoder-only self-attention under the causal mask, issue 17: the
``causal:*`` roles, whose targets are restricted to the keys a query sees, :mod:`headsieve.roles.causal`).

Adding a role: write its target function (``roles/targets.py``: ``(facts, options) -> S``, a boolean
[queries, keys] matrix; ``facts`` is a ``SentenceFacts`` for ``bidirectional`` roles and a ``SourceFacts``
for encoder-decoder ones), add one :class:`Role` entry here at its place in the display order, and tests
with planted attention for it.  Relation roles ``dep:<relation>`` are generated: they take the family,
attention and thresholds of ``syntactic``, and nest in it.  A causal role (``_causal``) gives a row function
``rows(facts, options, q0, q1)`` (targets of queries ``q0..q1-1`` over a ``CausalFacts``, keys <= query;
``roles/causal.py``), and its ``targets`` is the same over every query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from headsieve.errors import HeadsieveError
from headsieve.roles import causal as C
from headsieve.roles import targets as T
from headsieve.roles.causal_inputs import retrieval_rows

#: the attention a role can apply to (see the module docstring)
ATTENTION = ("bidirectional", "seq2seq_encoder", "cross", "causal")
#: the attention of encoder and encoder-decoder models (every kind before ``causal``)
_ENCODER_ATTENTION = ("bidirectional", "seq2seq_encoder", "cross")

#: prefix of the generated relation roles (``dep:nsubj``), members of the union role ``syntactic``
RELATION_PREFIX = "dep:"

#: default thresholds tau of the one-sided test per score form (the ``form`` column of scores.parquet):
#: ``mass`` share of a query's attention on its targets (a head with >= 50% on its targets lies well above
#: 0.4; a uniform head scores u_i <= roles.max_uniform_share = 0.25 on every scored query); ``ratio`` the
#: reference sieve ratio (reference tau 3)
SIEVE_TAU = MappingProxyType({"mass": 0.4, "ratio": 3.0})
#: block's forms: ``block_contrast`` the own-segment density share (0.5 = no preference; 0.65 = own segment
#: 1.86x as dense as the other); ``block_plain`` the plain own-segment ratio (a perfect block head scores
#: N/|segment|, about 2); ``block_entropy`` the reference code's ratio x entropy (tau 3 as the reference; a
#: uniform head scores ln N and passes it for N > 20)
BLOCK_TAU = MappingProxyType({"block_contrast": 0.65, "block_plain": 1.5, "block_entropy": 3.0})


@dataclass(frozen=True)
class Role:
    """One role.

    ``targets(facts, options) -> S`` ([queries, keys] bool; None for the word-level syntactic roles, whose
    targets :func:`headsieve.roles.targets.syntactic_targets` builds from the trees); ``attention``: where
    the role applies (:data:`ATTENTION`); ``tau``: default threshold per score form; ``nests_in``: the roles
    whose target sets contain this role's by definition (a head holding this role also holds those, and
    sharing a head with them is no finding); ``level``: ``piece`` or ``word``; ``overview``: shown in
    figures with one panel per role (the multilingual layer distribution)."""

    name: str
    family: str
    targets: Callable | None
    attention: tuple[str, ...]
    tau: Mapping[str, float] = field(default_factory=lambda: SIEVE_TAU)
    nests_in: frozenset = frozenset()
    level: str = "piece"
    overview: bool = True
    rows: Callable | None = None  # causal roles: rows(facts, options, q0, q1) -> [q1 - q0, keys] bool
    inputs: str | None = None  # causal roles: the kind of input that scores them (CAUSAL_INPUTS)


def _local(f, o):
    return T.local_targets(f.n_pieces, o["local_window"])


def _offset(offset: int):
    return lambda f, o: T.offset_targets(f.n_pieces, offset)


#: the kinds of input causal roles are scored on: UD text (positional, delimiter and syntactic roles on gold
#: trees), seeded repeated random-token sequences (the copy roles), needle-in-context inputs (retrieval)
CAUSAL_INPUTS = ("text", "repeated", "needles")


def _causal(
    name: str, family: str, rows: Callable, nests_in=(), overview: bool = True, tau=SIEVE_TAU, inputs: str = "text"
) -> Role:
    """A role of decoder-only self-attention: ``rows(facts, options, q0, q1)`` gives the target rows of
    queries ``q0..q1-1`` (keys <= query); ``targets`` is the same over every query; ``inputs``: the kind of
    input (:data:`CAUSAL_INPUTS`) that scores it."""
    full = lambda f, o: rows(f, o, 0, f.n_queries)  # noqa: E731
    return Role(
        name, family, full, ("causal",), tau, nests_in=frozenset(nests_in), overview=overview, rows=rows, inputs=inputs
    )


#: ``causal:retrieval``'s thresholds: the attention forms as every role, and ``top1``, Wu et al.'s (2024)
#: retrieval score (share of copied needle tokens whose source is the head's most attended key,
#: :mod:`headsieve.roles.retrieval`), 0.1 the threshold they call a head a retrieval head at
RETRIEVAL_TAU = MappingProxyType({**SIEVE_TAU, "top1": 0.1})


def _registry(*roles: Role) -> Mapping[str, Role]:
    for r in roles:
        if not set(r.attention) <= set(ATTENTION) or not r.attention:
            raise HeadsieveError(f"role {r.name!r}: attention {r.attention} not among {ATTENTION}")
    return MappingProxyType({r.name: r for r in roles})


_BIDIRECTIONAL = ("bidirectional",)
_LOCAL = frozenset({"local"})
_DELIMITER = frozenset({"delimiter"})

#: the role registry, in display order
ROLES: Mapping[str, Role] = _registry(
    Role("local", "local", _local, ("bidirectional", "seq2seq_encoder")),
    Role("prev", "local", _offset(-1), _BIDIRECTIONAL, nests_in=_LOCAL, overview=False),
    Role("next", "local", _offset(1), _BIDIRECTIONAL, nests_in=_LOCAL, overview=False),
    Role("self", "local", _offset(0), _BIDIRECTIONAL, nests_in=_LOCAL, overview=False),
    Role("cls", "delimiter", lambda f, o: T.cls_targets(f.special), _BIDIRECTIONAL, nests_in=_DELIMITER),
    Role("sep", "delimiter", lambda f, o: T.sep_targets(f.special), _BIDIRECTIONAL, nests_in=_DELIMITER),
    Role("eos", "delimiter", lambda f, o: T.sep_targets(f.special, f.n_queries), ("seq2seq_encoder", "cross"),
         nests_in=_DELIMITER),  # fmt: skip
    Role("delimiter", "delimiter", lambda f, o: T.delimiter_targets(f.special, f.n_queries), _ENCODER_ATTENTION),
    Role("block", "block", lambda f, o: T.block_targets(f.segment, f.special), _BIDIRECTIONAL, BLOCK_TAU),
    Role("diagonal", "alignment", lambda f, o: T.diagonal_targets(f.n_queries, f.special, o["band"]), ("cross",)),
    Role("syntactic", "syntactic", None, _BIDIRECTIONAL, level="word"),
    # decoder-only self-attention (issue 17): own names, as target set and reference differ from the
    # encoder roles of the same idea (keys <= query; uniform reference |S_q| / (q + 1))
    _causal("causal:local", "local", lambda f, o, q0, q1: C.window_rows(f, o["local_window"], q0, q1)),
    _causal("causal:prev", "local", lambda f, o, q0, q1: C.offset_rows(f, -1, q0, q1), {"causal:local"}, False),
    _causal("causal:sink", "delimiter", lambda f, o, q0, q1: C.sink_rows(f, q0, q1)),
    _causal("causal:delimiter", "delimiter", lambda f, o, q0, q1: C.delimiter_rows(f, q0, q1)),
    _causal("causal:duplicate", "copy", lambda f, o, q0, q1: C.duplicate_rows(f, q0, q1), inputs="repeated"),
    _causal("causal:induction", "copy", lambda f, o, q0, q1: C.induction_rows(f, q0, q1), inputs="repeated"),
    # needle inputs only (roles.causal_inputs.NeedleFacts): the needle token being copied next (Wu et al. 2024)
    _causal(
        "causal:retrieval", "copy", lambda f, o, q0, q1: retrieval_rows(f, q0, q1), tau=RETRIEVAL_TAU, inputs="needles"
    ),
    _causal("causal:head", "syntactic", lambda f, o, q0, q1: C.head_rows(f, q0, q1)),
    _causal("causal:dependent", "syntactic", lambda f, o, q0, q1: C.dependent_rows(f, q0, q1)),
)


def lookup(role: str) -> Role:
    """The registry entry of a role; a relation role ``dep:<relation>`` gets ``syntactic``'s family,
    attention and thresholds (KeyError for anything else)."""
    if role.startswith(RELATION_PREFIX) and len(role) > len(RELATION_PREFIX):
        return ROLES["syntactic"]
    return ROLES[role]


def causal_roles_by_input() -> dict[str, tuple[str, ...]]:
    """The causal roles each kind of input scores (:data:`CAUSAL_INPUTS`), in registry order."""
    return {kind: tuple(r.name for r in ROLES.values() if r.inputs == kind) for kind in CAUSAL_INPUTS}


def role_names(attention: str | None = None, level: str | None = None, overview: bool | None = None) -> tuple[str, ...]:
    """Registered roles in display order, optionally only those applying to ``attention``, of ``level``,
    or shown (or not) in overview figures."""
    return tuple(
        r.name
        for r in ROLES.values()
        if (attention is None or attention in r.attention)
        and (level is None or r.level == level)
        and (overview is None or r.overview == overview)
    )


def families(attention: str | None = None) -> tuple[str, ...]:
    """Role families in display order (of their first role), optionally of the roles applying to ``attention``."""
    return tuple(dict.fromkeys(ROLES[name].family for name in role_names(attention)))


#: the display order of every role (relation roles follow, sorted: see ``roles.analysis.role_order``)
ROLE_ORDER = role_names()
#: piece-level roles of encoder-only models, scored by default (``piece_roles`` of the scoring options)
DEFAULT_PIECE_ROLES = role_names("bidirectional", "piece")
#: the families of the encoder-only roles, in display order
FAMILY_ORDER = families("bidirectional")


def role_family(role: str) -> str:
    """The family of a role (``dep:<relation>`` -> syntactic); KeyError for an unknown role."""
    return lookup(role).family


def is_role(role: str, attention: str | None = None) -> bool:
    """A registered role or a relation role ``dep:<relation>`` (applying to ``attention`` when given)."""
    try:
        entry = lookup(role)
    except KeyError:
        return False
    return attention is None or attention in entry.attention


def containers(role: str) -> frozenset[str]:
    """The roles whose target sets contain ``role``'s by definition (a relation role: ``syntactic``)."""
    if role.startswith(RELATION_PREFIX):
        return frozenset({"syntactic"})
    return ROLES[role].nests_in if role in ROLES else frozenset()


def nested(a: str, b: str) -> bool:
    """True if either role's target sets contain the other's by definition (a role contains itself)."""
    return a == b or b in containers(a) or a in containers(b)


def default_tau(role: str, form: str) -> float:
    """The registry's default threshold of ``role`` scored in score ``form``; one line naming both if none."""
    try:
        return float(lookup(role).tau[form])
    except KeyError:
        raise HeadsieveError(f"role {role!r}: no default tau for score form {form!r} (roles.tau or roles.tau_by_role sets one)") from None
