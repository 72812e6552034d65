"""Attention dumps: equal to a fresh forward pass, unpadded, sharded, indexed, deterministic, checked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from headsieve.attention import dump_attention
from headsieve.batching import length_batches
from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_conllu
from headsieve.io.shards import ShardWriter, input_crc, iter_dump, read_index
from headsieve.models.load import load_encoder
from headsieve.tokens import encode_sentences


@pytest.fixture(scope="module")
def rows(data, bert_tokenizer):
    sents = read_conllu(data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu", max_sentences=40)
    recs, _ = encode_sentences(bert_tokenizer, sents, 64)
    return recs


@pytest.fixture(scope="module")
def model(tiny_bert):
    return load_encoder("tiny", {"source": str(tiny_bert)})


def test_length_batches_cover_everything_once_and_respect_budget():
    lengths = [5, 30, 7, 30, 12, 3, 3, 64, 1]
    batches = length_batches(lengths, batch_tokens=64)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 64 or len(b) == 1
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)


def test_dump_equals_fresh_forward_pass(tmp_path, rows, model):
    dump_attention(model, rows, tmp_path / "d", "tiny", "ewt", batch_tokens=512, progress=False)
    seen = 0
    by_index = {r["sentence_index"]: r for r in rows}
    for row, att in iter_dump(tmp_path / "d"):
        rec = by_index[row["sentence_index"]]
        T = rec["n_pieces"]
        assert att.shape == (3, 4, T, T) and att.dtype == np.float16
        with torch.inference_mode():
            out = model(
                input_ids=torch.tensor([rec["input_ids"]]),
                token_type_ids=torch.tensor([rec["token_type_ids"]]),
                output_attentions=True,
            )
        fresh = torch.stack(out.attentions, 1)[0].numpy()
        np.testing.assert_allclose(att.astype(np.float32), fresh, atol=1e-3, rtol=2e-3)
        np.testing.assert_allclose(att.astype(np.float32).sum(-1), 1.0, atol=5e-3)
        assert row["input_crc"] == input_crc(rec["input_ids"])
        seen += 1
    assert seen == len(rows)


def test_shards_index_and_determinism(tmp_path, rows, model):
    a = dump_attention(model, rows, tmp_path / "a", "tiny", "ewt", batch_tokens=256, shard_bytes=200_000, progress=False)
    b = dump_attention(model, rows, tmp_path / "b", "tiny", "ewt", batch_tokens=2048, shard_bytes=200_000, progress=False)
    shards = sorted(p.name for p in (tmp_path / "a").glob("shard-*.npz"))
    assert len(shards) > 2
    for name in shards + ["index.parquet"]:  # batch size does not change a byte
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    index = read_index(tmp_path / "a").to_pandas()
    assert sorted(index.sentence_index) == [r["sentence_index"] for r in rows]
    assert set(index.columns) >= {"model", "corpus", "sentence_id", "shard", "offset", "n_pieces", "n_layers", "n_heads"}
    # offsets within a shard are contiguous: each sentence starts where the previous one ended
    for shard, group in index.groupby("shard"):
        sizes = group.n_layers * group.n_heads * group.n_pieces**2
        assert list(group.offset) == list(np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        stored = np.load(tmp_path / "a" / shard)["attention"].size
        assert stored == sizes.sum()  # unpadded: nothing stored beyond the sentences themselves
    assert a.num_rows == b.num_rows == len(rows)


def test_shard_writer_accepts_foreign_attention(tmp_path):
    """Attention made by another tool, written with ShardWriter, reads back identically."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp_path / "x", "other", "c", shard_bytes=1000)
    made = {}
    for i, T in enumerate([3, 9, 4]):
        att = rng.dirichlet(np.ones(T), size=(2, 5, T)).astype(np.float16)
        writer.add(i, f"s{i}", att, list(range(T)))
        made[i] = att
    writer.close()
    got = {row["sentence_index"]: att for row, att in iter_dump(tmp_path / "x")}
    assert all(np.array_equal(got[i], made[i]) for i in made)


@pytest.mark.parametrize("poison, message", [(np.nan, "NaN"), (0.9, "do not sum to 1")])
def test_bad_attention_is_rejected(tmp_path, poison, message):
    att = np.full((1, 2, 4, 4), 0.25, dtype=np.float16)
    att[0, 1, 2, 3] = poison
    writer = ShardWriter(tmp_path / "bad", "m", "c")
    writer.add(0, "s0", att, [1, 2, 3, 4])
    writer.close()
    with pytest.raises(HeadsieveError, match=f"sentence 's0': attention .*{message}"):
        list(iter_dump(tmp_path / "bad"))


def test_missing_shard_and_missing_index(tmp_path, rows, model):
    dump_attention(model, rows[:3], tmp_path / "d", "tiny", "ewt", progress=False)
    (tmp_path / "d" / "shard-00000.npz").unlink()
    with pytest.raises(HeadsieveError, match="shard named in the index is missing"):
        list(iter_dump(tmp_path / "d"))
    with pytest.raises(HeadsieveError, match="no dump index"):
        read_index(tmp_path / "nothing")


def test_index_parquet_columns_are_explicit(tmp_path, rows, model):
    dump_attention(model, rows[:2], tmp_path / "d", "tiny", "ewt", progress=False)
    schema = pq.read_schema(tmp_path / "d" / "index.parquet")
    assert schema.field("n_pieces").type == "int32"
    assert schema.metadata[b"headsieve_dump_format"] == b"1"


# ---------------------------------------------------------------- issue 18: index structure and coverage


def small_dump(folder, n=3, seed=0):
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, "m", "c", shard_bytes=10_000)
    for k in range(n):
        writer.add(k, f"s{k}", rng.dirichlet(np.ones(4), size=(1, 2, 4)).astype(np.float16), [k, 1, 2, 3])
    writer.close()
    return folder


def rewrite_index(folder, edit):
    table = pq.read_table(folder / "index.parquet")
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / "index.parquet")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows.__setitem__(1, dict(rows[1], offset=rows[0]["offset"] + 4)), "sentences 's0' and 's1' overlap in shard-00000.npz"),
        (lambda rows: rows.__setitem__(2, dict(rows[2], sentence_index=0)), "sentence_index 0 is listed twice (rows 1 and 3)"),
        (lambda rows: rows.__setitem__(2, dict(rows[2], n_heads=3)), "sentences with different numbers of layers or heads"),
        (lambda rows: rows.__setitem__(0, dict(rows[0], shard="/tmp/x.npz")), "shard '/tmp/x.npz' is not a plain .npz file name"),
        (lambda rows: rows.pop(), "2 sentences listed, but the dump was written with 3"),
    ],
)
def test_index_structure_is_checked(tmp_path, edit, message):
    folder = small_dump(tmp_path / "d")
    rewrite_index(folder, edit)
    with pytest.raises(HeadsieveError) as err:
        read_index(folder)
    assert message in str(err.value)


def test_coverage_both_ways(tmp_path):
    from headsieve.io.shards import check_coverage

    folder = small_dump(tmp_path / "d")
    index = read_index(folder)
    expected = {k: input_crc([k, 1, 2, 3]) for k in range(3)}
    check_coverage(index, expected, folder, "tokens.parquet")  # exactly the inputs: passes
    with pytest.raises(HeadsieveError, match=r"1 of the 4 inputs of tokens.parquet are not in the dump \(first: sentence_index 3\)"):
        check_coverage(index, {**expected, 3: 7}, folder, "tokens.parquet")
    with pytest.raises(HeadsieveError, match=r"1 sentences are not in tokens.parquet \(first: sentence_index 2\)"):
        check_coverage(index, {0: expected[0], 1: expected[1]}, folder, "tokens.parquet")
    with pytest.raises(HeadsieveError, match="made from other token ids than those in tokens.parquet"):
        check_coverage(index, {**expected, 2: 12345}, folder, "tokens.parquet")
