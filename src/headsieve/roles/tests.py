"""One-sided t tests of head roles, with multiple-testing correction.

Per head and role the sample is the per-sentence scores ``s_1..s_n``.  H0: mean <= tau, H1: mean > tau;
``t = (mean - tau) / (sd / sqrt(n))`` with the sample sd (ddof 1), ``p = 1 - F_t(t; n - 1)``.  The p
values of one model and corpus (every head x role) form one family and are adjusted by Holm (family-wise
error rate), Benjamini-Hochberg (false discovery rate, the default) or not at all.  A head holds a role
when its adjusted p < alpha.

Why BH by default: a role map is a discovery over thousands of (head, role) tests, where a small share of
false labels among the labelled heads is acceptable and Holm's family-wise control costs power; Holm is
offered for claims about single heads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

CORRECTIONS = {"none": None, "holm": "holm", "bh": "fdr_bh"}


def read_scores(path) -> pd.DataFrame:
    """The score table (``scores.parquet``) as a DataFrame; roles and families stay categorical."""
    import pyarrow.parquet as pq

    from headsieve.errors import HeadsieveError

    try:
        return pq.read_table(path).to_pandas()
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read scores ({str(err).splitlines()[0]})") from None


def t_test_greater(n: np.ndarray, mean: np.ndarray, sd: np.ndarray, tau: float):
    """Vectorised one-sample one-sided t test of H0 mean <= tau; returns (t, p).

    n < 2 gives NaN; sd = 0 gives t = +/-inf (p 0 or 1) unless the mean equals tau exactly (then p = 1).
    """
    n = np.asarray(n, dtype=float)
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / np.sqrt(n)
        t = (mean - tau) / se
    t = np.where((se == 0) & (mean == tau), -np.inf, t)
    t = np.where(n < 2, np.nan, t)
    df = np.where(n >= 2, n - 1, 1)
    p = stats.t.sf(t, df)
    return t, np.where(np.isnan(t), np.nan, p)


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p values over the whole family (NaNs stay NaN and do not count)."""
    method = CORRECTIONS[correction]
    p = np.asarray(p, dtype=float)
    if method is None:
        return p.copy()
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


#: the plain block ratio of a head attending only to its own segment is N / |segment|, about 2 for
#: balanced pairs, so tau = 3 would make the role unreachable; block is tested against 1.5 by default
DEFAULT_TAU_BY_ROLE = {"block": 1.5}


def role_tests(
    scores: pd.DataFrame,
    tau: float = 3.0,
    alpha: float = 0.05,
    correction: str = "bh",
    keys=("model", "corpus"),
    tau_by_role: dict | None = None,
) -> pd.DataFrame:
    """Test every (layer, head, role) of a long score table.

    ``scores`` has columns keys + layer, head, role, score (one row per sentence).  ``tau_by_role``
    overrides tau for single roles (default :data:`DEFAULT_TAU_BY_ROLE`).  Returns one row per
    (keys, layer, head, role): n, mean, sd, ci_low, ci_high (two-sided 1 - alpha interval of the mean),
    t, p, p_adj, label, plus the tau, alpha and correction used.  Each (keys) group is one family.
    """
    group_cols = list(keys) + ["layer", "head", "role"]
    g = scores.groupby(group_cols, sort=True, observed=True)["score"]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()  # pandas std: ddof 1
    overrides = DEFAULT_TAU_BY_ROLE if tau_by_role is None else tau_by_role
    taus = out["role"].astype(str).map(lambda r: overrides.get(r, tau)).to_numpy(dtype=float)
    t, p = t_test_greater(out["n"].to_numpy(), out["mean"].to_numpy(), out["sd"].to_numpy(), taus)
    out["t"], out["p"] = t, p
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(1 - alpha / 2, np.where(n >= 2, n - 1, 1)) * out["sd"].to_numpy() / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    out["p_adj"] = np.nan
    for _, idx in out.groupby(list(keys), sort=False).groups.items():
        out.loc[idx, "p_adj"] = adjust(out.loc[idx, "p"].to_numpy(), correction)
    out["label"] = (out["p_adj"] < alpha).fillna(False).astype(bool)
    out["tau"], out["alpha"], out["correction"] = taus, float(alpha), correction
    cols = group_cols + ["n", "mean", "sd", "ci_low", "ci_high", "t", "p", "p_adj", "label", "tau", "alpha", "correction"]
    return out[cols]
