"""How the remaining heads compensate after a pruned model is fine-tuned.

For every head that survives pruning, compare the pruned-and-fine-tuned model with a reference model
(the unpruned model fine-tuned for the same steps, so that the comparison isolates what pruning changed)
on the same inputs:

* ``jsd``: Jensen-Shannon divergence (nats) between the head's attention rows in the two models, averaged
  over every query piece of every input;
* ``norm_change``: relative change of the mean L2 norm of the head's output (its slice of the context,
  the input of the attention output projection);
* ``importance_change``: change of the head's share of its layer's importance, both models normalised over
  the SAME heads (the layer's heads that remain in the pruned model; :func:`importance_shift`), when both
  importances are given.

Each measure is exactly zero when nothing changed: identical inputs give 0 everywhere, and removing heads
alone does not move ``importance_change`` of the heads that remain (normalising each model over its own
remaining heads, as before, showed change in a pruned layer when nothing changed).

Then ask whether the change is spread evenly over the remaining heads (:func:`spread_summary`), against an
explicit null: the changes of the remaining heads are exchangeable across head positions.  Permutation tests
(the same permutations for every statistic) of where the change falls: across layers (between-layer sum of
squares), in the layers that lost heads (their share of the total change), and along the share of a layer's
heads that were pruned (correlation over heads, not over a handful of layer means); plus the Gini
coefficient of the change (0 = every head changed alike).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import attention_sites, head_space, remaining_heads
from headsieve.models.runtime import eval_mode, model_device, to_device


def _jsd_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of probability rows (last dim), nats."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log(a.clamp_min(1e-30)) - torch.log(b.clamp_min(1e-30))), 0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@torch.inference_mode()
def head_activity(model, batches, device=None) -> dict[str, np.ndarray | list]:
    """Per original (layer, head): attention of every input and the mean norm of the head's output.

    ``device``: where batches are moved (default: the model's device; the model itself is not moved).

    Returns ``attentions``: one [layers, heads, T, T] float32 array per input (NaN for pruned heads,
    padding removed) and ``norm``: [layers, heads] mean L2 norm of the head's context slice (NaN if pruned).
    """
    device = model_device(model) if device is None else torch.device(device)
    space = head_space(model)
    if space.single is None:
        kinds = ", ".join(space.names)
        raise HeadsieveError(f"head activity needs a one-kind model (an encoder); this one has {kinds}")
    L, H = space.shape(space.single.kind)
    remaining = remaining_heads(model)
    keep = [remaining[(space.single.kind, layer)] for layer in range(L)]
    sites = attention_sites(model)
    norms = np.zeros((L, H))
    counts = np.zeros((L, H))
    captured: dict[int, torch.Tensor] = {}

    def hook(layer):
        def fn(module, args):
            captured[layer] = args[0].detach()

        return fn

    handles = [site.output.register_forward_pre_hook(hook(site.layer)) for site in sites]
    attentions: list[np.ndarray] = []
    with eval_mode(model):
        try:
            for batch in batches:
                batch = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
                out = model(**batch, output_attentions=True)
                mask = batch["attention_mask"].bool()
                lengths = mask.sum(1).tolist()
                for layer, site in enumerate(sites):
                    heads = keep[layer]
                    if not heads:
                        continue
                    context = captured[layer].reshape(*captured[layer].shape[:2], len(heads), site.head_dim)
                    n = context.norm(dim=-1)  # [B, T, heads]
                    norms[layer, heads] += (n * mask[..., None]).sum((0, 1)).double().cpu().numpy()
                    counts[layer, heads] += mask.sum().item()
                for b, t in enumerate(lengths):
                    full = np.full((L, H, t, t), np.nan, dtype=np.float32)
                    for layer in range(L):
                        if keep[layer]:
                            full[layer, keep[layer]] = out.attentions[layer][b, :, :t, :t].float().cpu().numpy()
                    attentions.append(full)
        finally:
            for h in handles:
                h.remove()
    with np.errstate(invalid="ignore"):
        norm = np.where(counts > 0, norms / np.maximum(counts, 1), np.nan)
    return {"attentions": attentions, "norm": norm}


def compare_heads(reference: dict, pruned: dict, importance_ref=None, importance_pruned=None) -> pd.DataFrame:
    """One row per original head: pruned (bool), jsd, norm_change, importance_change (NaN where pruned)."""
    L, H = reference["norm"].shape
    jsd_sum = np.zeros((L, H))
    rows = 0
    for a, b in zip(reference["attentions"], pruned["attentions"]):
        d = _jsd_rows(torch.from_numpy(np.nan_to_num(a)), torch.from_numpy(np.nan_to_num(b))).sum(-1).numpy()
        jsd_sum += d
        rows += a.shape[-1]
    is_pruned = np.isnan(pruned["norm"])
    jsd = np.where(is_pruned, np.nan, jsd_sum / max(rows, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        norm_change = (pruned["norm"] - reference["norm"]) / reference["norm"]
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    frame = pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "pruned": is_pruned.ravel(),
            "jsd": jsd.ravel(),
            "norm_change": norm_change.ravel(),
        }
    )
    if importance_ref is not None and importance_pruned is not None:
        change = importance_shift(importance_ref, importance_pruned, ~is_pruned)
        frame["importance_change"] = change.ravel()
    else:
        frame["importance_change"] = np.nan
    return frame


def _layer_shares(importance: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Each layer's importance over its ``alive`` heads divided by their L2 norm (NaN elsewhere; NaN in a
    layer whose alive heads are all zero)."""
    values = np.where(alive, np.asarray(importance, dtype=float), 0.0)
    norms = np.sqrt((values**2).sum(axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(alive & (norms > 0), values / norms, np.nan)


def importance_shift(importance_ref, importance_pruned, alive) -> np.ndarray:
    """``[layers, heads]`` change of importance, both models normalised per layer over the same heads.

    ``alive``: the heads that remain in the pruned model.  Both importances are divided, layer by layer, by the
    L2 norm of that layer's alive heads, so any per-layer scale of the inputs (raw gradients, or rows already
    normalised over all heads or over the remaining ones) gives the same result, and unchanged importances
    give exactly 0.  What it measures is how importance is redistributed within a layer; a change of a whole
    layer's scale does not show.  NaN for pruned heads; 0 where both layers' alive heads are all zero.
    """
    alive = np.asarray(alive, dtype=bool)
    ref, pruned = _layer_shares(importance_ref, alive), _layer_shares(importance_pruned, alive)
    both_zero = np.isnan(ref) & np.isnan(pruned) & alive
    return np.where(both_zero, 0.0, pruned - ref)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; towards 1: concentrated in few)."""
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0 or v.sum() == 0:
        return 0.0
    n = len(v)
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))


def _permutation_p(observed: float, null: np.ndarray, two_sided: bool = False) -> float:
    """``(1 + #{null >= observed}) / (1 + permutations)`` (with absolute values when ``two_sided``)."""
    if not np.isfinite(observed):
        return float("nan")
    if two_sided:
        observed, null = abs(observed), np.abs(null)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def _between_layers(change: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Between-layer sum of squares of ``change`` (rows: permutations) for layer codes ``0..n_groups-1``."""
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    sums = np.stack([np.bincount(codes, weights=row, minlength=n_groups) for row in np.atleast_2d(change)])
    return (sums**2 / counts).sum(axis=1) - np.atleast_2d(change).sum(axis=1) ** 2 / len(codes)


def spread_summary(heads: pd.DataFrame, measure: str = "jsd", permutations: int = 2000, seed: int = 0) -> dict:
    """Is the change spread evenly over the remaining heads, or concentrated?

    The null of every test: the absolute changes of the remaining heads are exchangeable across head
    positions (where a head sits says nothing about how much it changed).  ``permutations`` random
    reassignments of the changes to the positions (seeded by ``seed``; the same ones for every statistic):

    * ``p_layers_differ``: does the change differ between layers (between-layer sum of squares)?
    * ``share_in_pruned_layers`` against ``heads_share_in_pruned_layers``: the share of the total change
      carried by layers that lost heads, and their share of the remaining heads; ``p_concentrated``:
      one-sided test of the former (NaN when every layer, or none, lost heads);
    * ``r_pruned_share``, ``p_pruned_share``: Pearson correlation over the remaining heads between a head's
      change and the share of its layer's heads that were pruned, two-sided (NaN when that share is the same
      in every layer);
    * ``gini``: Gini coefficient of the change (0 = all alike); ``heads``, ``mean_change``, ``permutations``.

    A large p is no proof of evenness: it says the design could not tell the change apart from an even one.
    """
    alive = heads[~heads["pruned"]].dropna(subset=[measure])
    change = np.abs(alive[measure].to_numpy(dtype=float))
    layers = alive["layer"].to_numpy()
    pruned_layers = set(heads.loc[heads["pruned"], "layer"])
    in_pruned = np.isin(layers, list(pruned_layers))
    pruned_share = heads.groupby("layer")["pruned"].mean().reindex(layers).to_numpy(dtype=float)
    total = change.sum()
    n = len(change)
    rng = np.random.default_rng(seed)
    null_changes = change[np.argsort(rng.random((permutations, n)), axis=1)] if n else np.zeros((permutations, 0))
    varies = n >= 2 and np.ptp(change) > 0
    observed_share = float(change[in_pruned].sum() / total) if total > 0 else float("nan")
    p_concentrated = float("nan")
    if total > 0 and 0 < in_pruned.sum() < n:
        p_concentrated = _permutation_p(observed_share, null_changes[:, in_pruned].sum(axis=1) / total)
    codes = np.unique(layers, return_inverse=True)[1] if n else np.zeros(0, dtype=int)
    n_groups = int(codes.max()) + 1 if n else 0
    p_layers = float("nan")
    if varies and n_groups >= 2:
        observed = float(_between_layers(change, codes, n_groups)[0])
        p_layers = _permutation_p(observed, _between_layers(null_changes, codes, n_groups))
    r, p_r = float("nan"), float("nan")
    if varies and np.ptp(pruned_share) > 0:
        x = (pruned_share - pruned_share.mean()) / pruned_share.std()
        r = float(np.mean(x * (change - change.mean())) / change.std())
        null_r = (null_changes - null_changes.mean(axis=1, keepdims=True)) @ x / n / change.std()
        p_r = _permutation_p(r, null_r, two_sided=True)
    return {
        "measure": measure,
        "heads": int(n),
        "mean_change": float(change.mean()) if n else float("nan"),
        "gini": gini(change),
        "p_layers_differ": p_layers,
        "share_in_pruned_layers": observed_share,
        "heads_share_in_pruned_layers": float(in_pruned.mean()) if n else float("nan"),
        "p_concentrated": p_concentrated,
        "r_pruned_share": r,
        "p_pruned_share": p_r,
        "permutations": int(permutations),
    }
