"""Analyses built on the role labels: roles per layer, roles sharing a head, layer bands, summary.

All functions take the tidy ``tests.parquet`` table (one row per model, corpus, layer, head, role) and
return tidy tables; figures (``headsieve.plots.roles``) are drawn from these tables only.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from headsieve.pruning.strategies import BANDS

PIECE_ORDER = ("local", "cls", "sep", "delimiter", "block", "syntactic")


def role_order(roles) -> list[str]:
    """Piece roles and the syntactic union first (fixed order), then relations alphabetically."""
    roles = [str(r) for r in roles]
    head = [r for r in PIECE_ORDER if r in roles]
    return head + sorted(r for r in roles if r not in PIECE_ORDER)


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


def head_roles(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per head: number of roles it holds (relations counted once, as 'syntactic' families)."""
    labelled = tests[tests["label"]]
    per_head = labelled.groupby(["layer", "head"], observed=True)["role"].apply(lambda r: sorted(map(str, r)))
    heads = tests[["layer", "head"]].drop_duplicates().set_index(["layer", "head"]).sort_index()
    heads["roles"] = per_head.reindex(heads.index).apply(lambda r: r if isinstance(r, list) else [])
    heads["n_roles"] = heads["roles"].apply(len)
    return heads.reset_index()


def colocation(tests: pd.DataFrame, roles: list[str] | None = None) -> pd.DataFrame:
    """For each pair of roles: heads holding both, heads holding either, and their shares of all heads."""
    labelled = tests[tests["label"]]
    n_heads = tests[["layer", "head"]].drop_duplicates().shape[0]
    holders = {
        str(role): set(zip(group["layer"], group["head"]))
        for role, group in labelled.groupby("role", observed=True)
    }
    roles = roles or role_order(tests["role"].unique())
    rows = []
    for a, b in itertools.product(roles, roles):
        ha, hb = holders.get(a, set()), holders.get(b, set())
        rows.append(
            {
                "role_a": a,
                "role_b": b,
                "both": len(ha & hb),
                "either": len(ha | hb),
                "share_of_heads": len(ha & hb) / n_heads,
                "share_of_a": len(ha & hb) / len(ha) if ha else np.nan,
            }
        )
    return pd.DataFrame(rows)


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


def summary_markdown(tests: pd.DataFrame, title: str) -> str:
    """A markdown report of one run: heads per role and band, multi-role heads, p-value shape."""
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
        "| role | tau | heads | share | bottom | middle | top | mean score (labelled) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in bands.itertuples():
        mean = "" if np.isnan(r.mean_score_labelled) else f"{r.mean_score_labelled:.2f}"
        lines.append(
            f"| {r.role} | {r.tau:g} | {r.heads} | {r.share:.0%} | {r.bottom} | {r.middle} | {r.top} | {mean} |"
        )
    with_role = int((heads["n_roles"] > 0).sum())
    families = heads["roles"].apply(lambda rs: {"syntactic" if x.startswith("dep:") else x for x in rs})
    local_and_syn = int(families.apply(lambda f: "local" in f and "syntactic" in f).sum())
    multi = heads[families.apply(len) > 1]
    multi_bands = pd.Series(layer_band(multi["layer"].to_numpy(), n_layers)).value_counts()
    lines += [
        "",
        f"- heads with at least one role: {with_role} of {n_heads} ({with_role / n_heads:.0%})",
        f"- heads both local and syntactic: {local_and_syn} ({local_and_syn / n_heads:.0%} of heads)",
        f"- heads with roles of several families: {len(multi)}; by band: "
        + ", ".join(f"{b} {int(multi_bands.get(b, 0))}" for b in ("bottom", "middle", "top")),
        f"- p values: {shares['p < 0.05']:.0%} below 0.05, {shares['p > 0.95']:.0%} above 0.95 "
        f"(of {int(shares['tests'])} tests)",
        "",
    ]
    return "\n".join(lines)


def role_change(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per layer, head and role: label and mean score before and after fine-tuning (two test tables of one
    corpus), with ``gained``/``lost`` labels and the score change."""
    keys = ["layer", "head", "role"]
    a = before[keys + ["mean", "label"]].assign(role=lambda f: f["role"].astype(str))
    b = after[keys + ["mean", "label"]].assign(role=lambda f: f["role"].astype(str))
    both = a.merge(b, on=keys, suffixes=("_before", "_after"), how="inner")
    both["score_change"] = both["mean_after"] - both["mean_before"]
    both["gained"] = ~both["label_before"] & both["label_after"]
    both["lost"] = both["label_before"] & ~both["label_after"]
    return both


def role_change_by_layer(change: pd.DataFrame) -> pd.DataFrame:
    """Per layer and role: labelled heads before and after, gained, lost, mean score change."""
    group = change.groupby(["layer", "role"])
    out = group.agg(
        before=("label_before", "sum"),
        after=("label_after", "sum"),
        gained=("gained", "sum"),
        lost=("lost", "sum"),
        score_change=("score_change", "mean"),
        abs_score_change=("score_change", lambda s: float(np.abs(s).mean())),
    ).reset_index()
    return out
