"""The role stage's fast paths (issue #14) against the straightforward computations they replace.

* Word pairs (roles/word_pairs.py), built once per batch for all inputs: the same (input, role, query,
  target) pairs in the same order as stacking the per-input target matrices of ``syntactic_targets``, and
  the same decoys as ``decoy_targets``, for every direction, with and without relation subtypes, on
  synthetic trees (multi-piece words, multi-word tokens, truncated words, inputs without a tree) and on
  real UD EWT trees with the real minilm word pieces.
* Scores and control scores from those pairs equal, bit for bit, the scores from the per-input pairs.
* Segment sums of rows: the bits of ``np.add.reduceat`` for every run length up to 300, several widths,
  float32 and float64.
* Row entropy in blocks: the same bits as the one-shot formula over the padded batch.
* ``role_tests`` and ``control_tests`` grouped by one code per row: the same table, exactly, as pandas'
  groupby over the key columns (categorical, string and integer keys, undefined scores, missing keys,
  no control at all).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from headsieve.roles.controls import control_scores, control_tests, decoy_targets
from headsieve.roles.sieve import DEFAULT_OPTIONS, Batch, SentenceFacts, _syntactic_scores, row_entropy
from headsieve.roles.sieve import sentence_roles, syntactic_form
from headsieve.roles.targets import syntactic_targets
from headsieve.roles.tests import role_tests
from headsieve.roles.segments import reduceat_rows
from headsieve.roles.word_pairs import BatchWords, decoy_pairs, syntactic_pairs

from support.synthetic import dirichlet_attention, pair_row, sentence_row

# ------------------------------------------------------------------ the per-input reference


def per_input_pairs(facts: list[SentenceFacts], roles: list[str], opts: dict):
    """(b, r, q, t) and decoys (b, q, t): the True entries of each input's target matrices, input by input."""
    pairs, decoys = [], []
    for b, f in enumerate(facts):
        if f.heads is None:
            continue
        usable = f.usable_pairs()
        S = syntactic_targets(f.heads, f.labels(opts["subtypes"]), usable, roles, set(opts["union"]), opts["direction"])
        r, q, t = np.nonzero(S)
        pairs.append((np.full(len(q), b), r, q, t))
        dq, dt = np.nonzero(decoy_targets(f.heads, usable, S))
        decoys.append((np.full(len(dq), b), dq, dt))
    joined = [np.concatenate(x).astype(np.int64) for x in zip(*pairs)] if pairs else [np.zeros(0, np.int64)] * 4
    joined_decoys = [np.concatenate(x).astype(np.int64) for x in zip(*decoys)] if decoys else [np.zeros(0, np.int64)] * 3
    return joined, joined_decoys


def synthetic_rows(seed: int, n: int = 14) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        if k % 5 == 4:
            rows.append(pair_row(rng, int(rng.integers(2, 6)), int(rng.integers(2, 6)), index=k))
            continue
        row = sentence_row(rng, int(rng.integers(2, 12)), index=k)
        # some subtyped relations, as in UD (nmod:poss, obl:tmod)
        row["word_deprel"] = [r + (":sub" if r in ("case", "det") and rng.random() < 0.5 else "") for r in row["word_deprel"]]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def ewt_rows(minilm_dir, data):
    """200 sentences of UD EWT dev with the real minilm word pieces."""
    from headsieve.io.conllu import read_conllu
    from headsieve.models.load import load_tokenizer
    from headsieve.tokens import encode_sentences

    tokenizer = load_tokenizer("minilm", {"source": str(minilm_dir)})
    sentences = read_conllu(data / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu", max_sentences=200)
    rows, _ = encode_sentences(tokenizer, sentences, 128)
    return [dict(r) for r in rows]


def batch_of(rows: list[dict], seed: int = 0, layers: int = 1, heads: int = 2) -> Batch:
    rng = np.random.default_rng(seed)
    arrays = [dirichlet_attention(rng, layers, heads, r["n_pieces"], 0.5) for r in rows]
    return Batch(arrays, [SentenceFacts.from_row(r) for r in rows])


OPTION_GRID = [
    {"direction": d, "subtypes": s, "relations": rel}
    for d in ("dep2head", "head2dep", "both")
    for s in (False, True)
    for rel in ("all", ["det", "nsubj", "case"])
]


def check_pairs(batch: Batch, options: dict) -> None:
    opts = dict(DEFAULT_OPTIONS, **options)
    roles = sorted({name for f in batch.facts for name in sentence_roles(f, opts)})
    (b, r, q, t), (db, dq, dt) = per_input_pairs(batch.facts, roles, opts)
    words = BatchWords.of(batch.facts, batch.piece_counts, opts["subtypes"])
    pairs = syntactic_pairs(words, batch.piece_counts.shape[1], roles, set(opts["union"]), opts["direction"])
    for got, want in zip((pairs.b, pairs.r, pairs.q, pairs.t), (b, r, q, t)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(decoy_pairs(words, len(batch.facts), batch.piece_counts.shape[1], pairs), (db, dq, dt)):
        np.testing.assert_array_equal(got, want)
    assert len(b) > 0 or not roles


@pytest.mark.parametrize("options", OPTION_GRID)
def test_word_pairs_equal_the_per_input_target_matrices(options):
    for seed in range(3):
        check_pairs(batch_of(synthetic_rows(seed)), options)


@pytest.mark.parametrize("direction", ["dep2head", "head2dep", "both"])
def test_word_pairs_equal_the_per_input_target_matrices_on_ewt(ewt_rows, direction):
    for start in range(0, len(ewt_rows), 50):
        check_pairs(batch_of(ewt_rows[start : start + 50]), {"direction": direction})


def reference_syntactic_scores(batch: Batch, roles: list[str], opts: dict):
    """Scores and control scores from the per-input pairs (the code before the batch-wide pairs)."""
    from headsieve.roles.controls import control_values

    (b, r, q, t), decoys = per_input_pairs(batch.facts, roles, opts)
    aggregation, reference, scorer = syntactic_form(batch, opts)
    scores = scorer(batch.word_values(b, q, t, aggregation), b, r, q, t)
    own = batch.word_values(b, q, t, aggregation)
    values, matched = control_values(batch, b, q, t, own, decoys, aggregation, reference)
    control = scorer(values, b, r, q, t)[2]
    any_matched = np.zeros(int(b.max() + 1) * len(roles), dtype=bool)
    np.logical_or.at(any_matched, b * len(roles) + r, matched)
    control = np.where(any_matched[scores[0] * len(roles) + scores[1]][:, None], control, np.nan)
    return scores, control.astype(np.float32)


@pytest.mark.parametrize("form", ["mass", "ratio"])
@pytest.mark.parametrize("direction", ["dep2head", "both"])
def test_scores_from_shared_pairs_equal_per_input_scores_bit_for_bit(ewt_rows, form, direction):
    opts = dict(DEFAULT_OPTIONS, score=form, direction=direction)
    for start in (0, 100):
        batch = batch_of(ewt_rows[start : start + 40] + synthetic_rows(start), seed=start, layers=2, heads=3)
        roles = sorted({name for f in batch.facts for name in sentence_roles(f, opts)})
        (b_s, r_s, scores, nq, nu), control = reference_syntactic_scores(batch, roles, opts)
        got = _syntactic_scores(batch, roles, opts)
        got_b, got_r, got_control = control_scores(batch, roles, opts)
        for x, y in zip(got, (b_s, r_s, scores, nq, nu)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(got_b, b_s)
        np.testing.assert_array_equal(got_r, r_s)
        assert got_control.tobytes() == control.tobytes()
        assert np.isfinite(control).any() and len(b_s) > 40


# ------------------------------------------------------------------ segment sums of rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 3, 12, 144])
def test_reduceat_rows_has_the_bits_of_numpy_reduceat(dtype, width):
    rng = np.random.default_rng(width)
    lengths = np.r_[np.arange(1, 40), [64, 127, 128, 129, 136, 200, 257, 300], rng.integers(1, 12, 200)]
    rng.shuffle(lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    values = (rng.random((int(lengths.sum()), width)) * rng.choice([1e-3, 1.0, 1e3], (int(lengths.sum()), 1)))
    values = values.astype(dtype)
    want = np.add.reduceat(values, starts, axis=0)
    got = reduceat_rows(values, starts)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    # in order, the sums differ in the last bits: the test can tell the orders apart
    in_order = np.stack([values[s : s + n].cumsum(0)[-1] for s, n in zip(starts, lengths)])
    assert in_order.tobytes() != want.tobytes()


# ------------------------------------------------------------------ row entropy in blocks


def test_row_entropy_in_blocks_has_the_bits_of_the_whole_array():
    rows = synthetic_rows(3, n=10)
    batch = batch_of(rows, seed=4, layers=3, heads=4)
    A = batch.A.copy()
    A[0, 1, :, 0] = 0
    A[0, 1, 2, 0] = 1  # a one-hot row: entropy exactly 0
    terms = np.log(np.maximum(A, np.float32(1e-30)))
    terms *= A
    whole = -terms.sum(2)
    for lengths in (batch.lengths, None):
        assert row_entropy(A, lengths).tobytes() == whole.tobytes()
    assert whole[0, 1, 0] == 0


# ------------------------------------------------------------------ tests grouped by one code per row


def reference_moments(scores: pd.DataFrame, group_cols: list[str]) -> pd.DataFrame:
    """role_tests' per-group columns as pandas computes them over the key columns (the code before)."""
    g = scores.groupby(group_cols, sort=True, observed=True)
    out = g["score"].agg(n="count", mean="mean", sd="std").reset_index()
    out["n_left_out"] = g["score"].size().to_numpy() - out["n"].to_numpy()
    out["form"] = g["form"].first().astype(str).to_numpy()
    return out


def score_frame(seed: int, categorical: bool, missing_key: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 4000
    roles = np.array(["local", "dep:det", "syntactic", "block", "cls"])
    frame = pd.DataFrame(
        {
            "model": rng.choice(["m2", "m1"], n),
            "corpus": rng.choice(["ewt", "mrpc", "sst2"], n),
            "sentence_index": np.arange(n, dtype=np.int32),
            "layer": rng.integers(0, 3, n).astype(np.int16),
            "head": rng.integers(0, 4, n).astype(np.int16),
            "role": rng.choice(roles, n),
            "score": (rng.random(n) * 4).astype(np.float32),
            "control": (rng.random(n) * 3).astype(np.float32),
        }
    )
    frame["form"] = np.where(frame["role"] == "block", "block_contrast", "mass")
    frame.loc[rng.random(n) < 0.1, "score"] = np.nan
    frame.loc[~frame["role"].isin(["dep:det", "syntactic"]) | (rng.random(n) < 0.2), "control"] = np.nan
    if categorical:
        for col in ("model", "corpus", "role", "form"):
            frame[col] = frame[col].astype("category")
        frame["role"] = frame["role"].cat.set_categories(sorted(roles) + ["unused"])
    if missing_key:
        frame.loc[rng.random(n) < 0.05, "corpus"] = None
        frame.loc[rng.random(n) < 0.1, "form"] = None  # first() skips missing values
    return frame


@pytest.mark.parametrize("categorical", [True, False])
@pytest.mark.parametrize("missing_key", [False, True])
def test_role_tests_moments_equal_pandas_groupby_over_the_keys(categorical, missing_key):
    frame = score_frame(1, categorical, missing_key)
    keys = ["model", "corpus"]
    tests = role_tests(frame, tau=1.0, alpha=0.05, correction="bh", keys=tuple(keys))
    want = reference_moments(frame, keys + ["layer", "head", "role"])
    pd.testing.assert_frame_equal(tests[list(want.columns)], want, check_exact=True)
    assert len(want) > 100


def reference_control_moments(scores: pd.DataFrame, group_cols: list[str]) -> pd.DataFrame:
    ok = scores["control"].notna() & scores["score"].notna()
    frame = scores.loc[ok, group_cols + ["control"]].copy()
    frame["diff"] = scores.loc[ok, "score"].astype(float) - scores.loc[ok, "control"].astype(float)
    g = frame.groupby(group_cols, sort=True, observed=True)
    out = g["diff"].agg(diff_n="count", diff_mean="mean", diff_sd="std").reset_index()
    out.insert(len(group_cols), "control_mean", g["control"].mean().to_numpy())
    return out


@pytest.mark.parametrize("categorical", [True, False])
def test_control_tests_moments_equal_pandas_groupby_over_the_keys(categorical):
    frame = score_frame(2, categorical)
    group_cols = ["model", "corpus", "layer", "head", "role"]
    got = control_tests(frame, 0.05, "bh")
    want = reference_control_moments(frame, group_cols)
    pd.testing.assert_frame_equal(got[list(want.columns)], want, check_exact=True)
    assert len(want) > 20
    # no control at all (corpora without trees): no row, and no error
    none = frame.assign(control=np.float32(np.nan))
    assert len(control_tests(none, 0.05, "bh")) == 0 == len(reference_control_moments(none, group_cols))


# ------------------------------------------------------------------ the second thread of score_dump


def write_corpus(folder, rows, seed: int = 0, layers: int = 2, heads: int = 3, broken: int | None = None):
    """tokens.parquet + a dump of Dirichlet attention (input ``broken``: a row that does not sum to 1)."""
    from headsieve.io.atomic import write_table
    from headsieve.io.shards import ShardWriter
    from headsieve.tokens import records_table

    rng = np.random.default_rng(seed)
    complete = [
        {
            "text": "synthetic", "text_b": None, "label": None, "words": [f"w{w}" for w in range(len(r["word_token"]))],
            "word_segment": [0] * len(r["word_token"]), "pieces": [f"p{i}" for i in range(r["n_pieces"])],
            "token_type_ids": [0] * r["n_pieces"], "truncated": False, "n_words_lost": 0, "n_relations_lost": 0, **r,
        }  # fmt: skip
        for r in rows
    ]
    write_table(records_table(complete, "m", "c"), folder / "tokens.parquet")
    writer = ShardWriter(folder / "attention", "m", "c", shard_bytes=20_000)
    for k, row in enumerate(rows):
        A = dirichlet_attention(rng, layers, heads, row["n_pieces"], 0.5)
        if k == broken:
            A[0, 0, 0] *= 3
        writer.add(row["sentence_index"], row["sentence_id"], A, row["input_ids"])
    writer.close()


def indexed(rows):
    return [dict(r, sentence_index=k, sentence_id=f"s{k}") for k, r in enumerate(rows)]


def test_score_dump_with_a_second_thread_equals_one_thread(tmp_path):
    """The controls and head statistics on a second thread: the same scores table and head statistics, bit
    for bit, as all on one thread, on trees and pairs, whatever torch's thread count (restored after)."""
    import torch

    from headsieve.roles.score import score_dump

    write_corpus(tmp_path, indexed(synthetic_rows(7, n=60)))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for second in (False, True):
                results.append(
                    score_dump(
                        tmp_path / "tokens.parquet", tmp_path / "attention", "m", "c", progress=False, budget=300,
                        second_thread=second,
                    )
                )  # fmt: skip
                assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    t1, s1 = results[0]
    assert t1.num_rows > 1000 and np.isfinite(t1.column("control").to_numpy()).any()
    for t2, s2 in results[1:]:
        assert t1.schema.equals(t2.schema, check_metadata=True)
        for name in t1.column_names:
            a, b = t1.column(name).to_numpy(zero_copy_only=False), t2.column(name).to_numpy(zero_copy_only=False)
            assert a.tobytes() == b.tobytes() if a.dtype.kind == "f" else (a == b).all(), name
        pd.testing.assert_frame_equal(s1, s2, check_exact=True)


def test_score_dump_with_a_second_thread_fails_with_the_one_line_error(tmp_path):
    from headsieve.errors import HeadsieveError
    from headsieve.roles.score import score_dump

    write_corpus(tmp_path, indexed(synthetic_rows(8, n=40)), broken=30)
    with pytest.raises(HeadsieveError, match="sentence 's30': attention rows do not sum to 1"):
        score_dump(
            tmp_path / "tokens.parquet", tmp_path / "attention", "m", "c", progress=False, budget=300, second_thread=True
        )
