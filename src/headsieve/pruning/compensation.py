"""How the remaining heads compensate after a pruned model is fine-tuned.

For every head that survives pruning, compare the pruned-and-fine-tuned model with a reference model
(the unpruned model fine-tuned for the same steps, so that the comparison isolates what pruning changed)
on the same inputs:

* ``jsd``: Jensen-Shannon divergence (nats) between the head's attention rows in the two models, averaged
  over every query piece of every input;
* ``norm_change``: relative change of the mean L2 norm of the head's output (its slice of the context,
  the input of the attention output projection);
* ``importance_change``: change of the head's (layer-normalised) importance, when both are given.

Then ask whether the change is spread evenly over the remaining heads: Gini coefficient of the change
(0 = every head changed alike), the share of the total change carried by layers that lost heads against
their share of remaining heads, and a permutation test of that share (null: the changes of the remaining
heads are exchangeable across positions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from headsieve.models.heads import attention_sites, head_shape, remaining_heads
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
    L, H = head_shape(model)
    keep = remaining_heads(model)
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
        change = np.where(is_pruned, np.nan, np.asarray(importance_pruned) - np.asarray(importance_ref))
        frame["importance_change"] = change.ravel()
    else:
        frame["importance_change"] = np.nan
    return frame


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; towards 1: concentrated in few)."""
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0 or v.sum() == 0:
        return 0.0
    n = len(v)
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))


def spread_summary(heads: pd.DataFrame, measure: str = "jsd", permutations: int = 2000, seed: int = 0) -> dict:
    """Is the change spread evenly over the remaining heads, or concentrated?

    * ``gini``: Gini coefficient of the absolute change over the remaining heads (0 = all alike);
    * ``p_layers_differ``: Kruskal-Wallis test that the change has the same distribution in every layer;
    * ``share_in_pruned_layers`` against ``heads_share_in_pruned_layers``: the share of the total change
      carried by layers that lost heads, and their share of the remaining heads; ``p_concentrated``: a
      permutation test of the former (null: changes exchangeable across head positions; NaN when every
      layer, or none, lost heads);
    * ``rho_pruned_share``, ``p_rho``: Spearman correlation over layers between the share of a layer's
      heads that were pruned and the mean change of its remaining heads.
    """
    alive = heads[~heads["pruned"]].dropna(subset=[measure])
    change = np.abs(alive[measure].to_numpy(dtype=float))
    layers = alive["layer"].to_numpy()
    pruned_layers = set(heads.loc[heads["pruned"], "layer"])
    in_pruned = np.isin(layers, list(pruned_layers))
    total = change.sum()
    observed = float(change[in_pruned].sum() / total) if total > 0 else float("nan")
    p_perm = float("nan")
    if total > 0 and 0 < in_pruned.sum() < len(in_pruned):
        rng = np.random.default_rng(seed)
        null = np.array([change[rng.permutation(in_pruned)].sum() / total for _ in range(permutations)])
        p_perm = float((1 + np.sum(null >= observed)) / (1 + permutations))
    groups = [change[layers == layer] for layer in np.unique(layers)]
    groups = [g for g in groups if len(g) >= 2]
    p_layers = float("nan")
    if len(groups) >= 2 and np.ptp(change) > 0:
        p_layers = float(stats.kruskal(*groups).pvalue)
    pruned_share = heads.groupby("layer")["pruned"].mean()
    mean_change = pd.Series(change).groupby(layers).mean()
    share = pruned_share.reindex(mean_change.index).to_numpy()
    rho, p_rho = float("nan"), float("nan")
    if len(mean_change) >= 3 and np.ptp(share) > 0 and np.ptp(mean_change.to_numpy()) > 0:
        rho, p_rho = (float(v) for v in stats.spearmanr(share, mean_change.to_numpy()))
    return {
        "measure": measure,
        "heads": int(len(alive)),
        "mean_change": float(change.mean()) if len(change) else float("nan"),
        "gini": gini(change),
        "p_layers_differ": p_layers,
        "share_in_pruned_layers": observed,
        "heads_share_in_pruned_layers": float(in_pruned.mean()) if len(in_pruned) else float("nan"),
        "p_concentrated": p_perm,
        "rho_pruned_share": rho,
        "p_rho": p_rho,
    }
