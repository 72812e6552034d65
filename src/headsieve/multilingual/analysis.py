"""Head roles across languages and prunability per language.

Role maps: the role-test tables of one model on the parallel PUD treebanks (one per language) are joined
into one long table; per role, the layer x language distribution of labelled heads; per pair of
languages, how similar their role maps are (Jaccard overlap of labelled (head, role) pairs, and the
correlation of mean scores); and whether languages that share a fact (family, word order, morphology,
resources) have more similar maps than languages that do not (a permutation test over languages).

Prunability: the metric of a fine-tuned model with one layer, or one band of layers, masked, per
evaluation language, as a relative drop from the unpruned model.

Random pruning curves: the metric of a fine-tuned model with a random share of its heads masked, as a
relative drop from the same model unpruned, per model, task, seed and share; summarised over seeds with
t intervals, and the two models compared per share with a paired t test over seeds (Holm-corrected).

Fine-tuning influence: linear CKA between each layer's outputs before and after fine-tuning on the same
inputs; 1 - CKA is how much fine-tuning moved the layer; its slope over depth is tested against 0.
"""

from __future__ import annotations

import itertools
from importlib import resources

import numpy as np
import pandas as pd
from scipy import stats

from headsieve.errors import HeadsieveError
from headsieve.roles.registry import role_names

FACTS = ("family", "word_order", "morphology", "resources")
#: roles of the per-language layer distribution figure: the registry's overview roles of encoder models (a role
#: absent from the tables, block on single sentences, gets no panel)
PIECE_ROLES = role_names("bidirectional", overview=True)


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


# ------------------------------------------------------------------------------------------------------
# Relative drop by share of heads pruned at random; how much fine-tuning moves each layer (linear CKA).


def linear_cka(x, y) -> float:
    """Linear centred kernel alignment of two representations of the same ``n`` inputs.

    ``x``: ``[n, d1]``, ``y``: ``[n, d2]`` (rows are the same inputs, e.g. tokens).  1 for representations
    equal up to an orthogonal transform and isotropic scaling; near 0 for independent ones (Kornblith et
    al. 2019, feature-space form: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on column-centred X and Y)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs two 2-D arrays with the same rows, got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of ``values`` (nan bounds with fewer than 2 values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def holm(p) -> np.ndarray:
    """Holm-adjusted p values (family: every value given; nan stays nan and is not counted)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[k]))
        out[k] = running
    return out


def random_masks(n_layers: int, n_heads: int, fractions, seed: int, draws: int = 1) -> dict[str, np.ndarray]:
    """Random head masks of every fraction: ``'<fraction>/<draw>'`` -> ``[layers, heads]`` 0/1 mask.

    The heads are drawn by the pruning strategies' ``random`` selection, seeded by (seed, draw, fraction);
    fraction 0 is the unpruned model (one mask)."""
    from headsieve.models.headspace import HeadSpace
    from headsieve.models.masking import mask_from_heads
    from headsieve.pruning.strategies import select_heads

    space = HeadSpace.encoder(n_layers, n_heads)
    masks = {}
    for fraction in sorted(set(float(f) for f in fractions) | {0.0}):
        for draw in range(1 if fraction == 0 else draws):
            heads = select_heads("random", space, fraction, seed=seed * 1000 + draw)
            masks[f"{fraction:.4f}/{draw}"] = mask_from_heads(space, heads)["encoder"]
    return masks


CURVE_KEYS = ["model", "task", "metric", "fraction"]


def fraction_curves(evaluations: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model, task, seed and fraction: ``value`` (mean over the random draws), ``unpruned`` (fraction 0)
    and ``relative_drop`` = (unpruned - value) / unpruned, for ``metric``.

    ``evaluations``: model, task, seed, fraction, draw, metric, value (one row per mask and metric)."""
    frame = evaluations[evaluations["metric"] == metric]
    if frame.empty:
        raise HeadsieveError(f"fraction curves: no evaluations of metric '{metric}' (have: {sorted(set(evaluations['metric']))})")
    keys = ["model", "task", "seed"]
    extra = {"majority": ("majority", "first")} if "majority" in frame else {}
    per = frame.groupby(keys + ["metric", "fraction"], as_index=False).agg(value=("value", "mean"), draws=("value", "size"), **extra)
    base = per[per["fraction"] == 0][keys + ["value"]].rename(columns={"value": "unpruned"})
    missing = per[keys].drop_duplicates().merge(base[keys], how="left", indicator=True)
    if (missing["_merge"] != "both").any():
        raise HeadsieveError("fraction curves: a model/task/seed has no unpruned (fraction 0) evaluation")
    out = per.merge(base, on=keys)
    out["relative_drop"] = (out["unpruned"] - out["value"]) / out["unpruned"]
    cols = ["model", "task", "seed", "metric", "fraction", "draws", "value", "unpruned", "relative_drop"] + list(extra)
    return out[cols].sort_values(["model", "task", "seed", "fraction"], ignore_index=True)


def summarise_curves(curves: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per model, task and fraction: mean relative drop over seeds with its t interval (and the value's mean)."""
    rows = []
    for (model, task, metric, fraction), g in curves.groupby(CURVE_KEYS, sort=True):
        mean, low, high = t_interval(g["relative_drop"], level)
        rows.append({"model": model, "task": task, "metric": metric, "fraction": float(fraction), "seeds": int(len(g)),
                     "mean": mean, "ci_low": low, "ci_high": high, "value_mean": float(g["value"].mean()),
                     "unpruned_mean": float(g["unpruned"].mean())})  # fmt: skip
    return pd.DataFrame(rows)


def compare_models(curves: pd.DataFrame, first: str, second: str, level: float = 0.95) -> pd.DataFrame:
    """Per task and pruned fraction: ``first`` against ``second``, relative drop paired by seed (the same seed
    fixes the training order and subset of both); mean difference (first - second) with its t interval,
    the paired t test and Holm's correction over every row (fraction 0 left out: its drop is 0 by definition)."""
    a = curves[(curves["model"] == first) & (curves["fraction"] > 0)]
    b = curves[(curves["model"] == second) & (curves["fraction"] > 0)]
    joined = a.merge(b, on=["task", "metric", "fraction", "seed"], suffixes=("_a", "_b"))
    rows = []
    for (task, metric, fraction), g in joined.groupby(["task", "metric", "fraction"], sort=True):
        diff = (g["relative_drop_a"] - g["relative_drop_b"]).to_numpy()
        mean, low, high = t_interval(diff, level)
        p = float(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 and np.std(diff) > 0 else float("nan")
        rows.append({"task": task, "metric": metric, "fraction": float(fraction), "model_a": first, "model_b": second,
                     "seeds": int(len(diff)), "difference": mean, "ci_low": low, "ci_high": high, "p": p})  # fmt: skip
    out = pd.DataFrame(rows, columns=["task", "metric", "fraction", "model_a", "model_b", "seeds", "difference", "ci_low", "ci_high", "p"])
    out["p_adj"] = holm(out["p"].to_numpy()) if len(out) else []
    out["correction"] = "holm"
    return out


def influence_slopes(cka: pd.DataFrame) -> pd.DataFrame:
    """Per model, task and seed: least-squares slope of 1 - CKA over relative depth (layer / n_layers, layers
    1..n_layers; the embedding output, layer 0, left out): positive = the top layers move more."""
    layers = cka[cka["layer"] > 0]
    rows = []
    for (model, task, seed), g in layers.groupby(["model", "task", "seed"], sort=True):
        depth = g["layer"].to_numpy(float) / g["n_layers"].to_numpy(float)
        change = 1.0 - g["cka"].to_numpy(float)
        slope = float(np.polyfit(depth, change, 1)[0]) if len(g) > 1 else float("nan")
        rows.append({"model": model, "task": task, "seed": int(seed), "n_layers": int(g["n_layers"].iloc[0]), "slope": slope,
                     "change_bottom": float(change[np.argmin(depth)]), "change_top": float(change[np.argmax(depth)])})  # fmt: skip
    return pd.DataFrame(rows)


def _slope(depth: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Least-squares slopes of each row of ``change`` [..., layers] over ``depth`` [layers]."""
    d = depth - depth.mean()
    return (change - change.mean(axis=-1, keepdims=True)) @ d / (d @ d)


def influence_tests(cka: pd.DataFrame, permutations: int = 10000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """"The top layers are more influenced by fine-tuning", per model and task: mean slope of 1 - CKA over
    depth across seeds with its t interval and one-sided t test (slope > 0), and a permutation test that
    shuffles the layer order within each seed (null: change does not depend on depth); Holm over the rows."""
    slopes = influence_slopes(cka)
    rng = np.random.default_rng(seed)
    rows = []
    for (model, task), g in cka[cka["layer"] > 0].groupby(["model", "task"], sort=True):
        wide = g.pivot(index="seed", columns="layer", values="cka").sort_index(axis=1)
        change = 1.0 - wide.to_numpy(float)  # [seeds, layers]
        depth = wide.columns.to_numpy(float) / float(g["n_layers"].iloc[0])
        observed = float(_slope(depth, change).mean())
        perm = np.argsort(rng.random((permutations, *change.shape)), axis=-1)  # [P, seeds, layers]
        shuffled = np.take_along_axis(np.broadcast_to(change, perm.shape), perm, axis=-1)
        null = _slope(depth, shuffled).mean(axis=-1)
        s = slopes[(slopes["model"] == model) & (slopes["task"] == task)]["slope"].to_numpy()
        mean, low, high = t_interval(s, level)
        p_t = float(stats.ttest_1samp(s, 0.0, alternative="greater").pvalue) if len(s) > 1 and np.std(s) > 0 else float("nan")
        rows.append({"model": model, "task": task, "seeds": int(len(s)), "n_layers": int(g["n_layers"].iloc[0]),
                     "slope": mean, "ci_low": low, "ci_high": high, "p_t": p_t,
                     "p_permutation": float((1 + (null >= observed - 1e-12).sum()) / (1 + permutations)),
                     "change_bottom": float(change[:, 0].mean()), "change_top": float(change[:, -1].mean())})  # fmt: skip
    out = pd.DataFrame(rows)
    if len(out):
        out["p_adj"] = holm(out["p_permutation"].to_numpy())
        out["correction"] = "holm"
    return out


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def summary_markdown(curves: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame,
                     influence: pd.DataFrame, level: float = 0.95) -> str:  # fmt: skip
    """The study's summary as markdown, every figure taken from the tables given (the report step's
    artifacts): unpruned metric against the majority class, relative drop by share of heads pruned at
    random, the per-share comparison of the two models, and the per-layer fine-tuning influence."""
    pct = f"{level:.0%}"
    lines = ["# Multilingual study: generated summary", "",
             "Written by the `multilingual_study` step from `fraction_curves.parquet`, `fraction_summary.parquet`,",
             "`fraction_tests.parquet` and `layer_influence.parquet` (same folder); do not edit by hand.", "",
             "## Unpruned fine-tuned models", "",
             "| model | task | metric | seeds | unpruned (mean) | min | max | majority class |",
             "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    base = curves[curves["fraction"] == 0]
    for (model, task, metric), g in base.groupby(["model", "task", "metric"], sort=True):
        majority = _num(float(g["majority"].iloc[0])) if "majority" in g else "n/a"
        lines.append(f"| {model} | {task} | {metric} | {len(g)} | {_num(g['value'].mean())} | {_num(g['value'].min())} "
                     f"| {_num(g['value'].max())} | {majority} |")  # fmt: skip
    lines += ["", f"## Relative drop by share of heads pruned at random (mean over seeds [{pct} t interval])", ""]
    fractions = sorted(f for f in summary["fraction"].unique() if f > 0)
    lines += ["| model | task | " + " | ".join(f"{f:.2f}" for f in fractions) + " |",
              "|---|---|" + "---:|" * len(fractions)]  # fmt: skip
    for (model, task), g in summary.groupby(["model", "task"], sort=True):
        cell = {r.fraction: f"{_num(r.mean)} [{_num(r.ci_low)}, {_num(r.ci_high)}]" for r in g.itertuples()}
        lines.append(f"| {model} | {task} | " + " | ".join(cell.get(f, "") for f in fractions) + " |")
    if len(comparisons):
        first, second = comparisons["model_a"].iloc[0], comparisons["model_b"].iloc[0]
        correction = comparisons["correction"].iloc[0]
        lines += ["", f"## {first} against {second}: difference of relative drops, paired by seed", "",
                  f"p: paired t test over seeds; p_adj: {correction} over all {len(comparisons)} rows.", "",
                  f"| task | fraction | seeds | difference | {pct} CI | p | p_adj |", "|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
        for r in comparisons.itertuples():
            lines.append(f"| {r.task} | {r.fraction:.2f} | {r.seeds} | {_num(r.difference)} | [{_num(r.ci_low)}, {_num(r.ci_high)}] "
                         f"| {_p(r.p)} | {_p(r.p_adj)} |")  # fmt: skip
    if len(influence):
        lines += ["", "## How much fine-tuning moves each layer (1 - linear CKA, before against after)", "",
                  "slope: least-squares slope of 1 - CKA over relative depth (layer / layers), mean over seeds; "
                  "p_t: one-sided t test of slope > 0; p_perm: layer order shuffled within each seed; "
                  f"p_adj: {influence['correction'].iloc[0]} over the p_perm of all rows.", "",
                  f"| model | task | seeds | 1 - CKA first layer | 1 - CKA last layer | slope | {pct} CI | p_t | p_perm | p_adj |",
                  "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip
        for r in influence.itertuples():
            lines.append(f"| {r.model} | {r.task} | {r.seeds} | {_num(r.change_bottom)} | {_num(r.change_top)} | {_num(r.slope)} "
                         f"| [{_num(r.ci_low)}, {_num(r.ci_high)}] | {_p(r.p_t)} | {_p(r.p_permutation)} | {_p(r.p_adj)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
