"""Role figures: layer x head maps, heads per layer, p-value distribution, roles sharing heads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.plots.common import grid, plt, save
from headsieve.roles.analysis import colocation, head_roles, heads_per_layer, role_order

MAIN_ROLES = ("local", "cls", "sep", "delimiter", "block", "syntactic")


def _matrix(tests: pd.DataFrame, role: str, column: str) -> np.ndarray:
    L, H = int(tests["layer"].max()) + 1, int(tests["head"].max()) + 1
    out = np.full((L, H), np.nan)
    sub = tests[tests["role"].astype(str) == role]
    out[sub["layer"].to_numpy(), sub["head"].to_numpy()] = sub[column].to_numpy(dtype=float)
    return out


def role_maps(tests: pd.DataFrame, roles: list[str], stem, title: str):
    """One panel per role: mean score of every head (colour, log scale), labelled heads ringed."""
    roles = [r for r in roles if (tests["role"].astype(str) == r).any()]
    fig, axes = grid(len(roles))
    for ax, role in zip(axes, roles):
        mean = _matrix(tests, role, "mean")
        label = _matrix(tests, role, "label") == 1
        img = ax.imshow(np.log2(np.clip(mean, 1 / 16, 64)), origin="lower", cmap="viridis", vmin=-2, vmax=5, aspect="auto")
        ly, hx = np.nonzero(label)
        ax.scatter(hx, ly, s=40, facecolors="none", edgecolors="white", linewidths=1.2)
        tau = tests.loc[tests["role"].astype(str) == role, "tau"].iloc[0]
        ax.set_title(f"{role}: {int(label.sum())} heads (tau {tau:g})")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(mean.shape[1]))
        ax.set_yticks(range(mean.shape[0]))
        ax.tick_params(labelsize=7)
    cbar = fig.colorbar(img, ax=axes[: len(roles)], shrink=0.8)
    cbar.set_label("mean sieve score (log2; 0 = uniform)")
    fig.suptitle(f"{title}\ncolour: mean score; rings: heads labelled with the role")
    return save(fig, stem)


def layer_counts(tests: pd.DataFrame, stem, title: str):
    """Labelled heads per layer, one line per main role."""
    counts = heads_per_layer(tests)
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for role in [r for r in MAIN_ROLES if r in set(counts["role"].astype(str))]:
        sub = counts[counts["role"].astype(str) == role].sort_values("layer")
        ax.plot(sub["layer"], sub["heads"], marker="o", label=role)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"heads with the role (of {int(counts['n_heads'].iloc[0])})")
    ax.set_xticks(sorted(counts["layer"].unique()))
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(title)
    return save(fig, stem)


def p_values(tests: pd.DataFrame, stem, title: str):
    """Histogram of the raw p values of every test."""
    p = tests["p"].dropna()
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    ax.hist(p, bins=np.linspace(0, 1, 21), color="0.35")
    ax.set_xlabel("p value (one-sided t test)")
    ax.set_ylabel("tests (head x role)")
    ax.set_title(f"{title}\n{(p < 0.05).mean():.0%} below 0.05, {(p > 0.95).mean():.0%} above 0.95")
    return save(fig, stem)


def colocation_figure(tests: pd.DataFrame, stem, title: str):
    """Left: share of role A's heads that also hold role B.  Right: heads by number of roles held."""
    held = tests[tests["label"]].groupby("role", observed=True).size()
    held = held[held > 0]
    relations = [str(r) for r in held.sort_values(ascending=False, kind="stable").index if str(r).startswith("dep:")]
    roles = [r for r in MAIN_ROLES if r in held.index] + sorted(relations[:12])
    if not roles:
        roles = [r for r in MAIN_ROLES if (tests["role"].astype(str) == r).any()]
    table = colocation(tests, roles)
    share = table.pivot(index="role_a", columns="role_b", values="share_of_a").loc[roles, roles]
    heads = head_roles(tests)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained")
    img = ax.imshow(share.to_numpy(dtype=float), vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(len(roles)), roles, rotation=90, fontsize=7)
    ax.set_yticks(range(len(roles)), roles, fontsize=7)
    ax.set_xlabel("role B")
    ax.set_ylabel("role A")
    fig.colorbar(img, ax=ax, shrink=0.8).set_label("share of A's heads also holding B")
    counts = heads["n_roles"].value_counts().sort_index()
    bx.bar(counts.index, counts.values, color="0.35")
    bx.set_xticks(counts.index)
    bx.set_xlabel("roles held by a head")
    bx.set_ylabel("heads")
    fig.suptitle(title)
    return save(fig, stem)


def finetuning_change(by_layer: pd.DataFrame, stem, title: str):
    """Left: mean absolute change of the role score per layer and role.  Right: labels gained and lost per layer."""
    roles = [r for r in role_order(by_layer["role"].unique()) if not r.startswith("dep:")]
    roles += sorted(r for r in by_layer["role"].unique() if r.startswith("dep:"))[:10]
    wide = by_layer.pivot(index="role", columns="layer", values="abs_score_change").reindex(roles)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.3 * len(roles)), layout="constrained")
    img = ax.imshow(wide.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(wide.shape[1]), wide.columns)
    ax.set_yticks(range(len(roles)), roles, fontsize=7)
    ax.set_xlabel("layer")
    fig.colorbar(img, ax=ax).set_label("mean |score change| over the layer's heads")
    per_layer = by_layer.groupby("layer")[["gained", "lost"]].sum()
    bx.bar(per_layer.index - 0.2, per_layer["gained"], width=0.4, label="labels gained")
    bx.bar(per_layer.index + 0.2, per_layer["lost"], width=0.4, label="labels lost")
    bx.set_xlabel("layer")
    bx.set_ylabel("head x role labels")
    bx.set_xticks(per_layer.index)
    bx.legend(fontsize=7)
    fig.suptitle(f"{title}: what fine-tuning changed")
    return save(fig, stem)
