"""Role figures: layer x head maps, heads per layer, p-value distribution, roles sharing heads against chance,
what fine-tuning changes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.plots.common import grid, plt, save
from headsieve.roles.analysis import heads_per_layer
from headsieve.roles.registry import ROLE_ORDER, nested


def _matrix(tests: pd.DataFrame, role: str, column: str) -> np.ndarray:
    L, H = int(tests["layer"].max()) + 1, int(tests["head"].max()) + 1
    out = np.full((L, H), np.nan)
    sub = tests[tests["role"].astype(str) == role]
    out[sub["layer"].to_numpy(), sub["head"].to_numpy()] = sub[column].to_numpy(dtype=float)
    return out


#: score forms whose values are shares of a row in [0, 1] (drawn on a linear scale; the others are ratios to
#: uniform attention, drawn on a log2 scale)
SHARE_FORMS = ("mass", "block_contrast")
SCALE_LABELS = {
    "share": "mean score: share of the attention on the targets",
    "ratio": "mean sieve score (log2; 0 = uniform)",
}


def _scale(tests: pd.DataFrame, role: str) -> str:
    if "form" not in tests:
        return "ratio"
    forms = set(tests.loc[tests["role"].astype(str) == role, "form"].astype(str))
    return "share" if forms and forms <= set(SHARE_FORMS) else "ratio"


def _empty(stem, title: str, note: str):
    """A figure that says why there is nothing to draw (e.g. no relation roles on a corpus without trees)."""
    fig, ax = plt.subplots(figsize=(5, 2.2), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    ax.set_title(title)
    return save(fig, stem)


def role_maps(tests: pd.DataFrame, roles: list[str], stem, title: str, empty_note: str = "no roles to draw"):
    """One panel per role: mean score of every head (colour, log scale), labelled heads ringed."""
    roles = [r for r in roles if (tests["role"].astype(str) == r).any()]
    if not roles:
        return _empty(stem, title, empty_note)
    fig, axes = grid(len(roles))
    scales = {role: _scale(tests, role) for role in roles}
    mixed = len(set(scales.values())) > 1
    for ax, role in zip(axes, roles):
        mean = _matrix(tests, role, "mean")
        label = _matrix(tests, role, "label") == 1
        if scales[role] == "share":
            img = ax.imshow(mean, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
        else:
            ratio = np.log2(np.clip(mean, 1 / 16, 64))
            img = ax.imshow(ratio, origin="lower", cmap="viridis", vmin=-2, vmax=5, aspect="auto")
        if mixed:
            fig.colorbar(img, ax=ax, shrink=0.8).set_label(SCALE_LABELS[scales[role]], fontsize=6)
        ly, hx = np.nonzero(label)
        ax.scatter(hx, ly, s=40, facecolors="none", edgecolors="white", linewidths=1.2)
        tau = tests.loc[tests["role"].astype(str) == role, "tau"].iloc[0]
        ax.set_title(f"{role}: {int(label.sum())} heads (tau {tau:g})")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(mean.shape[1]))
        ax.set_yticks(range(mean.shape[0]))
        ax.tick_params(labelsize=7)
    if not mixed:
        fig.colorbar(img, ax=axes[: len(roles)], shrink=0.8).set_label(SCALE_LABELS[scales[roles[0]]])
    fig.suptitle(f"{title}\ncolour: mean score; rings: heads labelled with the role")
    return save(fig, stem)


def layer_counts(tests: pd.DataFrame, stem, title: str):
    """Labelled heads per layer, one line per main role."""
    counts = heads_per_layer(tests)
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for role in [r for r in ROLE_ORDER if r in set(counts["role"].astype(str))]:
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


def _colocation_roles(tests: pd.DataFrame, limit: int = 12) -> list[str]:
    """Main roles present, then the relations labelled on most heads (at most ``limit``)."""
    present = set(tests["role"].astype(str))
    held = tests[tests["label"]].groupby("role", observed=True).size()
    by_count = held[held > 0].sort_values(ascending=False, kind="stable").index
    relations = [str(r) for r in by_count if str(r).startswith("dep:")]
    return [r for r in ROLE_ORDER if r in present] + sorted(relations[:limit])


def colocation_figure(tests: pd.DataFrame, table: pd.DataFrame, stem, title: str):
    """Left: heads holding both roles against chance (log2 observed / expected, over all heads), '+' / '-'
    where enriched / depleted after correction, grey where the roles are nested by definition (no test).
    Right: per layer, the pairs of roles significantly enriched and depleted."""
    roles = _colocation_roles(tests)
    overall = table[table["scope"] == "all"]
    k = len(roles)
    ratio = np.full((k, k), np.nan)
    marks = np.full((k, k), "", dtype=object)
    index = {r: i for i, r in enumerate(roles)}
    for r in overall.itertuples():
        if r.role_a in index and r.role_b in index and not np.isnan(r.p):
            i, j = index[r.role_a], index[r.role_b]
            # half a head added to both: a pair of rare roles sharing no head is not drawn as "far below chance"
            ratio[i, j] = ratio[j, i] = np.clip(np.log2((r.observed + 0.5) / (r.expected + 0.5)), -2, 2)
            sign = "+" if r.enriched else ("-" if r.depleted else "")
            marks[i, j] = marks[j, i] = f"{r.observed}{sign}"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.8), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained")
    nest = np.array([[float(a == b or nested(a, b)) for b in roles] for a in roles]) if k else np.zeros((0, 0))
    ax.imshow(np.where(nest > 0, 0.8, np.nan), cmap="gray", vmin=0, vmax=1)
    significant = np.array([[m.endswith(("+", "-")) for m in row] for row in marks], dtype=bool).reshape(k, k)
    img = ax.imshow(ratio, cmap="RdBu_r", vmin=-2, vmax=2, alpha=np.where(significant, 1.0, 0.35))
    for i in range(k):
        for j in range(k):
            if marks[i, j]:
                bold = significant[i, j]
                light = bold and abs(ratio[i, j]) > 1.2
                colour = "white" if light else ("black" if bold else "0.3")
                ax.text(j, i, marks[i, j], ha="center", va="center", fontsize=6 if k > 12 else 7,
                        fontweight="bold" if bold else "normal", color=colour)  # fmt: skip
    ax.set_xticks(range(k), roles, rotation=90, fontsize=7)
    ax.set_yticks(range(k), roles, fontsize=7)
    ax.set_title("heads holding both; + / - and full colour: more / fewer than chance (corrected);\n"
                 "grey: nested by definition; white: no test", fontsize=7)  # fmt: skip
    fig.colorbar(img, ax=ax, shrink=0.8).set_label("log2 (observed + 0.5) / (expected + 0.5)")
    per_layer = table[table["scope"] == "layer"].groupby("layer")[["enriched", "depleted"]].sum()
    layers = per_layer.index.to_numpy(dtype=int)
    bx.bar(layers - 0.2, per_layer["enriched"], width=0.4, label="enriched pairs", color="tab:red")
    bx.bar(layers + 0.2, per_layer["depleted"], width=0.4, label="depleted pairs", color="tab:blue")
    bx.set_xticks(layers)
    bx.set_xlabel("layer")
    bx.set_ylabel("pairs of roles (corrected)")
    bx.set_ylim(0, max(1, float(per_layer.to_numpy().max()) if len(per_layer) else 1) * 1.15)
    bx.yaxis.get_major_locator().set_params(integer=True)
    if not per_layer.to_numpy().any():
        bx.text(0.5, 0.5, "no pair of roles shares heads\nmore or less than chance within a layer",
                ha="center", va="center", transform=bx.transAxes, fontsize=8)  # fmt: skip
    bx.legend(fontsize=7)
    first = table.iloc[0] if len(table) else None
    note = f"hypergeometric tests, {first['correction']}, alpha {first['alpha']:g}" if first is not None else "no pairs"
    fig.suptitle(f"{title}\n{note}")
    return save(fig, stem)


def finetuning_change(by_layer: pd.DataFrame, agreement: pd.DataFrame, stem, title: str):
    """Left: per layer, mean |standardised change| of the role scores with its interval over seeds, one line
    per main role and all roles together.  Right: head x role scores changed significantly, with the same
    sign, in every seed, per layer."""
    frame = by_layer[by_layer["measure"] == "abs_standardised"]
    seeds = int(frame["seeds"].max()) if len(frame) else 0
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    present = set(frame["role"])
    for role in [r for r in ROLE_ORDER if r in present] + ["all"]:
        sub = frame[frame["role"] == role].sort_values("layer")
        style = {"color": "black", "linewidth": 2.2} if role == "all" else {}
        (line,) = ax.plot(sub["layer"], sub["mean"], marker="o", label=role, **style)
        if seeds >= 2:
            ax.fill_between(sub["layer"], sub["ci_low"], sub["ci_high"], alpha=0.12, color=line.get_color())
    ax.set_xticks(sorted(frame["layer"].unique()))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean |standardised change| (Cohen's d_av)")
    ax.legend(fontsize=7, ncol=2)
    level = float(frame["level"].iloc[0]) if len(frame) else 0.95
    ax.set_title(f"bands: {level:.0%} t interval over {seeds} seeds", fontsize=8)
    agree = agreement[agreement["agrees"]]
    layers = sorted(agreement["layer"].unique())
    up = agree[agree["direction"] == "up"].groupby("layer").size().reindex(layers, fill_value=0)
    down = agree[agree["direction"] == "down"].groupby("layer").size().reindex(layers, fill_value=0)
    x = np.asarray(layers, dtype=float)
    bx.bar(x - 0.2, up.to_numpy(), width=0.4, label="up in every seed", color="tab:red")
    bx.bar(x + 0.2, down.to_numpy(), width=0.4, label="down in every seed", color="tab:blue")
    bx.set_xticks(layers)
    bx.set_xlabel("layer")
    bx.set_ylabel("head x role scores (significant, corrected)")
    bx.legend(fontsize=7)
    fig.suptitle(f"{title}: what fine-tuning changed")
    return save(fig, stem)
