"""Head roles across languages and prunability per language.

Role maps: the role-test tables of one model on the parallel PUD treebanks (one per language) are joined
into one long table; per role, the layer x language distribution of labelled heads; per pair of
languages, how similar their role maps are (Jaccard overlap of labelled (head, role) pairs, and the
correlation of mean scores); and whether languages that share a fact (family, word order, morphology,
resources) have more similar maps than languages that do not (a permutation test over languages).

Prunability: the metric of a fine-tuned model with one layer, or one band of layers, masked, per
evaluation language, as a relative drop from the unpruned model.
"""

from __future__ import annotations

import itertools
from importlib import resources

import numpy as np
import pandas as pd

FACTS = ("family", "word_order", "morphology", "resources")
PIECE_ROLES = ("local", "cls", "sep", "delimiter", "syntactic")


def language_facts() -> pd.DataFrame:
    """The repository's table of language facts (see ``languages.csv``), indexed by language code."""
    with resources.files("headsieve.multilingual").joinpath("languages.csv").open(encoding="utf-8") as fh:
        return pd.read_csv(fh).set_index("code")


def roles_by_language(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table from per-language role tests: language, layer, head, role, n, mean, p_adj, label."""
    parts = []
    for language, tests in sorted(tables.items()):
        frame = tests[["layer", "head", "role", "n", "mean", "p_adj", "label"]].copy()
        frame["role"] = frame["role"].astype(str)
        frame.insert(0, "language", language)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def layer_distribution(by_language: pd.DataFrame) -> pd.DataFrame:
    """Labelled heads per role, layer and language (with the share of the layer's heads)."""
    heads_per_layer = by_language.groupby(["language", "layer"])["head"].nunique().rename("n_heads")
    counts = by_language.groupby(["role", "language", "layer"])["label"].sum().rename("heads").reset_index()
    counts = counts.merge(heads_per_layer.reset_index(), on=["language", "layer"])
    counts["share"] = counts["heads"] / counts["n_heads"]
    return counts


def map_similarity(by_language: pd.DataFrame, roles=None) -> pd.DataFrame:
    """Per pair of languages: Jaccard overlap of their labelled (layer, head, role) sets and the mean over
    roles of the Pearson correlation of their mean-score maps; roles default to those every language has."""
    languages = sorted(by_language["language"].unique())
    shared = set.intersection(*(set(g["role"]) for _, g in by_language.groupby("language")))
    roles = sorted(shared if roles is None else set(roles) & shared)
    sub = by_language[by_language["role"].isin(roles)]
    labelled = {
        lang: set(map(tuple, g.loc[g["label"], ["layer", "head", "role"]].to_numpy().tolist()))
        for lang, g in sub.groupby("language")
    }
    maps = {lang: g.set_index(["role", "layer", "head"])["mean"].sort_index() for lang, g in sub.groupby("language")}
    rows = []
    for a, b in itertools.combinations(languages, 2):
        la, lb = labelled.get(a, set()), labelled.get(b, set())
        jaccard = len(la & lb) / len(la | lb) if la | lb else np.nan
        corr = []
        for role in roles:
            x, y = maps[a].loc[role], maps[b].loc[role]
            x, y = x.align(y, join="inner")
            if len(x) > 2 and x.std() > 0 and y.std() > 0:
                corr.append(float(np.corrcoef(x, y)[0, 1]))
        rows.append({"language_a": a, "language_b": b, "jaccard": jaccard, "correlation": float(np.mean(corr)) if corr else np.nan})
    return pd.DataFrame(rows)


def similarity_by_fact(similarity: pd.DataFrame, facts: pd.DataFrame, measure: str = "jaccard",
                       permutations: int = 5000, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """For each fact: mean similarity of language pairs that share it against pairs that do not, and a
    permutation test (shuffling the fact's values over languages) of the difference."""
    languages = sorted(set(similarity["language_a"]) | set(similarity["language_b"]))
    missing = [lang for lang in languages if lang not in facts.index]
    known = [lang for lang in languages if lang in facts.index]
    index = {lang: k for k, lang in enumerate(known)}
    keep = similarity["language_a"].isin(index) & similarity["language_b"].isin(index) & similarity[measure].notna()
    sim = similarity[keep]
    ia = sim["language_a"].map(index).to_numpy()
    ib = sim["language_b"].map(index).to_numpy()
    values = sim[measure].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    rows = []
    for fact in FACTS:
        codes = pd.factorize(facts.loc[known, fact])[0]
        same = codes[ia] == codes[ib]
        if not same.any() or same.all():
            continue
        observed = values[same].mean() - values[~same].mean()
        perms = np.stack([rng.permutation(codes) for _ in range(permutations)])  # [P, languages]
        s = perms[:, ia] == perms[:, ib]  # [P, pairs]
        n_same = s.sum(1)
        valid = (n_same > 0) & (n_same < len(values))
        diff = (s @ values) / np.maximum(n_same, 1) - ((~s) @ values) / np.maximum(len(values) - n_same, 1)
        count = int((diff[valid] >= observed).sum())
        rows.append(
            {
                "fact": fact, "measure": measure, "pairs_sharing": int(same.sum()),
                "mean_sharing": float(values[same].mean()), "mean_not_sharing": float(values[~same].mean()),
                "difference": float(observed), "p": float((1 + count) / (1 + int(valid.sum()))),
                "languages_without_facts": ",".join(missing),
            }  # fmt: skip
        )
    return pd.DataFrame(rows)


def relative_drops(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Relative drop of the primary metric per language and pruned layer/band: (unpruned - pruned) / unpruned.

    ``evaluations``: columns model, task, language, seed, strategy ('none' = unpruned, 'layer:L', 'band:B'),
    metric, value, primary.  Returns model, task, language, strategy, kind (layer/band), layer or band,
    value (mean over seeds), unpruned, relative_drop."""
    frame = evaluations[evaluations["primary"]]
    base = frame[frame["strategy"] == "none"][["model", "task", "language", "seed", "value"]].rename(columns={"value": "unpruned"})
    pruned = frame[frame["strategy"] != "none"].merge(base, on=["model", "task", "language", "seed"])
    pruned["relative_drop"] = (pruned["unpruned"] - pruned["value"]) / pruned["unpruned"]
    out = pruned.groupby(["model", "task", "language", "strategy"], as_index=False)[["value", "unpruned", "relative_drop"]].mean()
    out["kind"] = out["strategy"].str.split(":").str[0]
    out["where"] = out["strategy"].str.split(":").str[1]
    return out
