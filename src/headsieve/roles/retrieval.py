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


def copy_hits(attention: np.ndarray, emitted: np.ndarray, needle: NeedleInput) -> np.ndarray:
    """[X, K] bool: head ``x`` copies needle token ``k`` (module docstring).

    ``attention`` [X, T, T] (one input, heads x queries x keys; only the copy queries' rows are read),
    ``emitted`` [T] the model's top-1 next token at every position (or at least at ``copy_query``)."""
    A = np.asarray(attention)
    q = np.asarray(needle.copy_query, dtype=np.int64)
    if A.ndim != 3 or A.shape[1] <= q.max() or A.shape[2] <= q.max():
        raise HeadsieveError(f"retrieval: attention of shape {list(A.shape)} does not cover the copy queries up to {q.max()}")
    tokens = np.asarray(needle.tokens, dtype=np.int64)
    w = np.asarray(emitted, dtype=np.int64)[q]  # [K]
    rows = A[:, q, :]  # [X, K, T]
    visible = np.arange(A.shape[2])[None, :] <= q[:, None]  # [K, T]
    top = np.where(visible[None], rows, -np.inf).argmax(-1)  # [X, K]
    lo, hi = needle.needle_start, needle.needle_start + needle.needle_length
    in_needle = (top >= lo) & (top < hi)
    needle_tokens = tokens[lo:hi]
    emits_needle = np.isin(w, needle_tokens)  # (a)
    return in_needle & (tokens[top] == w[None, :]) & emits_needle[None, :]  # (b)


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


def retrieval_scores(model, needles, *, device="cpu") -> pd.DataFrame:
    """Wu et al.'s retrieval score of every query head of a decoder-only model on each needle input (module
    docstring), one forward pass per input with eager attention (``output_attentions``).

    Returns the long table: input (index into ``needles``), layer, head (original index), kv_group (original
    key-value head), role, score, n_queries (needle tokens), n_undefined (0), form (``top1``), chance.  Heads
    removed by physical pruning have no rows."""
    space = head_space(model)
    if space.single is None or space.single.kind != "decoder":
        raise HeadsieveError(f"retrieval scores need a decoder-only model (this one has {', '.join(space.names)})")
    kind = space.single
    present = remaining_heads(model)
    layers = np.concatenate([np.full(len(present[("decoder", l)]), l) for l in range(kind.layers)])
    heads = np.concatenate([np.asarray(present[("decoder", l)], dtype=np.int64) for l in range(kind.layers)])
    device = torch.device(device)
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.no_grad():
            for i, needle in enumerate(needles):
                ids = torch.as_tensor(np.asarray(needle.tokens, dtype=np.int64))[None].to(device)
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
                if not out.attentions or any(a is None for a in out.attentions):
                    implementation = getattr(model.config, "_attn_implementation", None)
                    raise HeadsieveError(
                        f"model type '{model.config.model_type}' with attn_implementation '{implementation}' returns no "
                        f"attention probabilities (load it with attn_implementation='eager')"
                    )
                A = torch.cat([a[0] for a in out.attentions], 0).float().cpu().numpy()  # [X, T, T]
                emitted = out.logits[0].argmax(-1).cpu().numpy()
                rows.append(score_rows(A, emitted, needle))
    finally:
        model.train(was_training)
    return score_table(rows, layers, heads, kind.group_size)


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
