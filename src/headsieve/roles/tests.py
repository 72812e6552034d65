"""One-sided t tests of head roles, with multiple-testing correction.

Per head and role the sample is the per-sentence scores ``s_1..s_n`` (inputs whose score is undefined,
NaN, are left out and counted as ``n_left_out``).  H0: mean <= tau, H1: mean > tau;
``t = (mean - tau) / (sd / sqrt(n))`` with the sample sd (ddof 1; one reference used ddof 0, which
understates the sd and overstates t), ``p = 1 - F_t(t; n - 1)``.  The default tau follows the score form
(``form`` column of the scores) and the role (:data:`headsieve.roles.registry.ROLES`).  The p
values of one model and corpus (every head x role) form one family and are adjusted by Holm (family-wise
error rate), Benjamini-Hochberg (false discovery rate, the default) or not at all.  A head holds a role
when its adjusted p < alpha.

Why BH by default: a role map is a discovery over thousands of (head, role) tests, where a small share of
false labels among the labelled heads is acceptable and Holm's family-wise control costs power; Holm is
offered for claims about single heads.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from headsieve.errors import HeadsieveError
from headsieve.roles.registry import default_tau, is_role, role_names

log = logging.getLogger(__name__)

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

    Degenerate samples are not tested (t and p NaN; see :func:`untested_reason`): fewer than 2 inputs, or
    no spread (sd 0, e.g. copies of one input), where t would be infinite and p 0 without evidence.
    """
    n = np.asarray(n, dtype=float)
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / np.sqrt(n)
        t = (mean - tau) / se
    t = np.where(untested_reason(n, mean, sd) != "", np.nan, t)
    df = np.where(n >= 2, n - 1, 1)
    p = stats.t.sf(t, df)
    return t, np.where(np.isnan(t), np.nan, p)


def untested_reason(n, mean, sd) -> np.ndarray:
    """Why a sample is not tested ("" when it is): "fewer than 2 inputs" or "no spread (sd 0)"."""
    n = np.asarray(n, dtype=float)
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    flat = ~(sd > 1e-10 * np.maximum(np.abs(np.nan_to_num(mean)), 1.0))  # NaN sd counts as no spread
    reason = np.where(flat, "no spread (sd 0)", "")
    return np.where(n < 2, "fewer than 2 inputs", reason).astype(object)


def untested_lines(tests: pd.DataFrame) -> list[str]:
    """Summary lines saying how many (head, role) tests were not run and why (none when all were run)."""
    if "untested_reason" not in tests:
        return []
    reasons = tests["untested_reason"].astype(str)
    counts = reasons[reasons != ""].value_counts()
    if counts.empty:
        return []
    why = "; ".join(f"{reason}: {int(k)}" for reason, k in counts.items())
    return [f"- not tested: {int(counts.sum())} of {len(tests)} head x role samples ({why}); no label there"]


def left_out_lines(tests: pd.DataFrame) -> list[str]:
    """Summary lines: per role, how many inputs had the role's targets but no defined query (mass score:
    every query's uniform share above ``max_uniform_share``; block contrast: no piece outside the window),
    and so did not enter its tests (none when no input was left out)."""
    if "n_left_out" not in tests or not (tests["n_left_out"] > 0).any():
        return []
    per_role = tests.groupby(tests["role"].astype(str), sort=False)[["n", "n_left_out"]].max()
    per_role = per_role[per_role["n_left_out"] > 0]
    parts = [f"{role} {int(r.n_left_out)} of {int(r.n + r.n_left_out)}" for role, r in per_role.iterrows()]
    return [f"- inputs left out (no query where the role's score is defined): {'; '.join(parts)}"]


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


class GroupCodes:
    """The groups of ``frame.groupby(cols, sort=True, observed=True)`` as one int64 code per row.

    Grouping millions of score rows by five key columns spends most of its time combining the keys;
    one integer code per row (each key's sort rank, combined in mixed radix: categoricals by their
    category codes, integers by value, other keys by their sorted unique values, exactly the order
    pandas sorts the groups in) groups the same rows in the same order, and pandas' own aggregations
    over that code give the same numbers.  Rows with a missing key belong to no group, as in pandas."""

    def __init__(self, frame: pd.DataFrame, cols: list[str], rows: np.ndarray | None = None):
        """``rows``: optional bool mask of the rows to group (the others belong to no group)."""
        self.cols = list(cols)
        if rows is not None:
            frame = frame.loc[rows, self.cols]
        self.rows = rows
        keys = [_key_ranks(frame[col]) for col in self.cols]
        self._keys = [(radix, decode) for _, radix, decode in keys]  # per column
        self._key_codes = [ranks for ranks, _, _ in keys]
        self._frame_dtypes = [frame[col].dtype for col in self.cols]
        span = int(np.prod([float(radix) for _, radix, _ in keys]))
        code = np.zeros(len(frame), dtype=np.int32 if span < 2**31 else np.int64)  # in place: few big arrays
        missing = None
        for ranks, radix, _ in keys:
            code *= radix
            code += ranks
            if len(ranks) and ranks.min() < 0:
                missing = (ranks < 0) if missing is None else missing | (ranks < 0)
        self.keep = None if missing is None else ~missing
        self.code = code if self.keep is None else code[self.keep]
        self.grouper = _dense_grouper(self.code, span)

    def groupby(self, values=None, **columns):
        """``values`` (or several ``columns``, name=values: grouped once) grouped by the code, groups sorted;
        each a column of the frame (Series) or an array of the grouped rows only."""
        arrays = {}
        for name, col in ({"values": values} if values is not None else columns).items():
            if isinstance(col, pd.Series):
                col = col.to_numpy() if self.rows is None else col.to_numpy()[self.rows]
            arrays[name] = col if self.keep is None else col[self.keep]
        # no copies of millions of values; every category of the grouper is present, so observed=False gives
        # the same groups without searching for them
        data = pd.Series(arrays["values"], copy=False) if values is not None else pd.DataFrame(arrays, copy=False)
        return data.groupby(self.grouper, sort=True, observed=False)

    def first(self, values: pd.Series, within: str | None = None) -> np.ndarray:
        """The first non-missing value of a column per group (``GroupBy.first``); a categorical column through
        its integer codes (grouping its codes beats grouping its values).  ``within``: a categorical key column
        that may fix the value (a score table's form is one per role): when every value of that key comes
        with one and the same non-missing value, that value, without grouping the rows."""
        if not isinstance(values.dtype, pd.CategoricalDtype):
            return self.groupby(values).first().to_numpy()
        codes = values.cat.codes.to_numpy()
        fixed = self._fixed_by(codes, len(values.cat.categories), within)
        if fixed is not None:
            return values.cat.categories.to_numpy(dtype=object)[fixed]
        if len(codes) and codes.min() < 0:  # missing values: NaN codes, which first() skips
            codes = np.where(codes < 0, np.nan, codes)
        first = self.groupby(codes).first().to_numpy()
        names = values.cat.categories.to_numpy(dtype=object)
        missing = np.isnan(first) if first.dtype.kind == "f" else np.zeros(len(first), dtype=bool)
        return np.where(missing, np.nan, names[np.where(missing, 0, first).astype(np.int64)])

    def _fixed_by(self, codes: np.ndarray, n_values: int, within: str | None) -> np.ndarray | None:
        """Per group, the value code fixed by the key column ``within`` (None when it does not fix one)."""
        if within is None or self.rows is not None or self.keep is not None or not len(codes):
            return None
        k = self.cols.index(within)
        radix, _ = self._keys[k]
        if not isinstance(self._frame_dtypes[k], pd.CategoricalDtype) or codes.min() < 0:
            return None
        key = self._key_codes[k]
        seen = np.bincount(key.astype(np.int64) * n_values + codes, minlength=radix * n_values).reshape(radix, n_values)
        if ((seen > 0).sum(1) > 1).any():
            return None
        per_key = seen.argmax(1)
        code = self.grouper.categories.to_numpy() if isinstance(self.grouper, pd.Categorical) else np.unique(self.code)
        for radix_after, _ in self._keys[k + 1 :]:
            code = code // radix_after
        return per_key[code % radix]

    def frame(self, result: pd.DataFrame) -> pd.DataFrame:
        """An aggregation's result (indexed by code) with the key columns in front, as ``reset_index`` gives
        them after grouping by the columns."""
        code = np.asarray(result.index.to_numpy()).astype(np.int64)
        columns = {}
        for col, (radix, decode) in reversed(list(zip(self.cols, self._keys))):
            columns[col] = decode(code % radix)
            code = code // radix
        keys = pd.DataFrame({col: columns[col] for col in self.cols})
        return pd.concat([keys, result.reset_index(drop=True)], axis=1)


def _dense_grouper(code: np.ndarray, span: int):
    """The codes as a categorical of the present codes (pandas groups a categorical by its integer codes,
    without hashing the values); the plain codes when their span is too large for a lookup table."""
    if span > max(4 * len(code), 1 << 20):
        return code
    present = np.zeros(span, dtype=bool)
    present[code] = True
    categories = np.flatnonzero(present)
    # codes in the smallest dtype pandas keeps for this many categories (no conversion of millions of codes)
    dense = np.cumsum(present, dtype=np.int16 if len(categories) < 2**15 - 1 else np.int32) - 1
    return pd.Categorical.from_codes(dense[code], categories=categories)


def _key_ranks(col: pd.Series):
    """(rank of each row's key in pandas' group order, -1 if missing; number of ranks; rank -> key values)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return (
            col.cat.codes.to_numpy(),
            max(len(col.cat.categories), 1),
            lambda k: pd.Categorical.from_codes(k, dtype=col.dtype),
        )
    if col.dtype.kind in "iu" and isinstance(col.dtype, np.dtype) and len(col):
        values = col.to_numpy()
        low, high = int(values.min()), int(values.max())
        ranks = values if low == 0 else values.astype(np.int64) - low
        return ranks, high - low + 1, lambda k: (k + low).astype(values.dtype)
    ranks, uniques = pd.factorize(col, sort=True)
    return ranks, max(len(uniques), 1), lambda k: uniques.take(k)


def role_taus(scores: pd.DataFrame, tau: float | None, tau_by_role: dict | None) -> np.ndarray:
    """The threshold of every row of a table with ``role`` (and ``form``) columns: ``tau_by_role[role]`` if
    given, else ``tau`` if given, else the registry's default of the row's role and score form (tables
    without a ``form`` column are the reference ratio)."""
    overrides = dict(tau_by_role or {})
    unknown = sorted(r for r in overrides if not (is_role(r, "bidirectional") or is_role(r, "causal")))
    if unknown:  # roles of encoders and of decoder-only models (causal:*) may be given a tau
        known = ", ".join(role_names("bidirectional") + role_names("causal"))
        raise HeadsieveError(
            f"config key roles.tau_by_role: unknown role(s) {', '.join(unknown)} (roles: {known}, dep:<relation>)"
        )
    roles = scores["role"].astype(str)
    if "form" in scores:
        forms = scores["form"].astype(str)
    else:
        forms = roles.map(lambda r: "block_plain" if r == "block" else "ratio")
    if tau is None:
        pairs = pd.MultiIndex.from_arrays([roles, forms])
        defaults = {pair: default_tau(*pair) for pair in pairs.unique()}
        base = pd.Series([defaults[pair] for pair in pairs], index=scores.index, dtype=float)
    else:
        base = pd.Series(float(tau), index=scores.index)
    return roles.map(overrides).fillna(base).to_numpy(dtype=float)


def role_tests(
    scores: pd.DataFrame,
    tau: float | None = None,
    alpha: float = 0.05,
    correction: str = "bh",
    keys=("model", "corpus"),
    tau_by_role: dict | None = None,
) -> pd.DataFrame:
    """Test every (layer, head, role) of a long score table.

    ``scores`` has columns keys + layer, head, role, score (one row per sentence; NaN = undefined for that
    input), optionally ``form``.  ``tau`` (None: the default of each role's score form) and
    ``tau_by_role`` (overrides for single roles) set H0.  Returns one row per (keys, layer, head, role):
    n (inputs tested), n_left_out (inputs with the role's targets but no scorable query), mean, sd,
    ci_low, ci_high (two-sided 1 - alpha interval of the mean), t, p, p_adj, label, plus the tau, alpha
    and correction used, the score form and ``untested_reason`` ("" when tested, else why t and p are NaN).  Each (keys) group is one family.
    """
    group_cols = list(keys) + ["layer", "head", "role"]
    groups = GroupCodes(scores, group_cols)
    g = groups.groupby(scores["score"])
    out = groups.frame(g.agg(n="count", mean="mean", sd="std"))  # pandas std: ddof 1
    out["n_left_out"] = g.size().to_numpy() - out["n"].to_numpy()
    if "form" in scores:  # per test, not per score row: the score table has millions of rows
        out["form"] = pd.Series(groups.first(scores["form"], within="role")).astype(str).to_numpy()
    else:
        out["form"] = np.where(out["role"].astype(str) == "block", "block_plain", "ratio")
    out["tau"] = role_taus(out, tau, tau_by_role)
    if (out["form"] == "block_entropy").any():
        log.warning(
            "block scored as the reference code's ratio x entropy: a uniform head scores ln N there "
            "(above tau 3 for N > 20 pieces), so its block labels do not separate block heads from uniform ones"
        )
    taus = out["tau"].to_numpy(dtype=float)
    t, p = t_test_greater(out["n"].to_numpy(), out["mean"].to_numpy(), out["sd"].to_numpy(), taus)
    out["t"], out["p"] = t, p
    out["untested_reason"] = untested_reason(out["n"].to_numpy(), out["mean"].to_numpy(), out["sd"].to_numpy())
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(1 - alpha / 2, np.where(n >= 2, n - 1, 1)) * out["sd"].to_numpy() / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    out["p_adj"] = np.nan
    for _, idx in out.groupby(list(keys), sort=False).groups.items():
        out.loc[idx, "p_adj"] = adjust(out.loc[idx, "p"].to_numpy(), correction)
    out["label"] = (out["p_adj"] < alpha).fillna(False).astype(bool)
    out["alpha"], out["correction"] = float(alpha), correction
    cols = group_cols + ["n", "n_left_out", "mean", "sd", "ci_low", "ci_high", "t", "p", "p_adj", "label"]
    return out[cols + ["tau", "alpha", "correction", "form", "untested_reason"]]
