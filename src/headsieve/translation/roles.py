"""Roles of encoder self-attention and cross-attention heads of an encoder-decoder model.

Scores follow :mod:`headsieve.roles.sieve` (the sieve bias): for one head, one sentence and a role that
gives each query ``i`` a set ``S_i`` of key positions,

* ``r_i = mean_{j in S_i} A[i, j] / abar_i`` with ``abar_i = (1/K) sum_j A[i, j]`` (``K`` real keys, so
  ``abar_i = 1/K``): 1 means no more attention on the targets than uniform,
* the sentence's ``score`` is the mean of ``r_i`` over the queries with a non-empty ``S_i``, and its
  ``share`` the mean over those queries of ``sum_{j in S_i} A[i, j]`` (the attention mass on the targets),
* a head's ``score`` and ``share`` are means over sentences (each sentence counts once).

Attention comes from a teacher-forced pass over the *reference* translation (eager attention; padding
removed): encoder self-attention over the source, cross-attention from every target position (the
decoder input at step ``t``; ``T`` positions, those with a label) to the source.

Roles (defined in the registry :mod:`headsieve.roles.registry`, attention ``seq2seq_encoder`` and ``cross``;
targets from :mod:`headsieve.roles.targets`):

* ``local`` (encoder): ``|i - j| <= window`` over all source positions (:func:`local_targets`).
* ``eos`` (both): the source's ``</s>`` (:func:`sep_targets`).
* ``delimiter`` (both): ``</s>`` and, for BART-like models, ``<s>`` (:func:`delimiter_targets`).
* ``diagonal`` (cross; alignment-like; ``roles.targets.diagonal_targets``): the source's regular tokens (no
  specials) at ``R[0..m-1]``;
  target position ``t`` maps to ``c_t = round(t (m - 1) / (T - 1))`` (0 when ``T = 1``), the source
  token at the same relative position, and ``S_t = {R[k] : |k - c_t| <= band}``.  Word order differs
  between languages, so this is monotone alignment, a lower bound on how alignment-like a head is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import head_space, pruned_heads
from headsieve.models.runtime import eval_mode, model_device, to_device
from headsieve.roles.registry import ROLES, role_names
from headsieve.roles.targets import SourceFacts
from headsieve.tokens import CLS, OTHER_SPECIAL, REGULAR, SEP
from headsieve.translation.data import SentencePair
from headsieve.translation.importance import pair_batches

#: the registry's roles of encoder self-attention and of cross-attention heads, in display order
ENCODER_ROLES = role_names("seq2seq_encoder")
CROSS_ROLES = role_names("cross")


def special_codes(ids: np.ndarray, tokenizer, model) -> np.ndarray:
    """Per source token: SEP for ``</s>``, CLS for ``<s>`` (BART-like models), OTHER_SPECIAL for other
    special tokens (language codes, ...), REGULAR otherwise (``<unk>`` too: it stands for a word)."""
    codes = np.full(len(ids), REGULAR, dtype=np.int8)
    other = set(getattr(tokenizer, "all_special_ids", []) or []) - {getattr(tokenizer, "unk_token_id", None)}
    codes[np.isin(ids, list(other))] = OTHER_SPECIAL
    bos, eos = getattr(model.config, "bos_token_id", None), model.config.eos_token_id
    if bos is not None and bos != eos and model.config.model_type != "marian":
        codes[ids == bos] = CLS
    codes[ids == eos] = SEP
    return codes


def bias_scores(A: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(score, share) per head for attention ``A`` [heads, queries, keys] and targets ``S`` [queries, keys];
    None when no query has a target."""
    has = S.sum(1) > 0
    if not has.any():
        return None
    A, S = A[:, has], S[has]
    on = (A * S[None]).sum(-1)  # [X, Q]: attention mass on the targets
    abar = A.sum(-1) / A.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (on / S.sum(1)[None]) / abar
    return ratio.mean(1), on.mean(1)


def role_targets(kind: str, n_queries: int, special: np.ndarray, window: int, band: int) -> dict[str, np.ndarray]:
    """Target matrices of every role of a kind (``encoder`` or ``cross``) for one sentence."""
    facts, options = SourceFacts(special, n_queries), {"local_window": window, "band": band}
    return {name: ROLES[name].targets(facts, options) for name in (ENCODER_ROLES if kind == "encoder" else CROSS_ROLES)}


def _attention_forward(model, batch: dict):
    """Encoder and cross attention weights of a teacher-forced batch (eager attention, switched temporarily)."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        out = model(**batch, output_attentions=True)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
    if out.encoder_attentions is None or out.cross_attentions is None or out.encoder_attentions[0] is None:
        raise HeadsieveError("the model returned no attention weights (load it with attn_implementation='eager')")
    return out.encoder_attentions, out.cross_attentions


def head_roles(
    model,
    tokenizer,
    pairs: list[SentencePair],
    *,
    batch_size: int = 8,
    max_length: int = 128,
    source_prefix: str = "",
    window: int = 2,
    band: int = 1,
    device=None,
) -> pd.DataFrame:
    """Role scores of every encoder self-attention and cross-attention head (unpruned models only).

    Returns one row per (kind, layer, head, role): ``score`` (mean sieve bias), ``score_std``, ``share``
    (mean attention mass on the targets) and ``n_sentences`` (sentences where the role had targets).
    """
    if pruned_heads(model):
        raise HeadsieveError("head roles need an unpruned model (this one has pruned heads)")
    if not pairs:
        raise HeadsieveError("no sentence pairs for the head roles")
    device = model_device(model) if device is None else torch.device(device)
    shapes = head_space(model).shapes
    sums: dict[tuple[str, str], list] = {}
    with eval_mode(model), torch.inference_mode():
        for batch in pair_batches(tokenizer, pairs, batch_size, max_length, source_prefix):
            enc_att, cross_att = _attention_forward(model, to_device(batch, device))
            _add_batch(batch, enc_att, cross_att, tokenizer, model, window, band, sums)
    return _summarise(sums, shapes)


def _add_batch(batch, enc_att, cross_att, tokenizer, model, window, band, sums) -> None:
    """Add every sentence of a batch to the per-(kind, role) lists of (score, share) arrays."""
    enc = torch.stack([a.float() for a in enc_att], 1).cpu().numpy()  # [B, L, H, S, S]
    cross = torch.stack([a.float() for a in cross_att], 1).cpu().numpy()  # [B, L, H, T, S]
    for b in range(enc.shape[0]):
        n_src = int(batch["attention_mask"][b].sum())
        n_tgt = int((batch["labels"][b] != -100).sum())
        ids = batch["input_ids"][b, :n_src].numpy()
        special = special_codes(ids, tokenizer, model)
        for kind, A in (("encoder", enc[b, :, :, :n_src, :n_src]), ("cross", cross[b, :, :, :n_tgt, :n_src])):
            flat = A.reshape(-1, A.shape[-2], A.shape[-1])
            for role, S in role_targets(kind, A.shape[-2], special, window, band).items():
                result = bias_scores(flat, S)
                if result is not None:
                    sums.setdefault((kind, role), []).append(result)


def _summarise(sums: dict, shapes: dict) -> pd.DataFrame:
    rows = []
    for (kind, role), values in sums.items():
        scores = np.stack([v[0] for v in values])
        shares = np.stack([v[1] for v in values])
        n_layers, n_heads = shapes[kind]
        for x in range(n_layers * n_heads):
            rows.append({
                "kind": kind, "layer": x // n_heads, "head": x % n_heads, "role": role,
                "score": float(np.nanmean(scores[:, x])), "score_std": float(np.nanstd(scores[:, x])),
                "share": float(shares[:, x].mean()), "n_sentences": int(len(values)),
            })  # fmt: skip
    frame = pd.DataFrame(rows, columns=["kind", "layer", "head", "role", "score", "score_std", "share", "n_sentences"])
    return frame.sort_values(["kind", "role", "layer", "head"], kind="stable").reset_index(drop=True)
