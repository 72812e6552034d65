"""Positional controls of the syntactic roles (roles/controls.py), against a loop by definition and planted truth.

* The vectorised control scores equal a direct loop written from the definition (shape-matched decoys:
  same signed word offset, same piece counts, same first-piece offset; usable pairs with no arc between
  them), for both score forms, every direction and aggregation, on inputs with multi-piece words,
  multi-word tokens and truncated words.
* Planted truth: a head attending to the syntactic head (40-90% of each row) gets the reference label and
  the controlled label; heads attending to the next word, the next piece or the previous word get the
  reference label for relations whose arcs mostly sit at that offset (det, amod, compound on real UD EWT
  trees with the real minilm word pieces) but no controlled label; Dirichlet (no-role) and positional
  heads are rejected by the paired test at a rate <= alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from headsieve.roles.controls import CONTROL_COLUMNS, add_controls, control_lines, control_tests, score_controls
from headsieve.roles.sieve import Batch, SentenceFacts, score_batch
from headsieve.roles.tests import role_tests

from support.synthetic import dirichlet_attention, normalise, planted_rows, sentence_row

# ------------------------------------------------------------------ reference, by definition


def pieces_of(row, w):
    return [i for i, t in enumerate(row["piece_token"]) if t == row["word_token"][w]]


def usable(row, a, b):
    ok = lambda w: row["word_kept"][w] and pieces_of(row, w)  # noqa: E731
    return bool(ok(a) and ok(b) and row["word_token"][a] != row["word_token"][b])


def word_value(A, row, a, b, aggregation):
    """Mean over the pieces of a of the sum (or mean) over the pieces of b."""
    pa, pb = pieces_of(row, a), pieces_of(row, b)
    per = [sum(A[i, j] for j in pb) / (len(pb) if aggregation == "mean" else 1) for i in pa]
    return sum(per) / len(pa)


def word_reference(A, row, a, form):
    """Mean over a's pieces of the row mass (mass) or of the uniform reference row mass / N (ratio)."""
    n = row["n_pieces"]
    masses = [sum(A[i, j] for j in range(n)) for i in pieces_of(row, a)]
    return sum(masses) / len(masses) / (n if form == "ratio" else 1)


def shape(row, a, b):
    return (b - a, len(pieces_of(row, a)), len(pieces_of(row, b)), pieces_of(row, b)[0] - pieces_of(row, a)[0])


def true_pairs(row, relations, direction):
    pairs = []
    for d, h in enumerate(row["word_head"]):
        if h == 0 or row["word_deprel"][d] not in relations or not usable(row, d, h - 1):
            continue
        if direction in ("dep2head", "both"):
            pairs.append((d, h - 1))
        if direction in ("head2dep", "both"):
            pairs.append((h - 1, d))
    return pairs


def ref_control(A, row, relations, direction, form, aggregation, cap=0.25):
    """(control score or None when the role does not apply, NaN when nothing is matched or defined)."""
    pairs = true_pairs(row, relations, direction)
    if not pairs:
        return None
    linked = {(d, h - 1) for d, h in enumerate(row["word_head"]) if h} | {
        (h - 1, d) for d, h in enumerate(row["word_head"]) if h
    }
    n_words = len(row["word_token"])
    decoys = [(x, y) for x in range(n_words) for y in range(n_words) if usable(row, x, y) and (x, y) not in linked]
    agg = "sum" if form == "mass" else aggregation
    targets: dict[int, list[float]] = {}
    any_matched = False
    for q, t in pairs:
        same = [(x, y) for x, y in decoys if shape(row, x, y) == shape(row, q, t)]
        if same:
            any_matched = True
            mean = sum(word_value(A, row, x, y, agg) / word_reference(A, row, x, form) for x, y in same) / len(same)
            value = mean * word_reference(A, row, q, form)
        else:
            value = word_value(A, row, q, t, agg)
        targets.setdefault(q, []).append(value)
    per_query = []
    n = row["n_pieces"]
    for q, values in sorted(targets.items()):
        ref = word_reference(A, row, q, form)
        if form == "ratio":
            per_query.append(sum(values) / len(values) / ref)
            continue
        ts = [t for qq, t in pairs if qq == q]
        if sum(len(pieces_of(row, t)) for t in ts) / n <= cap + 1e-9:
            per_query.append(sum(values) / ref)
    if not any_matched or not per_query:
        return math.nan
    return sum(per_query) / len(per_query)


# ------------------------------------------------------------------ vectorised against the loop

L, H = 1, 3


@pytest.mark.parametrize("form", ["mass", "ratio"])
@pytest.mark.parametrize("direction", ["dep2head", "head2dep", "both"])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_control_scores_match_the_definition(form, direction, aggregation):
    rng = np.random.default_rng(17)
    rows = [sentence_row(rng, int(rng.integers(3, 14)), max_pieces=2, index=k) for k in range(8)]
    arrays = [dirichlet_attention(rng, L, H, r["n_pieces"], 0.4) for r in rows]
    union = ["nsubj", "obj", "amod"]
    options = {"score": form, "direction": direction, "aggregation": aggregation, "union": union}
    got = score_controls(Batch(arrays, [SentenceFacts.from_row(r) for r in rows]), options)
    checked = matched = 0
    for b, (row, A) in enumerate(zip(rows, arrays)):
        present = {r for r, h in zip(row["word_deprel"], row["word_head"]) if h}
        roles = {f"dep:{r}": {r} for r in present}
        if present & set(union):
            roles["syntactic"] = set(union)
        for role, relations in roles.items():
            for head in range(H):
                want = ref_control(A[0, head].astype(float), row, relations, direction, form, aggregation)
                if want is None:
                    assert (b, role) not in got
                    continue
                value = float(got[(b, role)][head])
                if math.isnan(want):
                    assert math.isnan(value), (b, role)
                else:
                    assert value == pytest.approx(want, rel=1e-4), (b, role)
                    matched += 1
                checked += 1
    assert checked > 60 and matched > 20


def test_no_decoy_of_the_shape_keeps_the_own_value():
    """Two words: the one pair is an arc, nothing else sits at its offset, so there is no control."""
    rng = np.random.default_rng(1)
    row = sentence_row(rng, 2, max_pieces=1, mwt=False, lost=False)
    A = dirichlet_attention(rng, L, H, row["n_pieces"])
    got = score_controls(Batch([A], [SentenceFacts.from_row(row)]), {"union": ["nsubj", "obj", "amod"]})
    assert got and all(np.isnan(v).all() for v in got.values())


# ------------------------------------------------------------------ planted heads

def planted_head(kind: str, row: dict) -> np.ndarray:
    """[N, N] attention of a pure head: syntactic (each dependent's pieces on its head word's pieces), or
    positional: the next / previous surface token's pieces, or the next piece (rows without such a target
    are uniform)."""
    n = row["n_pieces"]
    if kind == "syntactic":
        return planted_rows("syntactic", row)
    A = np.ones((n, n))
    token = np.asarray(row["piece_token"])
    if kind == "next_piece":
        A[np.arange(n - 1)] = np.eye(n)[1:]
        return normalise(A)
    step = 1 if kind == "next_word" else -1
    for k in range(len(row["tokens"])):
        src, dst = token == k, token == k + step
        if src.any() and dst.any():
            A[src] = dst.astype(float)
    return normalise(A)


def attention(rng, rows, kinds: list[str | None], strength) -> list[np.ndarray]:
    """[1, len(kinds), N, N] per row: head h holds ``kinds[h]`` at ``strength[h]`` of each row's mass over
    Dirichlet noise (None: noise only)."""
    out = []
    for row in rows:
        A = dirichlet_attention(rng, 1, len(kinds), row["n_pieces"])
        for h, kind in enumerate(kinds):
            if kind is not None:
                A[0, h] = strength[h] * planted_head(kind, row) + (1 - strength[h]) * A[0, h]
        out.append(A.astype(np.float32))
    return out


def score_frame(rows, arrays, options: dict, chunk: int = 64) -> pd.DataFrame:
    """Long scores table (keys, layer, head, role, score, form, control) through the real batch scorers."""
    records = []
    for start in range(0, len(rows), chunk):
        part, arr = rows[start : start + chunk], arrays[start : start + chunk]
        batch = Batch(arr, [SentenceFacts.from_row(r) for r in part])
        controls = score_controls(batch, options)
        for b, role, scores, _, _, form in score_batch(batch, options, detail=True):
            control = controls.get((b, role), np.full(len(scores), np.nan))
            for x in range(len(scores)):
                records.append((start + b, x, role, float(scores[x]), form, float(control[x])))
    frame = pd.DataFrame(records, columns=["sentence_index", "head", "role", "score", "form", "control"])
    frame.insert(0, "layer", 0)
    frame.insert(0, "corpus", "c")
    frame.insert(0, "model", "m")
    return frame


def with_controls(frame, **kw) -> pd.DataFrame:
    """Role tests (each form's default tau) with the control columns."""
    tests = role_tests(frame, **kw)
    return add_controls(tests, frame, **{k: v for k, v in kw.items() if k in ("alpha", "correction")})


@pytest.mark.parametrize("form", ["mass", "ratio"])
def test_planted_syntactic_head_is_controlled_on_synthetic_trees(form):
    """Random trees (arcs at every offset), 2-piece words possible: a head with 40-90% of each row on the
    syntactic head holds the controlled label for the union and for each relation; noise heads hold none."""
    rng = np.random.default_rng(3)
    rows = [sentence_row(rng, int(rng.integers(10, 25)), max_pieces=2, index=k) for k in range(60)]
    kinds = ["syntactic", "syntactic", "syntactic", None]
    arrays = attention(rng, rows, kinds, [0.4, 0.6, 0.9, 0])
    options = {"score": form, "union": ["nsubj", "obj", "amod", "det", "case", "advmod"]}
    tests = with_controls(score_frame(rows, arrays, options))
    syn = tests[tests.role.str.startswith("dep:") | (tests.role == "syntactic")]
    assert set(syn.role) == {"syntactic"} | {f"dep:{r}" for r in options["union"]}
    for head in (0, 1, 2):
        mine = syn[syn["head"] == head]
        assert (mine.diff_p_adj < 0.05).all(), mine[["role", "diff_mean", "diff_p_adj"]]
        assert (mine.label_controlled == mine.label).all()
    assert syn[syn["head"].isin([1, 2])].label_controlled.all()
    assert not syn[syn["head"] == 3].label_controlled.any()
    other = tests[~tests.index.isin(syn.index)]
    assert other.diff_p.isna().all() and not other.label_controlled.any() and (other.diff_n == 0).all()
    assert list(tests.columns[list(tests.columns).index("label") + 1 :][: len(CONTROL_COLUMNS)]) == list(
        CONTROL_COLUMNS
    )


@pytest.fixture(scope="module")
def ewt_rows(minilm_dir, data):
    """The first 600 sentences of UD EWT dev with the real minilm word pieces."""
    from headsieve.io.conllu import read_conllu
    from headsieve.models.load import load_tokenizer
    from headsieve.tokens import encode_sentences

    tokenizer = load_tokenizer("minilm", {"source": str(minilm_dir)})
    sentences = read_conllu(data / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=600)
    rows, _ = encode_sentences(tokenizer, sentences, 128)
    return rows


@pytest.mark.parametrize("form", ["mass", "ratio"])
def test_positional_heads_get_reference_labels_but_not_controlled_on_ewt(ewt_rows, form):
    """On real trees, heads on the next word (det, amod, compound: mostly at +1) or the next piece get
    those reference labels from position alone; the paired test against shape-matched decoys gives them no
    controlled label, while a syntactic head keeps its labels."""
    rng = np.random.default_rng(11)
    kinds = ["next_word", "next_piece", "prev_word", "syntactic", None]
    arrays = attention(rng, ewt_rows, kinds, [0.85, 0.85, 0.85, 0.6, 0])
    options = {"score": form}
    tests = with_controls(score_frame(ewt_rows, arrays, options))
    syn = tests[tests.role.str.startswith("dep:") | (tests.role == "syntactic")].set_index(["head", "role"])
    for head in (0, 1):  # next word, next piece: labelled by position
        for role in ("dep:det", "dep:amod", "dep:compound"):
            assert syn.loc[(head, role), "label"], (head, role)
    positional = syn.loc[[0, 1, 2]]
    assert positional.label.sum() >= 6
    assert not positional.label_controlled.any(), positional[positional.label_controlled]
    syntactic = syn.loc[3]
    frequent = syntactic[syntactic.diff_n >= 100]
    assert len(frequent) >= 10 and frequent.label_controlled.all(), frequent[~frequent.label_controlled]
    assert not syn.loc[4].label_controlled.any()


def test_paired_test_rejects_null_heads_at_most_at_alpha():
    """Dirichlet heads and heads on the next word (a positional, not a syntactic preference): the paired
    test (uncorrected) rejects at a per-test rate <= alpha over repeated draws, and is not silent."""
    alpha, draws = 0.05, 60
    rng = np.random.default_rng(23)
    options = {"union": ["nsubj", "obj", "amod", "det"], "piece_roles": []}
    rates = {"noise": [], "positional": []}
    controlled = []
    for _ in range(draws):
        rows = [sentence_row(rng, int(rng.integers(8, 16)), max_pieces=2, index=k) for k in range(25)]
        arrays = attention(rng, rows, [None, None, "next_word", "next_word"], [0, 0, 0.8, 0.5])
        frame = score_frame(rows, arrays, options)
        plain = control_tests(frame, alpha=alpha, correction="none")
        rates["noise"].append((plain[plain["head"] < 2].diff_p < alpha).mean())
        rates["positional"].append((plain[plain["head"] >= 2].diff_p < alpha).mean())
        tests = add_controls(role_tests(frame, alpha=alpha), frame, alpha=alpha)
        controlled.append(tests[tests["head"] < 2].label_controlled.mean())
    for kind, per_draw in rates.items():
        rate = float(np.mean(per_draw))
        se = float(np.std(per_draw, ddof=1) / np.sqrt(draws))
        assert rate <= alpha + 3 * se, (kind, rate)
        assert rate >= alpha / 5, (kind, rate)  # p values do reach alpha: the test is calibrated, not silent
    assert float(np.mean(controlled)) <= alpha


# ------------------------------------------------------------------ through the dump, scores.parquet and the CLI


def write_dump(folder, rows, arrays):
    """tokens.parquet and an attention dump of the given rows and [L, H, N, N] arrays."""
    from headsieve.io.atomic import write_table
    from headsieve.io.shards import ShardWriter
    from headsieve.tokens import records_table

    filled = [
        {
            "text": "synthetic", "text_b": None, "label": None, "words": [f"w{w}" for w in range(len(r["word_token"]))],
            "word_segment": [0] * len(r["word_token"]), "pieces": [f"p{i}" for i in range(r["n_pieces"])],
            "token_type_ids": [0] * r["n_pieces"], "truncated": False, "n_words_lost": 0, "n_relations_lost": 0, **r,
        }  # fmt: skip
        for r in rows
    ]
    write_table(records_table(filled, "m", "c"), folder / "tokens.parquet")
    writer = ShardWriter(folder / "attention", "m", "c", shard_bytes=20_000)
    for row, A in zip(rows, arrays):
        writer.add(row["sentence_index"], row["sentence_id"], A, row["input_ids"])
    writer.close()


def test_control_column_and_cli_columns(tmp_path):
    """scores.parquet carries each syntactic row's control (NaN elsewhere) as the batch scorer gives it, and
    ``roles-test`` writes the controlled label next to the reference label."""
    from support.cli import run_cli

    from headsieve.io.atomic import write_table
    from headsieve.roles.score import score_dump

    rng = np.random.default_rng(5)
    rows = [sentence_row(rng, int(rng.integers(10, 20)), max_pieces=1, index=k) for k in range(40)]
    arrays = attention(rng, rows, ["syntactic", "next_word", None], [0.7, 0.85, 0])
    write_dump(tmp_path, rows, arrays)
    table, _ = score_dump(tmp_path / "tokens.parquet", tmp_path / "attention", "m", "c", progress=False)
    scores = table.to_pandas()
    syntactic = scores.family.astype(str) == "syntactic"
    assert scores.loc[~syntactic, "control"].isna().all()
    assert scores.loc[syntactic, "control"].notna().mean() > 0.9
    want = score_controls(Batch(arrays[:3], [SentenceFacts.from_row(r) for r in rows[:3]]))
    for (b, role), control in want.items():
        got = scores[(scores.sentence_index == b) & (scores.role.astype(str) == role)].sort_values("head")
        assert np.allclose(got.control.to_numpy(), control, rtol=5e-3, atol=1e-6, equal_nan=True)  # dump: float16
    write_table(table, tmp_path / "scores.parquet")
    out = tmp_path / "tests.parquet"
    proc = run_cli(
        "roles-test", "--scores", str(tmp_path / "scores.parquet"), "--tau", "0.4", "--alpha", "0.05",
        "--correction", "bh", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    tests = pd.read_parquet(out)
    columns = list(tests.columns)
    assert columns[columns.index("label") + 1 :][: len(CONTROL_COLUMNS)] == list(CONTROL_COLUMNS)
    union = tests[tests.role.astype(str) == "syntactic"].set_index("head")
    assert union.loc[0, "label"] and union.loc[0, "label_controlled"]
    assert not union.loc[1, "label_controlled"] and not union.loc[2, "label_controlled"]


def test_summary_lines_count_reference_and_controlled_labels():
    rng = np.random.default_rng(8)
    rows = [sentence_row(rng, int(rng.integers(10, 20)), max_pieces=1, index=k) for k in range(30)]
    arrays = attention(rng, rows, ["syntactic", "next_word", None], [0.7, 0.9, 0])
    tests = with_controls(score_frame(rows, arrays, {}))
    lines = control_lines(tests)
    syn = tests[tests["diff_n"] > 0]
    assert f"{int(syn.label_controlled.sum())} of {int(syn.label.sum())} syntactic labels hold" in lines[0]
    union = syn[syn.role == "syntactic"]
    assert f"syntactic {int(union.label.sum())} / {int(union.label_controlled.sum())}" in lines[1]
    assert control_lines(role_tests(score_frame(rows, arrays, {}).drop(columns="control"))) == []
    from headsieve.roles.analysis import summary_markdown

    assert "\n".join(lines) in summary_markdown(tests, "planted")  # the report's summary.md states it
