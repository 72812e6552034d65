"""Multilingual figures: role distribution per language, role-map similarity, relative drops by layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsieve.plots.common import grid, plt, save


def _family_order(languages, facts: pd.DataFrame) -> list[str]:
    known = [lang for lang in languages if lang in facts.index]
    ordered = sorted(known, key=lambda lang: (facts.loc[lang, "family"], facts.loc[lang, "branch"], lang))
    return ordered + sorted(lang for lang in languages if lang not in facts.index)


def role_distribution(distribution: pd.DataFrame, facts: pd.DataFrame, roles, stem, title: str):
    """One panel per role: share of each layer's heads labelled with the role, languages by family."""
    roles = [r for r in roles if r in set(distribution["role"])]
    fig, axes = grid(len(roles), cols=3, size=(4.2, 3.6))
    languages = _family_order(distribution["language"].unique(), facts)
    for ax, role in zip(axes, roles):
        wide = distribution[distribution["role"] == role].pivot(index="language", columns="layer", values="share")
        wide = wide.reindex(languages)
        img = ax.imshow(wide.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(languages)), [f"{l} ({facts.loc[l, 'family'][:8]})" if l in facts.index else l for l in languages], fontsize=6)
        ax.set_xticks(range(wide.shape[1]), wide.columns, fontsize=7)
        ax.set_xlabel("layer")
        ax.set_title(role)
    fig.colorbar(img, ax=axes[: len(roles)], shrink=0.7).set_label("share of the layer's heads labelled")
    fig.suptitle(f"{title}: where each role sits, per language (languages grouped by family)")
    return save(fig, stem)


def similarity_matrix(similarity: pd.DataFrame, facts: pd.DataFrame, stem, title: str, measure: str = "jaccard"):
    """Role-map similarity of every pair of languages, languages grouped by family."""
    languages = _family_order(sorted(set(similarity["language_a"]) | set(similarity["language_b"])), facts)
    k = {lang: i for i, lang in enumerate(languages)}
    m = np.full((len(languages), len(languages)), np.nan)
    for r in similarity.itertuples():
        v = getattr(r, measure)
        m[k[r.language_a], k[r.language_b]] = m[k[r.language_b], k[r.language_a]] = v
    fig, ax = plt.subplots(figsize=(0.35 * len(languages) + 2.5, 0.35 * len(languages) + 1.5), layout="constrained")
    img = ax.imshow(m, cmap="magma", aspect="equal")
    ax.set_xticks(range(len(languages)), languages, rotation=90, fontsize=7)
    ax.set_yticks(range(len(languages)), [f"{l} {facts.loc[l, 'family']}" if l in facts.index else l for l in languages], fontsize=7)
    fig.colorbar(img, ax=ax, shrink=0.8).set_label(f"role-map similarity ({measure})")
    ax.set_title(f"{title}: how alike the role maps of two languages are")
    return save(fig, stem)


def drop_heatmap(drops: pd.DataFrame, facts: pd.DataFrame, stem, title: str):
    """Relative drop per language (rows, grouped by family) and pruned layer / band (columns), per model."""
    models = sorted(drops["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(1.0 + 0.55 * drops["strategy"].nunique() * len(models), 1.5 + 0.3 * drops["language"].nunique()),
                             squeeze=False, layout="constrained")  # fmt: skip
    limit = float(np.nanmax(np.abs(drops["relative_drop"]))) if len(drops) else 1.0
    for ax, model in zip(axes[0], models):
        sub = drops[drops["model"] == model]
        order = sorted(sub["strategy"].unique(), key=lambda s: (s.split(":")[0] != "layer", int(s.split(":")[1]) if s.startswith("layer:") else ["bottom", "middle", "top"].index(s.split(":")[1])))
        languages = _family_order(sub["language"].unique(), facts)
        wide = sub.pivot_table(index="language", columns="strategy", values="relative_drop").reindex(index=languages, columns=order)
        img = ax.imshow(wide.to_numpy(dtype=float), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(wide.shape[0]):
            for j in range(wide.shape[1]):
                v = wide.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(order)), [s.replace("layer:", "L").replace("band:", "") for s in order], rotation=90, fontsize=7)
        ax.set_yticks(range(len(languages)), [f"{l} ({facts.loc[l, 'family']})" if l in facts.index else l for l in languages], fontsize=7)
        ax.set_xlabel("pruned layer (L) or band of layers")
        ax.set_title(f"{model}", fontsize=9)
    fig.colorbar(img, ax=axes[0].tolist(), shrink=0.8).set_label("relative drop of the metric")
    fig.suptitle(f"{title}: relative drop when one layer (or band) of heads is pruned")
    return save(fig, stem)


def _model_colours(models) -> dict:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(k % 10) for k, m in enumerate(sorted(models))}


def fraction_curves(summary: pd.DataFrame, curves: pd.DataFrame, stem, title: str):
    """Relative drop against the share of heads pruned at random, one panel per task, one line per model:
    mean over seeds with its confidence band, each seed as a faint line."""
    tasks = sorted(summary["task"].unique())
    colours = _model_colours(summary["model"].unique())
    fig, axes = grid(len(tasks), cols=min(3, len(tasks)), size=(4.4, 3.6))
    for ax, task in zip(axes, tasks):
        for model, g in summary[summary["task"] == task].groupby("model", sort=True):
            g = g.sort_values("fraction")
            ax.plot(g["fraction"], g["mean"], marker="o", color=colours[model], label=f"{model} (n={int(g['seeds'].max())} seeds)")
            ax.fill_between(g["fraction"], g["ci_low"], g["ci_high"], color=colours[model], alpha=0.2, linewidth=0)
            seeds = curves[(curves["task"] == task) & (curves["model"] == model)]
            for _, s in seeds.groupby("seed"):
                s = s.sort_values("fraction")
                ax.plot(s["fraction"], s["relative_drop"], color=colours[model], alpha=0.3, linewidth=0.7)
        ax.axhline(0, color="grey", linewidth=0.6)
        metric = summary.loc[summary["task"] == task, "metric"].iloc[0]
        ax.set_xlabel("share of heads pruned at random")
        ax.set_ylabel(f"relative drop of {metric}")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: relative drop by share of heads pruned (mean, 95% CI over seeds)")
    return save(fig, stem)


def layer_influence(cka: pd.DataFrame, stem, title: str, level: float = 0.95):
    """1 - CKA of each layer's outputs before against after fine-tuning, over relative depth, one panel per
    task, one line per model (mean over seeds with a t-interval band)."""
    from scipy import stats

    tasks = sorted(cka["task"].unique())
    colours = _model_colours(cka["model"].unique())
    fig, axes = grid(len(tasks), cols=min(3, len(tasks)), size=(4.4, 3.6))
    for ax, task in zip(axes, tasks):
        for model, g in cka[(cka["task"] == task) & (cka["layer"] > 0)].groupby("model", sort=True):
            change = (1.0 - g.pivot(index="seed", columns="layer", values="cka")).sort_index(axis=1)
            depth = change.columns.to_numpy(float) / float(g["n_layers"].iloc[0])
            mean = change.mean().to_numpy()
            n = len(change)
            half = stats.t.ppf(0.5 + level / 2, n - 1) * change.std(ddof=1).to_numpy() / np.sqrt(n) if n > 1 else np.zeros_like(mean)
            ax.plot(depth, mean, marker="o", color=colours[model], label=f"{model} ({n} seeds)")
            ax.fill_between(depth, mean - half, mean + half, color=colours[model], alpha=0.2, linewidth=0)
        ax.set_xlabel("relative depth (layer / layers)")
        ax.set_ylabel("1 - linear CKA (before vs after)")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: how much fine-tuning moves each layer's outputs")
    return save(fig, stem)
