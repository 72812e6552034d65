"""Analyses built on the role labels: roles per layer, roles sharing a head (against chance), layer bands,
stability of the labels over halves of the corpus, what fine-tuning changes (paired tests over seeds), summary.

The functions take the tidy ``tests.parquet`` table (one row per model, corpus, layer, head, role) and, where
they retest or pair sentences, the per-sentence ``scores.parquet``; they return tidy tables; figures
(``headsieve.plots.roles``) are drawn from these tables only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from headsieve.io.markdown import table_lines
from headsieve.models.headspace import BANDS
from headsieve.roles.controls import control_lines
from headsieve.roles.registry import FAMILY_ORDER, ROLE_ORDER, nested, role_family
from headsieve.roles.tests import adjust, left_out_lines, t_test_greater, untested_lines


def role_order(roles) -> list[str]:
    """Registered roles first, in the registry's display order, then relations alphabetically."""
    roles = [str(r) for r in roles]
    head = [r for r in ROLE_ORDER if r in roles]
    return head + sorted(r for r in roles if r not in ROLE_ORDER)


def layer_band(layer: np.ndarray, n_layers: int) -> np.ndarray:
    """bottom / middle / top third of the layers (for 12 layers: 0-3, 4-7, 8-11)."""
    third = np.asarray(layer) * 3 // n_layers
    return np.array(BANDS)[third]  # the same bands the band:<name> pruning strategy removes


def heads_per_layer(tests: pd.DataFrame) -> pd.DataFrame:
    """Labelled heads per role and layer: model, corpus, role, layer, heads, n_heads."""
    n_heads = tests["head"].max() + 1
    grid = tests.groupby(["model", "corpus", "role", "layer"], observed=True)["label"].sum().reset_index()
    grid = grid.rename(columns={"label": "heads"})
    grid["heads"] = grid["heads"].astype(int)
    grid["n_heads"] = int(n_heads)
    return grid


def p_value_shares(tests: pd.DataFrame, low: float = 0.05, high: float = 0.95) -> pd.DataFrame:
    """Share of tests with p below ``low`` and above ``high`` (most p values sit near 0 or 1)."""
    p = tests["p"].dropna()
    return pd.DataFrame(
        {"measure": [f"p < {low}", f"p > {high}", "tests"], "value": [(p < low).mean(), (p > high).mean(), len(p)]}
    )


def p_value_line(shares: pd.Series) -> str:
    """The summary line on the shape of the p values (or that no test could be run)."""
    if int(shares["tests"]) == 0:
        return "- p values: none (no head x role sample could be tested; see the reasons below)"
    return (
        f"- p values: {shares['p < 0.05']:.0%} below 0.05, {shares['p > 0.95']:.0%} above 0.95 "
        f"(of {int(shares['tests'])} tests)"
    )


def head_roles(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per head: number of roles it holds (relations counted once, as 'syntactic' families)."""
    labelled = tests[tests["label"]]
    per_head = labelled.groupby(["layer", "head"], observed=True)["role"].apply(lambda r: sorted(map(str, r)))
    heads = tests[["layer", "head"]].drop_duplicates().set_index(["layer", "head"]).sort_index()
    heads["roles"] = per_head.reindex(heads.index).apply(lambda r: r if isinstance(r, list) else [])
    heads["n_roles"] = heads["roles"].apply(len)
    return heads.reset_index()


def band_summary(tests: pd.DataFrame) -> pd.DataFrame:
    """Heads labelled per role, overall and per layer band, with the mean score of labelled heads."""
    n_layers = int(tests["layer"].max()) + 1
    n_heads = tests[["layer", "head"]].drop_duplicates().shape[0]
    frame = tests.assign(band=layer_band(tests["layer"].to_numpy(), n_layers))
    rows = []
    for role in role_order(frame["role"].unique()):
        sub = frame[frame["role"].astype(str) == role]
        lab = sub[sub["label"]]
        row = {"role": role, "heads": len(lab), "share": len(lab) / n_heads}
        for band in ("bottom", "middle", "top"):
            row[band] = int((lab["band"] == band).sum())
        row["mean_score_labelled"] = float(lab["mean"].mean()) if len(lab) else np.nan
        row["tau"] = float(sub["tau"].iloc[0]) if len(sub) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(tests: pd.DataFrame, title: str, colocation: pd.DataFrame | None = None) -> str:
    """A markdown report of one run: heads per role and band, multi-role heads, p-value shape, and (given
    :func:`colocation_tests`) the pairs of roles that share heads more or less often than chance."""
    n_layers = int(tests["layer"].max()) + 1
    n_per_layer = int(tests["head"].max()) + 1
    n_heads = n_layers * n_per_layer
    bands = band_summary(tests)
    heads = head_roles(tests)
    shares = p_value_shares(tests).set_index("measure")["value"]
    first = tests.iloc[0]
    lines = [
        f"# {title}",
        "",
        f"{n_layers} layers x {n_per_layer} heads; one-sided t tests (H0: mean score <= tau), "
        f"alpha {first['alpha']:g}, correction {first['correction']}; bands: bottom / middle / top third of layers.",
        "",
    ]
    header = ["role", "tau", "heads", "share", "bottom", "middle", "top", "mean score (labelled)"]
    rows = [[r.role, f"{r.tau:g}", r.heads, f"{r.share:.0%}", r.bottom, r.middle, r.top,
             "" if np.isnan(r.mean_score_labelled) else f"{r.mean_score_labelled:.2f}"] for r in bands.itertuples()]  # fmt: skip
    lines += table_lines(header, "lrrrrrrr", rows)
    with_role = int((heads["n_roles"] > 0).sum())
    families = heads["roles"].apply(lambda rs: {role_family(x) for x in rs})
    local_and_syn = int(families.apply(lambda f: "local" in f and "syntactic" in f).sum())
    multi = heads[families.apply(len) > 1]
    multi_bands = pd.Series(layer_band(multi["layer"].to_numpy(), n_layers)).value_counts()
    lines += [
        "",
        f"- heads with at least one role: {with_role} of {n_heads} ({with_role / n_heads:.0%})",
        f"- heads both local and syntactic: {local_and_syn} ({local_and_syn / n_heads:.0%} of heads)",
        f"- heads with roles of several families: {len(multi)}; by band: "
        + ", ".join(f"{b} {int(multi_bands.get(b, 0))}" for b in ("bottom", "middle", "top")),
        p_value_line(shares),
    ]
    lines += untested_lines(tests) + left_out_lines(tests)  # why some heads x roles have no test
    lines += control_lines(tests)  # the syntactic labels against position (roles/controls.py)
    if colocation is not None:
        lines += colocation_lines(colocation)
    return "\n".join(lines + [""])


def colocation_lines(colocation: pd.DataFrame, top: int = 5) -> list[str]:
    """Summary lines: pairs of roles (not nested by definition) sharing heads more / less than chance (for
    each kind of labels in the table: reference, and controlled where the positional control ran)."""
    kinds = list(dict.fromkeys(colocation["labels"])) if "labels" in colocation and len(colocation) else [None]
    if len(kinds) > 1:
        lines = []
        for kind in kinds:
            sub = colocation_lines(colocation[colocation["labels"] == kind], top)
            lines += [sub[0].replace("- roles sharing heads", f"- roles sharing heads ({kind} syntactic labels)", 1)]
            lines += sub[1:]
        return lines
    overall = colocation[colocation["scope"] == "all"]
    tested = int(overall["p"].notna().sum())
    if overall.empty:
        return ["- roles sharing heads: no pair of roles to test"]
    first = overall.iloc[0]
    enriched = overall[overall["enriched"]].sort_values("p", kind="stable")
    depleted = overall[overall["depleted"]].sort_values("p_depleted", kind="stable")
    lines = [
        f"- roles sharing heads against chance (hypergeometric, {first['correction']}, alpha {first['alpha']:g}; "
        f"{tested} of {len(overall)} pairs not nested by definition testable): {len(enriched)} pairs enriched, "
        f"{len(depleted)} depleted"
    ]
    for name, sub in (("enriched", enriched), ("depleted", depleted)):
        if len(sub):
            shown = ", ".join(
                f"{r.role_a} & {r.role_b} ({r.observed} heads, {r.expected:.1f} expected)"
                for r in sub.head(top).itertuples()
            )
            lines.append(f"  - most {name}: {shown}")
    return lines


# ---------------------------------------------------------------- co-location against chance


def _role_pairs(roles) -> list[tuple[str, str]]:
    """Unordered pairs of distinct roles, in display order, leaving out pairs nested by definition."""
    ordered = role_order(roles)
    return [(a, b) for a, b in itertools.combinations(ordered, 2) if not nested(a, b)]


def hypergeom_tails(observed, n_heads, n_a, n_b):
    """P(X >= observed) and P(X <= observed) for X ~ Hypergeom(n_heads, n_a, n_b); NaN where the margins
    fix X (a role held by no head or by every head: no test)."""
    observed, n_heads, n_a, n_b = (np.asarray(x, dtype=int) for x in (observed, n_heads, n_a, n_b))
    testable = (n_a > 0) & (n_a < n_heads) & (n_b > 0) & (n_b < n_heads)
    upper = stats.hypergeom.sf(observed - 1, n_heads, n_a, n_b)
    lower = stats.hypergeom.cdf(observed, n_heads, n_a, n_b)
    return np.where(testable, upper, np.nan), np.where(testable, lower, np.nan)


def role_labels(tests: pd.DataFrame, controlled: bool = False) -> pd.Series:
    """The labels of a tests table: ``label``, or with ``controlled`` the positional control's
    ``label_controlled`` for the syntactic roles (``label`` for the others, which have no control)."""
    if not controlled:
        return tests["label"].astype(bool)
    syntactic = tests["role"].astype(str).map(role_family) == "syntactic"
    return tests["label"].astype(bool).where(~syntactic, tests["label_controlled"].fillna(False).astype(bool))


def colocation_tests(tests: pd.DataFrame, correction: str = "bh", controlled: bool = False) -> pd.DataFrame:
    """Do two roles share heads more (or less) often than chance?  One row per pair of roles not nested by
    definition (:func:`headsieve.roles.targets.nested`) and scope: ``all`` heads of the model, and each
    ``layer`` on its own.

    Under independence (the heads holding B are a random draw of ``n_b`` of the ``n_heads`` heads), the
    number of heads holding both is hypergeometric: ``expected = n_a n_b / n_heads``; ``p`` is the
    one-sided enrichment p value P(X >= observed), ``p_depleted`` the depletion p value P(X <= observed).
    Each scope (the overall rows; the per-layer rows together) is one family, corrected by ``correction``
    (the tests' own correction); pairs whose margins fix the count (a role held by no head or by all) have
    no test (NaN) and do not count.  ``enriched`` / ``depleted``: adjusted p below the tests' alpha.
    ``controlled``: the syntactic roles' labels are those that hold against the positional control
    (:func:`role_labels`); column ``labels`` says which (reference / controlled).
    """
    labelled = tests[role_labels(tests, controlled)]
    alpha = float(tests["alpha"].iloc[0])
    pairs = _role_pairs(tests["role"].astype(str).unique())
    layers = sorted(int(x) for x in tests["layer"].unique())
    heads = tests[["layer", "head"]].drop_duplicates()
    holders = {str(r): set(zip(g["layer"], g["head"])) for r, g in labelled.groupby("role", observed=True)}
    scopes = [("all", None, set(zip(heads["layer"], heads["head"])))]
    scopes += [("layer", L, set(zip(heads.loc[heads["layer"] == L, "layer"], heads.loc[heads["layer"] == L, "head"])))
               for L in layers]  # fmt: skip
    rows = []
    for scope, layer, population in scopes:
        for a, b in pairs:
            ha, hb = holders.get(a, set()) & population, holders.get(b, set()) & population
            rows.append((scope, layer, a, b, len(population), len(ha), len(hb), len(ha & hb)))
    first = tests.iloc[0]
    out = pd.DataFrame(rows, columns=["scope", "layer", "role_a", "role_b", "n_heads", "n_a", "n_b", "observed"])
    out.insert(0, "labels", "controlled" if controlled else "reference")
    out.insert(0, "corpus", str(first["corpus"]))
    out.insert(0, "model", str(first["model"]))
    out["layer"] = out["layer"].astype("Int16")
    out["expected"] = out["n_a"] * out["n_b"] / out["n_heads"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.where(out["expected"] > 0, out["observed"] / out["expected"], np.nan)
    out["p"], out["p_depleted"] = hypergeom_tails(out["observed"], out["n_heads"], out["n_a"], out["n_b"])
    out["p_adj"] = np.nan
    out["p_adj_depleted"] = np.nan
    for _, idx in out.groupby("scope", sort=False).groups.items():
        out.loc[idx, "p_adj"] = adjust(out.loc[idx, "p"].to_numpy(), correction)
        out.loc[idx, "p_adj_depleted"] = adjust(out.loc[idx, "p_depleted"].to_numpy(), correction)
    out["enriched"] = (out["p_adj"] < alpha).fillna(False).astype(bool)
    out["depleted"] = (out["p_adj_depleted"] < alpha).fillna(False).astype(bool)
    out["correction"], out["alpha"] = correction, alpha
    return out


# ---------------------------------------------------------------- stability of labels (split halves)


@dataclass
class ScoreCube:
    """Per-sentence scores as a dense array [units, sentences] (NaN where a role has no score for a
    sentence), with the unit (layer, head, role) of each row, its test threshold and the test settings."""

    units: pd.DataFrame
    scores: np.ndarray
    sentences: np.ndarray
    tau: np.ndarray
    alpha: float
    correction: str


def score_cube(scores: pd.DataFrame, tests: pd.DataFrame) -> ScoreCube:
    """Arrange a score table as :class:`ScoreCube`, with the thresholds and settings of ``tests`` (so that
    a retest uses exactly the settings the role map was made with)."""
    units = tests[["layer", "head", "role", "tau"]].assign(role=lambda f: f["role"].astype(str))
    units = units.reset_index(drop=True)
    names = sorted(set(units["role"]) | set(scores["role"].astype(str).unique()))
    code = {r: k for k, r in enumerate(names)}
    n_layers = int(max(units["layer"].max(), scores["layer"].max())) + 1
    n_heads = int(max(units["head"].max(), scores["head"].max())) + 1

    def flat(layer, head, role_codes):
        return (np.asarray(role_codes, dtype=np.int64) * n_layers + np.asarray(layer)) * n_heads + np.asarray(head)

    lookup = np.full(len(names) * n_layers * n_heads, -1, dtype=np.int64)
    lookup[flat(units["layer"], units["head"], units["role"].map(code))] = np.arange(len(units))
    role = scores["role"].astype("category")
    role_codes = np.array([code[str(r)] for r in role.cat.categories])[role.cat.codes.to_numpy()]
    row = lookup[flat(scores["layer"].to_numpy(), scores["head"].to_numpy(), role_codes)]
    sentences = np.unique(scores["sentence_index"].to_numpy())
    col = np.searchsorted(sentences, scores["sentence_index"].to_numpy())
    cube = np.full((len(units), len(sentences)), np.nan)
    keep = row >= 0
    cube[row[keep], col[keep]] = scores["score"].to_numpy(dtype=float)[keep]
    first = tests.iloc[0]
    return ScoreCube(units, cube, sentences, units["tau"].to_numpy(dtype=float), float(first["alpha"]),
                     str(first["correction"]))  # fmt: skip


def weighted_labels(cube: ScoreCube, weights: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Labels of every unit when sentence ``s`` enters the test ``weights[s, b]`` times (0 = left out),
    for each column ``b`` of weights: the one-sided t test and correction of :func:`role_tests`,
    from weighted sums.  Returns bool [units, columns]."""
    w = np.asarray(weights, dtype=float)
    p = np.full((len(cube.units), w.shape[1]), np.nan)
    for start in range(0, len(cube.units), chunk):  # a block of units at a time bounds the memory
        block = cube.scores[start : start + chunk]
        present = ~np.isnan(block)
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = np.nan_to_num(np.nansum(block, axis=1, keepdims=True) / present.sum(axis=1, keepdims=True))
        x = np.where(present, block - centre, 0.0)  # centred: the sums of squares stay accurate
        n = present.astype(float) @ w
        s1, s2 = x @ w, (x * x) @ w
        with np.errstate(divide="ignore", invalid="ignore"):
            m = s1 / n
            var = np.clip(s2 - n * m * m, 0, None) / (n - 1)
        tau = np.broadcast_to(cube.tau[start : start + chunk, None], n.shape)
        _, pb = t_test_greater(n, m + centre, np.sqrt(var), tau)
        p[start : start + chunk] = np.where(n >= 2, pb, np.nan)
    labels = np.zeros(p.shape, dtype=bool)
    for b in range(p.shape[1]):
        labels[:, b] = adjust(p[:, b], cube.correction) < cube.alpha
    return labels


def _jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard index of two label sets per column (NaN when both are empty)."""
    union = (a | b).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, (a & b).sum(axis=0) / union, np.nan)


def split_halves(sentences: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the sentences (positions into ``sentences``), drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(sentences))
    half = len(sentences) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def label_stability(
    scores: pd.DataFrame, tests: pd.DataFrame, seed: int = 0, n_boot: int = 200, level: float = 0.95
) -> pd.DataFrame:
    """Do the labels reproduce on other sentences?  The sentences are split at random (``seed``) into two
    disjoint halves; each half is tested with the settings of ``tests`` (same thresholds, alpha,
    correction); per role family (and ``all``) the labels (head x role) of the two halves are compared
    by their Jaccard index (shared labels / labels in either half).  Interval: bootstrap over sentences,
    resampled with replacement within each half (``n_boot`` draws, percentile interval at ``level``).

    Columns: model, corpus, family, sentences_a, sentences_b, labels_a, labels_b, shared, jaccard,
    ci_low, ci_high, n_boot, seed, level.  Jaccard is NaN when neither half labels anything in the family.
    """
    cube = score_cube(scores, tests)
    a, b = split_halves(cube.sentences, seed)
    n_sent = len(cube.sentences)
    rng = np.random.default_rng([seed, 1])

    def weights(half, draws):
        w = np.zeros((n_sent, draws))
        if draws == 0 or len(half) == 0:
            return w
        picks = rng.integers(0, len(half), size=(len(half), draws))
        for k in range(draws):
            np.add.at(w[:, k], half[picks[:, k]], 1.0)
        return w

    point_a = np.zeros((n_sent, 1))
    point_a[a] = 1
    point_b = np.zeros((n_sent, 1))
    point_b[b] = 1
    labels_a, labels_b = weighted_labels(cube, point_a)[:, 0], weighted_labels(cube, point_b)[:, 0]
    boot_a, boot_b = weighted_labels(cube, weights(a, n_boot)), weighted_labels(cube, weights(b, n_boot))
    family = cube.units["role"].map(role_family).to_numpy()
    first = tests.iloc[0]
    rows = []
    for name in [f for f in FAMILY_ORDER if f in set(family)] + sorted(set(family) - set(FAMILY_ORDER)) + ["all"]:
        sel = np.ones(len(family), bool) if name == "all" else family == name
        la, lb = labels_a[sel], labels_b[sel]
        boot = _jaccard(boot_a[sel], boot_b[sel])
        boot = boot[~np.isnan(boot)]
        low, high = (np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if len(boot) else (np.nan, np.nan))
        rows.append(
            {
                "model": str(first["model"]), "corpus": str(first["corpus"]), "family": name,
                "sentences_a": len(a), "sentences_b": len(b), "labels_a": int(la.sum()), "labels_b": int(lb.sum()),
                "shared": int((la & lb).sum()), "jaccard": float(_jaccard(la[:, None], lb[:, None])[0]),
                "ci_low": float(low), "ci_high": float(high), "n_boot": int(n_boot), "seed": int(seed),
                "level": float(level),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def stability_lines(stability: pd.DataFrame) -> list[str]:
    """Summary lines: Jaccard of split-half labels per family, with its bootstrap interval."""
    if stability.empty:
        return []
    first = stability.iloc[0]
    lines = [
        f"- label stability (Jaccard of the labels of two random halves, {first['sentences_a']} and "
        f"{first['sentences_b']} sentences, split seed {first['seed']}; {first['level']:.0%} bootstrap interval, "
        f"{first['n_boot']} resamples of sentences within each half):"
    ]
    for r in stability.itertuples():
        if np.isnan(r.jaccard):
            lines.append(f"  - {r.family}: no labels in either half")
            continue
        interval = "" if np.isnan(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        lines.append(
            f"  - {r.family}: {r.jaccard:.2f}{interval} ({r.labels_a} and {r.labels_b} labels, {r.shared} shared)"
        )
    return lines


# ---------------------------------------------------------------- what fine-tuning changes (paired tests)

UNIT = ["layer", "head", "role"]


def paired_change(before: pd.DataFrame, after: pd.DataFrame, alpha: float = 0.05, correction: str = "bh"):
    """Per head and role, a paired two-sided t test of the per-sentence scores of one fine-tuned model
    (``after``) against the pre-trained one (``before``) on the same sentences: d_s = after_s - before_s,
    H0: mean d = 0, ``t = mean(d) / (sd(d) / sqrt(n))`` (sample sd), ``p = 2 F_t(-|t|; n - 1)``; all heads x
    roles form one family, adjusted by ``correction``.

    Columns: layer, head, role, n (paired sentences), mean_before, mean_after, change (mean d), sd_change,
    ci_low, ci_high (two-sided 1 - alpha interval of the change), standardised (change / the root mean
    square of the two sds: Cohen's d_av, comparable across roles whatever their scale), t, p, p_adj,
    significant (p_adj < alpha).
    """
    keys = ["sentence_index"] + UNIT
    a = before[keys + ["score"]].assign(role=lambda f: f["role"].astype(str))
    b = after[keys + ["score"]].assign(role=lambda f: f["role"].astype(str))
    both = a.merge(b, on=keys, suffixes=("_before", "_after"), how="inner")
    both["d"] = both["score_after"].astype(float) - both["score_before"].astype(float)
    both = both[both["d"].notna()]  # a sentence undefined for the role in either model does not pair
    g = both.groupby(UNIT, sort=True)
    out = g.agg(
        n=("d", "count"),
        mean_before=("score_before", "mean"),
        sd_before=("score_before", "std"),
        mean_after=("score_after", "mean"),
        sd_after=("score_after", "std"),
        change=("d", "mean"),
        sd_change=("d", "std"),
    ).reset_index()
    n = out["n"].to_numpy(dtype=float)
    df = np.where(n >= 2, n - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = out["sd_change"].to_numpy() / np.sqrt(n)
        t = out["change"].to_numpy() / se
        t = np.where((se == 0) & (out["change"].to_numpy() == 0), 0.0, t)
        spread = np.sqrt((out["sd_before"] ** 2 + out["sd_after"] ** 2) / 2).to_numpy()
        out["standardised"] = np.where(spread > 0, out["change"] / spread, np.nan)
    t = np.where(n >= 2, t, np.nan)
    p = np.where(np.isnan(t), np.nan, 2 * stats.t.sf(np.abs(t), df))
    half = np.where(n >= 2, stats.t.ppf(1 - alpha / 2, df) * se, np.nan)
    out["ci_low"], out["ci_high"] = out["change"] - half, out["change"] + half
    out["t"], out["p"] = t, p
    out["p_adj"] = adjust(p, correction)
    out["significant"] = (out["p_adj"] < alpha).fillna(False).astype(bool)
    cols = UNIT + ["n", "mean_before", "mean_after", "change", "sd_change", "ci_low", "ci_high", "standardised",
                   "t", "p", "p_adj", "significant"]  # fmt: skip
    out = out[cols]
    if "form" in before:  # the score form (mass: shares of a row, comparable across roles)
        forms = before.assign(role=before["role"].astype(str)).groupby("role", observed=True)["form"].first()
        out = out.assign(form=out["role"].map(forms.astype(str)))
    return out


def finetuning_change(
    before: pd.DataFrame, after_by_seed: dict[int, pd.DataFrame], task: str, alpha: float = 0.05,
    correction: str = "bh",
) -> pd.DataFrame:  # fmt: skip
    """:func:`paired_change` for the model fine-tuned with each seed, stacked: model, corpus, task, seed,
    then its columns, plus alpha and correction (each seed's tests are one family)."""
    first = before.iloc[0]
    frames = []
    for seed, after in sorted(after_by_seed.items()):
        change = paired_change(before, after, alpha, correction)
        change.insert(0, "seed", int(seed))
        frames.append(change)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "task", task)
    out.insert(0, "corpus", str(first["corpus"]))
    out.insert(0, "model", str(first["model"]))
    out["alpha"], out["correction"] = float(alpha), correction
    return out


def change_agreement(change: pd.DataFrame) -> pd.DataFrame:
    """Per head and role, over the fine-tuning seeds: how many seeds change it significantly up and down,
    and whether every seed agrees (``direction`` up / down: significant with the same sign in every seed;
    ``none`` otherwise).  Columns: model, corpus, task, layer, head, role, seeds, seeds_up, seeds_down,
    mean_change, mean_standardised, agrees, direction."""
    frame = change.assign(
        up=change["significant"] & (change["change"] > 0), down=change["significant"] & (change["change"] < 0)
    )
    out = (
        frame.groupby(["model", "corpus", "task"] + UNIT, sort=True)
        .agg(
            seeds=("seed", "nunique"),
            seeds_up=("up", "sum"),
            seeds_down=("down", "sum"),
            mean_change=("change", "mean"),
            mean_standardised=("standardised", "mean"),
        )
        .reset_index()
    )
    up, down = out["seeds_up"] == out["seeds"], out["seeds_down"] == out["seeds"]
    out["agrees"] = up | down
    out["direction"] = np.where(up, "up", np.where(down, "down", "none"))
    return out


CHANGE_MEASURES = {
    "change": "change",
    "abs_change": "abs_change",
    "standardised": "standardised",
    "abs_standardised": "abs_standardised",
    "share_significant": "significant",
}


def change_by_layer(change: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per layer and role (and over all roles, ``role = all``), each seed's mean over the layer's heads of
    the change measures, then their mean over seeds with a t interval at ``level`` (df = seeds - 1; NaN
    for one seed).  Measures: ``change`` and ``abs_change`` (score units: comparable across roles only
    when the score is, as the share-of-mass score is), ``standardised`` and ``abs_standardised`` (Cohen's
    d_av, comparable across roles), ``share_significant`` (share of the layer's heads with a significant
    change).  Columns: model, corpus, task, layer, role, measure, seeds, mean, sd, ci_low, ci_high, level.
    """
    frame = change.assign(
        role=change["role"].astype(str),
        abs_change=change["change"].abs(),
        abs_standardised=change["standardised"].abs(),
        significant=change["significant"].astype(float),
    )
    keys = ["model", "corpus", "task", "seed", "layer"]
    columns = list(CHANGE_MEASURES.values())
    per_role = frame.groupby(keys + ["role"], sort=True)[columns].mean().reset_index()
    every = frame.groupby(keys, sort=True)[columns].mean().reset_index().assign(role="all")
    per_seed = pd.concat([per_role, every], ignore_index=True)
    per_seed = per_seed.rename(columns={v: k for k, v in CHANGE_MEASURES.items()})
    long = per_seed.melt(id_vars=keys + ["role"], value_vars=list(CHANGE_MEASURES), var_name="measure")
    out = (
        long.groupby(["model", "corpus", "task", "layer", "role", "measure"], sort=True)["value"]
        .agg(seeds="count", mean="mean", sd="std")
        .reset_index()
    )
    n = out["seeds"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(n >= 2, stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)) * out["sd"] / np.sqrt(n), np.nan)
    out["ci_low"], out["ci_high"], out["level"] = out["mean"] - half, out["mean"] + half, float(level)
    return out


def change_summary_markdown(change: pd.DataFrame, agreement: pd.DataFrame, by_layer: pd.DataFrame, title: str) -> str:
    """A short markdown summary of the fine-tuning change: seeds, significant changes per seed, heads that
    agree across seeds, and the per-layer mean |standardised change| with its interval."""
    first = change.iloc[0]
    seeds = sorted(change["seed"].unique())
    lines = [
        f"# {title}",
        "",
        f"Paired two-sided t tests per head and role (fine-tuned minus pre-trained score, same sentences), "
        f"{first['correction']} over the heads x roles of each seed, alpha {first['alpha']:g}; seeds "
        + ", ".join(str(s) for s in seeds) + ".",
        "",
    ]  # fmt: skip
    for seed, sub in change.groupby("seed"):
        lines.append(f"- seed {seed}: {int(sub['significant'].sum())} of {len(sub)} head x role scores changed")
    agree = agreement[agreement["agrees"]]
    lines.append(
        f"- changed in every seed with the same sign: {len(agree)} head x role "
        f"({int((agree['direction'] == 'up').sum())} up, {int((agree['direction'] == 'down').sum())} down)"
    )
    rows = by_layer[(by_layer["role"] == "all") & (by_layer["measure"] == "abs_standardised")]
    lines += ["", "| layer | mean abs standardised change | interval over seeds |", "|---:|---:|---|"]
    for r in rows.itertuples():
        interval = "" if np.isnan(r.ci_low) else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
        lines.append(f"| {r.layer} | {r.mean:.3f} | {interval} |")
    return "\n".join(lines) + "\n"


def map_agreement(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Agreement of two role maps of one model (e.g. gold trees against a parser's trees on the same text).

    For every role in either map, and per family and ``all`` over the roles both maps tested: heads labelled in
    ``a``, in ``b``, in both, and their Jaccard index (NaN when neither labels any).  ``in_a`` / ``in_b`` say
    whether the map tested the role at all (a parser's relation scheme differs from UD's, so relation roles
    may exist in one map only).  Syntactic roles are compared on the reference labels (``labels =
    reference``) and, where both maps ran the positional control, on the controlled labels too.
    """
    kinds = ["reference"] + (["controlled"] if "label_controlled" in a and "label_controlled" in b else [])
    keys = ["layer", "head", "role"]
    rows = []
    for kind in kinds:
        la = a[keys].assign(label_a=role_labels(a, kind == "controlled").to_numpy())
        lb = b[keys].assign(label_b=role_labels(b, kind == "controlled").to_numpy())
        for frame in (la, lb):
            frame["role"] = frame["role"].astype(str)
        both = la.merge(lb, on=keys, how="outer")
        both["in_a"], both["in_b"] = both["label_a"].notna(), both["label_b"].notna()
        both["label_a"] = both["label_a"].fillna(False).astype(bool)
        both["label_b"] = both["label_b"].fillna(False).astype(bool)
        both["family"] = both["role"].map(role_family)
        common = both[both["in_a"] & both["in_b"]]
        groups = [("role", role, sub) for role, sub in both.groupby("role", sort=False)]
        groups += [("family", fam, common[common["family"] == fam]) for fam in FAMILY_ORDER if (common["family"] == fam).any()]
        groups += [("family", "all", common)]
        for scope, name, sub in groups:
            labelled_a, labelled_b = sub["label_a"].to_numpy(), sub["label_b"].to_numpy()
            shared = int((labelled_a & labelled_b).sum())
            union = int((labelled_a | labelled_b).sum())
            rows.append(
                {
                    "labels": kind, "scope": scope, "role": name, "in_a": bool(sub["in_a"].any()),
                    "in_b": bool(sub["in_b"].any()), "heads_a": int(labelled_a.sum()), "heads_b": int(labelled_b.sum()),
                    "shared": shared, "jaccard": shared / union if union else np.nan,
                }  # fmt: skip
            )
    if not rows:
        return pd.DataFrame(columns=["labels", "scope", "role", "in_a", "in_b", "heads_a", "heads_b", "shared", "jaccard"])
    out = pd.DataFrame(rows)
    order = {r: i for i, r in enumerate(role_order(out.loc[out["scope"] == "role", "role"].unique()))}
    out["_order"] = [(0, order.get(r, 0)) if s == "role" else (1, 0) for s, r in zip(out["scope"], out["role"])]
    out["_kind"] = out["labels"].map(kinds.index)
    out = out.sort_values(["_kind", "_order"], kind="stable").drop(columns=["_kind", "_order"]).reset_index(drop=True)
    return out


def agreement_markdown(agreement: pd.DataFrame, name_a: str, name_b: str, title: str) -> str:
    """A markdown report of :func:`map_agreement`: per family, then the roles found in one map only."""
    lines = [f"# {title}", "", f"Heads labelled in **{name_a}** (a) and **{name_b}** (b), and their Jaccard index.", ""]
    for kind, sub in agreement.groupby("labels", sort=False):
        fam = sub[sub["scope"] == "family"]
        lines += [f"## {kind} labels", "", "| family | heads a | heads b | shared | Jaccard |", "|---|---:|---:|---:|---:|"]
        for r in fam.itertuples():
            jac = "" if np.isnan(r.jaccard) else f"{r.jaccard:.2f}"
            lines.append(f"| {r.role} | {r.heads_a} | {r.heads_b} | {r.shared} | {jac} |")
        roles = sub[sub["scope"] == "role"]
        only_a = roles.loc[roles["in_a"] & ~roles["in_b"], "role"].tolist()
        only_b = roles.loc[roles["in_b"] & ~roles["in_a"], "role"].tolist()
        lines += [
            "",
            f"- roles tested in a only: {', '.join(only_a) or 'none'}",
            f"- roles tested in b only: {', '.join(only_b) or 'none'}",
            "",
        ]
    return "\n".join(lines)
