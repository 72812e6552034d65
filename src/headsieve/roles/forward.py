"""Causal role scores of a decoder-only language model, computed in its forward pass (issue 17, item 3).

:func:`causal_role_scores` runs the model on inputs ``(input_ids, CausalFacts)`` and returns every head's
per-input score of every causal role (:mod:`headsieve.roles.causal_score`) as one long table.  Two paths give
the same table (scores within 1e-5 in float32, equal counts):

* ``chunk=None``, the stored path: the forward pass returns every layer's attention probabilities
  (``output_attentions``, eager attention; :func:`headsieve.models.heads.self_attention_probabilities`) and
  :func:`headsieve.roles.causal_score.score_causal` scores them.  It holds ``[layers, heads, T, T]`` (twice,
  while the score batch is built): the path for short inputs.
* ``chunk=<int>``, the chunked path: the model runs with a capturing attention implementation (registered
  with transformers' ``AttentionInterface`` as :data:`CAPTURE`) that hands each layer's queries and keys, as
  the attention module computed them (after the rotary embedding for the Llama family; after ``c_attn``'s
  split for GPT-2; the key-value heads not repeated), with the module's own scaling, to
  :func:`headsieve.roles.chunked.chunked_role_masses`, and then computes the layer's output with
  transformers' SDPA attention (no attention matrix kept; the CPU kernel works in blocks).  Role masses are
  made ``chunk`` queries at a time and the layer's queries and keys are dropped before the next layer runs,
  so the memory beyond the model grows with heads x T x chunk, never with heads x T x T.

The chunked path computes the masses in ``dtype`` (float32) on the CPU (queries and keys of a model on
another device are copied there, one layer at a time).  Its SDPA output differs from eager attention's by
float rounding, which later layers carry on: on the tiny test models the two paths agree within 1e-5.

Inputs of a batch are padded on the right (``batch_size`` > 1, inputs ordered by length); under the causal
mask a real position never sees the padding after it, so no attention mask is needed and each input's
scores are those of the input alone.  A pruned model (:func:`headsieve.models.heads.prune_heads`) gives
rows for its remaining heads (original indices); a layer with no heads left gives none.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import head_space, remaining_heads, self_attention_probabilities
from headsieve.roles.causal import CausalFacts
from headsieve.roles.causal_score import CAUSAL_OPTIONS, causal_target_provider, score_causal
from headsieve.roles.chunked import RoleMasses, chunked_role_masses, mass_scores, visible_keys
from headsieve.roles.sieve import SCORE_FORMS, Batch

#: the columns of the score table, in order
COLUMNS = ("input", "n_pieces", "layer", "head", "kv_group", "role", "score", "n_queries", "n_undefined", "form")

#: the name of the capturing attention implementation in transformers' AttentionInterface
CAPTURE = "headsieve_capture"

#: the receiver of the queries and keys of the forward pass running now (None: plain SDPA attention)
_RECEIVER: ContextVar = ContextVar("headsieve_capture_receiver", default=None)


@dataclass(frozen=True)
class _Prepared:
    """The inputs as int64 token ids with their facts, checked."""

    ids: list[np.ndarray]
    facts: list[CausalFacts]


def causal_role_scores(
    model,
    inputs,
    options: dict | None = None,
    *,
    chunk: int | None = None,
    device: str = "cpu",
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
) -> pd.DataFrame:
    """Every head's score of every causal role on every input, from the forward pass of ``model``.

    ``model``: a decoder-only LM of the decoder families (``load_decoder``; eager attention for the stored
    path), on ``device``.  ``inputs``: a list of ``(input_ids, facts)``: token ids [T] (list, NumPy or torch)
    and the :class:`~headsieve.roles.causal.CausalFacts` of the same T positions (``text_facts`` on pieces,
    ``repeated_facts``, ``needle_facts``).  ``options``: the causal options
    (:data:`headsieve.roles.causal_score.CAUSAL_OPTIONS`: ``score`` mass|ratio, ``max_uniform_share``,
    ``local_window``, ``roles``).  ``chunk``: None for the stored path, else the query chunk of the chunked
    path (module docstring).  ``batch_size``: inputs per forward pass.  ``dtype``: of the chunked masses.

    Returns a DataFrame with columns :data:`COLUMNS`, one row per (input, layer, head, role) where the role
    has targets in the input, sorted by input, layer, head, role: ``input`` (position in ``inputs``),
    ``n_pieces`` (T), ``layer``, ``head`` (original index), ``kv_group`` (its key-value head, ``head //
    (heads / kv_heads)``), ``role``, ``score`` (mean over the scored queries; NaN when none is left),
    ``n_queries`` (queries scored), ``n_undefined`` (queries left out: no visible target, or, for the mass
    form, a uniform share above ``max_uniform_share``), ``form`` (the score form).  The ``input``, layer,
    head, role, score and form columns are what :func:`headsieve.roles.tests.role_tests` reads (with a
    corpus or model key column added by the caller).
    """
    opts = dict(CAUSAL_OPTIONS, **(options or {}))
    if opts["score"] not in SCORE_FORMS:
        raise HeadsieveError(f"causal roles: score form {opts['score']!r} not one of {SCORE_FORMS}")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise HeadsieveError(f"causal role scores: chunk {chunk!r} must be None (stored attention) or at least 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise HeadsieveError(f"causal role scores: batch_size {batch_size!r} must be at least 1")
    prepared = _prepare(inputs)
    heads = _head_layout(model)
    _check_length(model, max(len(ids) for ids in prepared.ids), chunk is not None)
    parts = []
    for batch in _batches(prepared, batch_size):
        ids = _padded(prepared, batch, device)
        if chunk is None:
            parts.extend(_stored_batch(model, ids, prepared, batch, heads, opts))
        else:
            parts.extend(_chunked_batch(model, ids, prepared, batch, heads, opts, chunk, dtype))
    return _table(parts)


# ------------------------------------------------------------------------------------------- inputs


def _prepare(inputs) -> _Prepared:
    """Token ids as int64 [T] arrays and their facts; one line naming the first bad input."""
    ids, facts = [], []
    for i, item in enumerate(inputs):
        try:
            tokens, fact = item
        except (TypeError, ValueError):
            raise HeadsieveError(f"causal role scores: input {i} is not an (input_ids, facts) pair") from None
        tokens = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens)
        if tokens.ndim != 1 or len(tokens) == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise HeadsieveError(f"causal role scores: input {i}: input_ids must be a non-empty 1-d integer sequence")
        if not isinstance(fact, CausalFacts):
            raise HeadsieveError(f"causal role scores: input {i}: facts must be CausalFacts, not {type(fact).__name__}")
        if fact.n_pieces != len(tokens):
            raise HeadsieveError(
                f"causal role scores: input {i}: {len(tokens)} token ids but facts of {fact.n_pieces} positions"
            )
        ids.append(tokens.astype(np.int64))
        facts.append(fact)
    if not ids:
        raise HeadsieveError("causal role scores: no inputs")
    return _Prepared(ids, facts)


def _batches(prepared: _Prepared, batch_size: int) -> list[list[int]]:
    """Input indices in batches of similar length (stable order by length)."""
    order = sorted(range(len(prepared.ids)), key=lambda i: len(prepared.ids[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _padded(prepared: _Prepared, batch: list[int], device) -> torch.Tensor:
    """[B, N] token ids, right-padded with each input's last token (never seen by a real position)."""
    N = max(len(prepared.ids[i]) for i in batch)
    rows = [np.concatenate([prepared.ids[i], np.full(N - len(prepared.ids[i]), prepared.ids[i][-1])]) for i in batch]
    return torch.from_numpy(np.stack(rows)).to(device)


# ------------------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class _Heads:
    """Per layer the original indices of the heads present (in the order the attention module holds them),
    and the query heads per key-value head of the unpruned model."""

    present: list[list[int]]
    group_size: int

    def flat(self) -> list[tuple[int, int]]:
        """(layer, head) of every head present, layer by layer: the order of the stored path's head axis."""
        return [(layer, h) for layer, heads in enumerate(self.present) for h in heads]


def _head_layout(model) -> _Heads:
    space = head_space(model)
    if space.names != ("decoder",):
        raise HeadsieveError(
            f"causal role scores need a decoder-only language model (model type '{model.config.model_type}' has "
            f"attention kinds {', '.join(space.names)})"
        )
    kind = space.kind("decoder")
    remaining = remaining_heads(model)
    return _Heads([remaining[("decoder", layer)] for layer in range(kind.layers)], kind.group_size)


def _rows(b: int, n: int, layer: int, heads: list[int], group_size: int, role: str, scores, nq: int, nu: int,
          form: str) -> dict:  # fmt: skip
    """The rows of one (input, layer, role) as columns (NumPy arrays; one DataFrame is built at the end)."""
    heads = np.asarray(heads, dtype=np.int64)
    k = len(heads)
    return {
        "input": np.full(k, b, dtype=np.int64),
        "n_pieces": np.full(k, n, dtype=np.int64),
        "layer": np.full(k, layer, dtype=np.int64),
        "head": heads,
        "kv_group": heads // group_size,
        "role": np.full(k, role, dtype=object),
        "score": np.asarray(scores, dtype=np.float64),
        "n_queries": np.full(k, nq, dtype=np.int64),
        "n_undefined": np.full(k, nu, dtype=np.int64),
        "form": np.full(k, form, dtype=object),
    }


def _table(parts: list[dict]) -> pd.DataFrame:
    """One DataFrame of :data:`COLUMNS` from the parts, sorted by input, layer, head, role."""
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("role", "form") else np.int64) for c in COLUMNS})
    table = pd.DataFrame({c: np.concatenate([part[c] for part in parts]) for c in COLUMNS})
    return table.sort_values(["input", "layer", "head", "role"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------- stored path


def _stored_batch(model, ids, prepared: _Prepared, batch: list[int], heads: _Heads, opts: dict) -> list[dict]:
    """Score one batch from the stored attention probabilities (the attention tensors are released layer by
    layer while the per-input arrays are filled)."""
    attentions = list(self_attention_probabilities(model.base_model, {"input_ids": ids, "use_cache": False}))
    lengths = [len(prepared.ids[i]) for i in batch]
    flat = heads.flat()
    arrays = [np.empty((1, len(flat), n, n), dtype=np.float32) for n in lengths]
    start = 0
    for layer, present in enumerate(heads.present):
        A = attentions[layer]
        if A.shape[1] != len(present):
            raise HeadsieveError(f"layer {layer}: attention has {A.shape[1]} heads, the model records {len(present)}")
        for b, n in enumerate(lengths):
            arrays[b][0, start : start + len(present)] = A[b, :, :n, :n].float().cpu().numpy()
        attentions[layer] = None
        start += len(present)
    del attentions, A
    view = Batch(arrays, [prepared.facts[i] for i in batch])
    del arrays
    frames = []
    for b, role, scores, nq, nu, form in score_causal(view, opts, detail=True):
        x = np.asarray(scores)
        for layer, present in enumerate(heads.present):
            lo = sum(len(p) for p in heads.present[:layer])
            if present:
                frames.append(
                    _rows(batch[b], lengths[b], layer, present, heads.group_size, role, x[lo : lo + len(present)],
                          nq, nu, form)  # fmt: skip
                )
    return frames


# ------------------------------------------------------------------------------------------- chunked path


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    """The capturing attention implementation: hands the module's queries and keys to the receiver of the
    forward pass running now, then returns transformers' SDPA attention (no attention probabilities)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    receiver = _RECEIVER.get()
    if receiver is not None:
        receiver(module, query, key, attention_mask, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_capture() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE, _capture_attention)


@contextmanager
def capturing(model, receiver):
    """Run ``model`` (a transformers model whose attention modules dispatch through ``AttentionInterface``)
    with the capturing attention: ``receiver(module, query [B, H, N, d], key [B, KV, N, d], attention_mask,
    scaling)`` is called once per layer during the forward pass.  The model's attention implementation is
    restored on exit."""
    _register_capture()
    config = model.config
    before = config._attn_implementation
    token = _RECEIVER.set(receiver)
    config._attn_implementation = CAPTURE
    try:
        yield
    finally:
        config._attn_implementation = before
        _RECEIVER.reset(token)


def _check_length(model, longest: int, chunked: bool) -> None:
    """Inputs must fit the position table; the chunked path scores full causal rows, so inputs longer than a
    sliding attention window are refused there."""
    from headsieve.models.load import position_limit

    config = model.config
    limit = position_limit(config)
    if limit is not None and longest > limit:
        raise HeadsieveError(
            f"causal role scores: an input of {longest} tokens does not fit the model's position table of {limit} "
            "(config.json max_position_embeddings)"
        )
    window = getattr(config, "sliding_window", None)
    active = getattr(config, "use_sliding_window", True)
    if chunked and isinstance(window, int) and active and longest > window:
        raise HeadsieveError(
            f"causal role scores: an input of {longest} tokens exceeds the model's sliding attention window "
            f"{window} (config.json sliding_window); the chunked path scores full causal rows"
        )


def _chunked_batch(model, ids, prepared, batch, heads: _Heads, opts: dict, chunk: int, dtype) -> list[dict]:
    """Score one batch from the queries and keys captured layer by layer."""
    lengths = [len(prepared.ids[i]) for i in batch]
    providers = [causal_target_provider(prepared.facts[i], opts) for i in batch]
    masses: dict[tuple[int, int], RoleMasses] = {}

    def receive(module, query, key, attention_mask, scaling):
        if attention_mask is not None:
            raise HeadsieveError("causal role scores: the capturing attention got an attention mask; it expects none")
        layer = int(module.layer_idx)
        for b, n in enumerate(lengths):
            q = query[b, :, :n].detach().to("cpu", dtype)
            k = key[b, :, :n].detach().to("cpu", dtype)
            masses[(b, layer)] = chunked_role_masses(q, k, providers[b], scale=scaling, causal=True, chunk=chunk,
                                                     dtype=dtype)  # fmt: skip

    with torch.no_grad(), capturing(model, receive):
        model.base_model(input_ids=ids, use_cache=False)
    names = list(opts["roles"])
    frames = []
    for b, n in enumerate(lengths):
        for layer, present in enumerate(heads.present):
            if not present:
                continue
            if (b, layer) not in masses:
                raise HeadsieveError(f"causal role scores: layer {layer} passed no queries and keys to the capture")
            scores, nq, nu, present_roles = _scores_of(masses.pop((b, layer)), n, opts)
            for r in np.flatnonzero(present_roles):
                frames.append(
                    _rows(batch[b], n, layer, present, heads.group_size, names[r], scores[r], nq[r], nu[r],
                          opts["score"])  # fmt: skip
                )
    return frames


def _scores_of(masses: RoleMasses, n: int, opts: dict):
    """Per-input scores [R, H], scored queries [R], undefined queries [R] and presence [R] of one layer, as
    :func:`~headsieve.roles.causal_score.score_causal` counts them (undefined: no visible target, or above
    the uniform-share cap for the mass form)."""
    with_target = (np.asarray(masses.n_targets) > 0).sum(1)
    if opts["score"] == "mass":
        s = mass_scores(masses, visible_keys(n, True), opts["max_uniform_share"])
        return s.scores, s.n_queries, s.n_undefined + (n - with_target), s.present
    return _ratio_scores(masses, n) + (with_target > 0,)


def _ratio_scores(masses: RoleMasses, n: int):
    """The ``ratio`` form from masses: ``r_q = (mass_q / |S_q|) / (row_q / (q + 1))``, averaged over the
    queries with a visible target (the causal uniform reference ``abar_q = row_q / (q + 1)``)."""
    mass = np.asarray(masses.mass, dtype=np.float64)  # [R, H, T]
    row = np.asarray(masses.row, dtype=np.float64)  # [H, T]
    size = np.asarray(masses.n_targets, dtype=np.float64)  # [R, T]
    has = size > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (mass / size[:, None, :]) / (row / visible_keys(n, True)[None, :])[None]
        scores = np.where(has[:, None, :], r, 0.0).sum(2) / has.sum(1)[:, None]
    n_with = has.sum(1)
    return scores.astype(np.float32), n_with, n - n_with
