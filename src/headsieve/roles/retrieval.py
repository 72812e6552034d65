"""The retrieval score of decoder heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains
Long-Context Factuality"), per needle input, with the one-sided tests of every role.

On a needle-in-context input (:func:`headsieve.roles.causal_inputs.needle_input`, teacher-forced: the
needle's copy follows the marker) the model predicts the ``k``-th needle token at query ``q_k =
copy_query[k]``.  Let ``w_k`` be the token the model emits there (its top-1 prediction) and ``j`` the key
head ``h`` attends to most from ``q_k`` (top-1 over the visible keys ``0..q_k``).  The head *copies* needle
token ``k`` when (a) ``w_k`` is a needle token and (b) ``j`` lies in the needle and holds ``w_k``
(``tokens[j] == w_k``; needle tokens are distinct and absent from the haystack, so that is the one position
of ``w_k`` in the context).  The head's retrieval score on the input is the share of the ``K`` needle tokens
it copies (Wu et al.'s ``|g_h ∩ k| / |k|``): 0 for a head whose top key never is the emitted needle token,
at most the share of copy queries where the model emits a needle token (the right one or not: Wu et al.'s
definition asks only that the emitted token be in the needle).

The score table (:func:`retrieval_scores`, long: input, layer, head, kv_group, role ``causal:retrieval``,
score, n_queries, n_undefined, form ``top1``, chance) feeds :func:`headsieve.roles.tests.role_tests`
unchanged: per head, H0 mean score <= tau, tau by default the registry's ``top1`` threshold of
``causal:retrieval`` (0.1, the score above which Wu et al. call a head a retrieval head; ``tau_by_role``
overrides it).  ``chance`` is the score of a head whose top key is drawn uniformly from the visible keys,
given the model's emissions: the mean over needle tokens of ``[w_k is a needle token] / (q_k + 1)``.

A strong retrieval head often scores 1 on every input: a sample without spread, which the t test does not
test (``roles.tests``: no label without evidence of a spread).  :func:`retrieval_tests` runs role_tests and
tests such samples, when their constant value lies above tau, with the exact one-sided sign test (H0:
median <= tau; ``n`` inputs all above tau give ``p = 0.5 ** n``), then corrects every p of the family
together; the ``test`` column says which test gave each p.

The attention-mass form of the same role (mass on the copied token's position at the copy queries) is the
registry's ``causal:retrieval`` row function on :func:`headsieve.roles.causal_inputs.needle_facts`, scored as
every causal role (``roles.causal_score``, ``roles.chunked``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import head_space, remaining_heads
from headsieve.roles.causal_inputs import NeedleInput

ROLE = "causal:retrieval"
#: the score form of Wu et al.'s top-1 retrieval score (the ``form`` column; its tau is in the registry)
FORM = "top1"


def top_keys(attention: np.ndarray, needle: NeedleInput) -> np.ndarray:
    """[X, K]: the most attended visible key of every head at every copy query (``attention`` [X, T, T], one
    input, heads x queries x keys; only the copy queries' rows are read)."""
    A = np.asarray(attention)
    q = np.asarray(needle.copy_query, dtype=np.int64)
    if A.ndim != 3 or A.shape[1] <= q.max() or A.shape[2] <= q.max():
        raise HeadsieveError(f"retrieval: attention of shape {list(A.shape)} does not cover the copy queries up to {q.max()}")
    visible = np.arange(A.shape[2])[None, :] <= q[:, None]  # [K, T]
    return np.where(visible[None], A[:, q, :], -np.inf).argmax(-1)


def hits_of(top: np.ndarray, emitted: np.ndarray, needle: NeedleInput) -> np.ndarray:
    """[X, K] bool from the top keys [X, K] and the model's top-1 token ``emitted`` [K] at each copy query:
    (a) the emitted token is a needle token and (b) the top key lies in the needle and holds it."""
    tokens = np.asarray(needle.tokens, dtype=np.int64)
    w = np.asarray(emitted, dtype=np.int64)
    lo, hi = needle.needle_start, needle.needle_start + needle.needle_length
    in_needle = (top >= lo) & (top < hi)
    emits_needle = np.isin(w, tokens[lo:hi])  # (a)
    return in_needle & (tokens[top] == w[None, :]) & emits_needle[None, :]  # (b)


def copy_hits(attention: np.ndarray, emitted: np.ndarray, needle: NeedleInput) -> np.ndarray:
    """[X, K] bool: head ``x`` copies needle token ``k`` (module docstring).

    ``attention`` [X, T, T] (one input, heads x queries x keys; only the copy queries' rows are read),
    ``emitted`` [T] the model's top-1 next token at every position (or at least at ``copy_query``)."""
    q = np.asarray(needle.copy_query, dtype=np.int64)
    return hits_of(top_keys(attention, needle), np.asarray(emitted, dtype=np.int64)[q], needle)


def chance_rate(emitted: np.ndarray, needle: NeedleInput) -> float:
    """The retrieval score of a head whose top key is uniform over the visible keys (module docstring)."""
    q = np.asarray(needle.copy_query, dtype=np.int64)
    lo = needle.needle_start
    emits_needle = np.isin(np.asarray(emitted, dtype=np.int64)[q], np.asarray(needle.tokens)[lo : lo + needle.needle_length])
    return float(np.mean(emits_needle / (q + 1.0)))


def score_rows(attention: np.ndarray, emitted: np.ndarray, needle: NeedleInput) -> dict:
    """One input's scores: ``score`` [X] (share of needle tokens copied), ``n_queries`` (K), ``chance``."""
    hits = copy_hits(attention, emitted, needle)
    return {"score": hits.mean(1), "n_queries": hits.shape[1], "chance": chance_rate(emitted, needle)}


def _top_score_rows(top: np.ndarray, emitted_at_copy: np.ndarray, needle: NeedleInput) -> dict:
    """:func:`score_rows` from the top keys [X, K] and the emitted tokens at the copy queries [K]."""
    hits = hits_of(top, emitted_at_copy, needle)
    full = np.zeros(len(needle.tokens), dtype=np.int64)
    full[np.asarray(needle.copy_query)] = emitted_at_copy
    return {"score": hits.mean(1), "n_queries": hits.shape[1], "chance": chance_rate(full, needle)}


def score_table(per_input: list[dict], layers: np.ndarray, heads: np.ndarray, group_size: int) -> pd.DataFrame:
    """The long score table from :func:`score_rows` of each input (heads flattened as ``layers``/``heads``)."""
    parts = []
    for index, row in enumerate(per_input):
        parts.append(pd.DataFrame({
            "input": index, "layer": layers, "head": heads, "kv_group": heads // group_size, "role": ROLE,
            "score": np.asarray(row["score"], dtype=float), "n_queries": int(row["n_queries"]), "n_undefined": 0,
            "form": FORM, "chance": float(row["chance"]),
        }))  # fmt: skip
    table = pd.concat(parts, ignore_index=True)
    for column in ("layer", "head", "kv_group"):
        table[column] = table[column].astype(np.int64)
    return table


def retrieval_scores(model, needles, *, device="cpu", chunk: int | None = None) -> pd.DataFrame:
    """Wu et al.'s retrieval score of every query head of a decoder-only model on each needle input (module
    docstring), one forward pass per input.

    ``chunk`` None: eager attention with ``output_attentions`` (every layer's ``[heads, T, T]`` held: short
    inputs).  ``chunk`` an int: the queries and keys are captured layer by layer in the forward pass
    (:func:`headsieve.roles.forward.capturing`, SDPA attention for the output) and only the copy queries'
    attention logits are computed, ``chunk`` queries at a time; the logits of the language-model head only
    at the copy queries (memory beyond the model grows with heads x T x chunk, not with T x T or T x vocab).

    Returns the long table: input (index into ``needles``), layer, head (original index), kv_group (original
    key-value head), role, score, n_queries (needle tokens), n_undefined (0), form (``top1``), chance.  Heads
    removed by physical pruning have no rows."""
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise HeadsieveError(f"retrieval scores: chunk {chunk!r} must be None (stored attention) or at least 1")
    space = head_space(model)
    if space.single is None or space.single.kind != "decoder":
        raise HeadsieveError(f"retrieval scores need a decoder-only model (this one has {', '.join(space.names)})")
    kind = space.single
    present = remaining_heads(model)
    layers = np.concatenate([np.full(len(present[("decoder", l)]), l) for l in range(kind.layers)])
    heads = np.concatenate([np.asarray(present[("decoder", l)], dtype=np.int64) for l in range(kind.layers)])
    rows = []
    for needle in needles:
        top, emitted = copy_top_keys(model, needle, device=device, chunk=chunk)
        rows.append(_top_score_rows(top, emitted, needle))
    return score_table(rows, layers, heads, kind.group_size)


def copy_top_keys(model, needle: NeedleInput, *, device="cpu", chunk: int | None = None):
    """(top [X, K], emitted [K]): the most attended visible key of every present head (layer by layer, original
    head order) at every copy query of one needle input, and the model's top-1 token there; ``chunk`` as in
    :func:`retrieval_scores`."""
    ids = torch.as_tensor(np.asarray(needle.tokens, dtype=np.int64))[None].to(torch.device(device))
    q = np.asarray(needle.copy_query, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if chunk is not None:
                return _captured_top_keys(model, ids, needle, chunk)
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
            if not out.attentions or any(a is None for a in out.attentions):
                implementation = getattr(model.config, "_attn_implementation", None)
                raise HeadsieveError(
                    f"model type '{model.config.model_type}' with attn_implementation '{implementation}' returns no "
                    f"attention probabilities (load it with attn_implementation='eager')"
                )
            A = torch.cat([a[0] for a in out.attentions], 0).float().cpu().numpy()  # [X, T, T]
            return top_keys(A, needle), out.logits[0, q].argmax(-1).cpu().numpy()
    finally:
        model.train(was_training)


def _key_index(query_heads: list[int], group_size: int, n_keys: int, layer: int) -> np.ndarray:
    """For each present query head (original indices), the index of its key-value head in the captured keys
    (the key-value heads still present, in order; or one key per query head when the model repeated them)."""
    if n_keys == len(query_heads):
        return np.arange(len(query_heads))
    groups = sorted({h // group_size for h in query_heads})
    if n_keys != len(groups):
        raise HeadsieveError(
            f"retrieval scores: layer {layer} passed {n_keys} key heads for query heads {query_heads} "
            f"(groups of {group_size})"
        )
    return np.array([groups.index(h // group_size) for h in query_heads])


def _captured_top_keys(model, ids, needle: NeedleInput, chunk: int):
    """:func:`copy_top_keys` from the captured queries and keys and the LM head at the copy queries only."""
    from headsieve.roles.forward import capturing

    kind = head_space(model).single
    present = remaining_heads(model)
    q_pos = torch.as_tensor(np.asarray(needle.copy_query, dtype=np.int64))
    tops: dict[int, np.ndarray] = {}

    def receive(module, query, key, attention_mask, scaling):
        layer = int(module.layer_idx)
        heads = present[("decoder", layer)]
        qs = query[0].detach().to("cpu", torch.float32)  # [H, T, d]
        ks = key[0].detach().to("cpu", torch.float32)  # [KV, T, d]
        kv = torch.as_tensor(_key_index(heads, kind.group_size, ks.shape[0], layer))
        scale = float(scaling) if scaling is not None else qs.shape[-1] ** -0.5
        keys = torch.arange(ks.shape[1])
        out = []
        for start in range(0, len(q_pos), chunk):
            qp = q_pos[start : start + chunk]
            logits = torch.einsum("hcd,htd->hct", qs[:, qp] * scale, ks[kv])  # [H, c, T]
            logits.masked_fill_(keys[None, None, :] > qp[None, :, None], float("-inf"))
            out.append(logits.argmax(-1))
        tops[layer] = torch.cat(out, 1).numpy()

    with capturing(model, receive):
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0, q_pos.to(ids.device)]
    emitted = model.get_output_embeddings()(hidden).argmax(-1).cpu().numpy()
    layers = [layer for layer in range(kind.layers) if present[("decoder", layer)]]
    missing = [layer for layer in layers if layer not in tops]
    if missing:
        raise HeadsieveError(f"retrieval scores: layer {missing[0]} passed no queries and keys to the capture")
    return np.concatenate([tops[layer] for layer in layers], 0), emitted


def retrieval_tests(scores: pd.DataFrame, tau: float | None = None, alpha: float = 0.05, correction: str = "bh",
                    keys=("model", "corpus"), tau_by_role: dict | None = None) -> pd.DataFrame:  # fmt: skip
    """:func:`headsieve.roles.tests.role_tests` of a retrieval score table, with the sign test for samples
    without spread above tau (module docstring); adds the column ``test`` (``t``, ``sign`` or empty when
    untested)."""
    from headsieve.roles.tests import adjust, role_tests

    tests = role_tests(scores, tau, alpha, correction, keys, tau_by_role)
    flat = (tests["untested_reason"] == "no spread (sd 0)") & (tests["n"] >= 2) & (tests["mean"] > tests["tau"])
    tests["test"] = np.where(tests["p"].notna(), "t", "")
    tests.loc[flat, "p"] = 0.5 ** tests.loc[flat, "n"].astype(float)
    tests.loc[flat, "test"] = "sign"
    tests.loc[flat, "untested_reason"] = ""
    for _, idx in tests.groupby(list(keys), sort=False).groups.items():
        tests.loc[idx, "p_adj"] = adjust(tests.loc[idx, "p"].to_numpy(), correction)
    tests["label"] = (tests["p_adj"] < alpha).fillna(False).astype(bool)
    return tests
