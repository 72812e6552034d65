"""Score a whole attention dump: every sentence, head and role, plus Clark-style head statistics.

Reads the dump shard by shard (memory holds one shard) and the tokens table, checks that they belong
together, and returns tidy tables.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from headsieve.progress import progress_bar

from headsieve.batching import length_batched
from headsieve.errors import HeadsieveError
from headsieve.io.provenance import provenance_metadata, read_file_provenance
from headsieve.io.provenance import check_provenance
from headsieve.io.shards import check_coverage, index_provenance, input_crc, iter_dump, read_index
from headsieve.roles.clark import HeadStats
from headsieve.roles.controls import score_controls
from headsieve.roles.registry import role_family
from headsieve.roles.sieve import DEFAULT_OPTIONS, Batch, SentenceFacts, score_batch

log = logging.getLogger(__name__)

SCORES_SCHEMA = pa.schema(
    [
        ("model", pa.dictionary(pa.int8(), pa.string())),
        ("corpus", pa.dictionary(pa.int8(), pa.string())),
        ("sentence_index", pa.int32()),
        ("layer", pa.int16()),
        ("head", pa.int16()),
        ("role", pa.dictionary(pa.int16(), pa.string())),
        ("family", pa.dictionary(pa.int8(), pa.string())),
        ("score", pa.float32()),
        ("n_queries", pa.int32()),
        ("n_undefined", pa.int32()),
        ("form", pa.dictionary(pa.int8(), pa.string())),
        ("control", pa.float32()),  # syntactic roles: the shape-matched decoy score (roles/controls.py)
    ]
)

TOKEN_COLUMNS = [
    "sentence_index", "sentence_id", "tokens", "word_token", "word_head", "word_deprel", "word_upos",
    "word_kept", "input_ids", "piece_token", "piece_segment", "piece_special", "n_pieces",
]  # fmt: skip


def read_tokens(path) -> dict[int, dict]:
    try:
        rows = pq.read_table(path, columns=TOKEN_COLUMNS).to_pylist()
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read tokens ({str(err).splitlines()[0]})") from None
    return {r["sentence_index"]: r for r in rows}


def _checked(dump_dir, tokens_path, tokens, crcs, stream):
    """Pair each dump sentence with its tokens row; fail when they do not belong together (``crcs``: the
    tokens rows' input CRCs by sentence index)."""
    for row, att in stream:
        tok = tokens.get(row["sentence_index"])
        where = f"{dump_dir}: sentence '{row['sentence_id']}'"
        if tok is None:
            raise HeadsieveError(f"{where} is not in {tokens_path} (dump and tokens do not belong together)")
        if tok["n_pieces"] != row["n_pieces"] or crcs[row["sentence_index"]] != row["input_crc"]:
            raise HeadsieveError(
                f"{where}: its word pieces differ from {tokens_path} (dump made with another tokenizer or corpus)"
            )
        yield row, att, tok


def score_dump(
    tokens_path,
    dump_dir,
    model: str,
    corpus: str,
    options: dict | None = None,
    progress: bool = True,
    budget=1 << 15,
    second_thread: bool | None = None,
):
    """(scores DataFrame, head statistics DataFrame) for a dump and its tokens.

    ``second_thread`` (default: when torch was given 2 threads or more): score each batch, its controls and
    head statistics on a second thread while the next batch is read and checked (the same tables either
    way).  Torch runs on one thread here whatever it was given: its operations are small (per-input copies,
    sums and products of a batch; on a busy machine the waits of a thread team cost several times the
    work), and a product split over more threads may round differently, so the tables do not depend on
    the thread count."""
    opts = dict(DEFAULT_OPTIONS, **(options or {}))
    tokens = read_tokens(tokens_path)
    index = read_index(dump_dir)
    # provenance and coverage: the dump was made for this model and corpus, of every input exactly once
    check_provenance(index_provenance(index), {"model": model, "corpus": corpus}, str(dump_dir), "rerun the dump")
    crcs = {i: input_crc(t["input_ids"]) for i, t in tokens.items()}
    check_coverage(index, crcs, dump_dir, tokens_path)
    L, H = int(index.column("n_layers")[0].as_py()), int(index.column("n_heads")[0].as_py())
    stats = HeadStats(L, H)
    keys: list[tuple[int, str]] = []  # (sentence_index, role) of each score vector
    vectors: list[np.ndarray] = []  # [L*H] scores
    n_queries: list[int] = []
    n_undefined: list[int] = []
    forms: list[str] = []
    controls: list[np.ndarray] = []  # [L*H] decoy scores of the syntactic roles, NaN for the others

    def collect(sentences, scored):
        rows, decoys = scored.result()
        for b, role, scores, nq, nu, form in rows:
            controls.append(decoys.get((b, role), np.full(len(scores), np.nan, dtype=np.float32)))
            keys.append((sentences[b], role))
            vectors.append(scores)
            n_queries.append(nq)
            n_undefined.append(nu)
            forms.append(form)

    bar = progress_bar(total=index.num_rows, desc="roles", unit="sent", enabled=progress)
    stream = _checked(dump_dir, tokens_path, tokens, crcs, iter_dump(dump_dir, check=False))
    pending: deque = deque()  # batches read, whose scores may still be being computed
    parallel = torch.get_num_threads() > 1 if second_thread is None else second_thread
    with _torch_threads(1), _second_thread(parallel) as worker:
        for batch in length_batched(stream, key=lambda item: item[0]["n_pieces"], budget=budget):
            facts = [SentenceFacts.from_row(tok) for _, _, tok in batch]
            view = Batch([att for _, att, _ in batch], facts)
            view.check([f"{dump_dir}: sentence '{row['sentence_id']}'" for row, _, _ in batch])
            _ahead(view)
            scored = worker.submit(_score_and_stats, view, opts, stats, [tok for _, _, tok in batch])
            pending.append(([row["sentence_index"] for row, _, _ in batch], scored))
            while len(pending) > 1:  # at most two batches in memory
                collect(*pending.popleft())
            bar.update(len(batch))
        while pending:
            collect(*pending.popleft())
    bar.close()
    if not vectors:
        raise HeadsieveError(f"{dump_dir}: no role could be scored (empty dump?)")
    if opts["relations"] != "all":
        found = {role[4:] for _, role in keys if role.startswith("dep:")}
        missing = [r for r in opts["relations"] if r not in found]
        if missing:
            raise HeadsieveError(
                f"{tokens_path}: no sentence has the relation(s) {', '.join(missing)} "
                "(config key roles.relations; check the spelling or the corpus)"
            )
    table = _scores_table(keys, vectors, n_queries, n_undefined, forms, L, H, model, corpus, controls)
    record = scores_provenance(model, corpus, opts, tokens_path, index, len(tokens))
    return table.replace_schema_metadata(provenance_metadata(record)), stats.frame(model, corpus)


def _score_and_stats(view: Batch, opts: dict, stats: HeadStats, rows: list[dict]):
    """A batch's role scores (as ``score_batch`` gives them) and the syntactic roles' control scores, and the
    batch added to the head statistics (in batch order): (score rows, control scores)."""
    scored = score_batch(view, opts, detail=True)
    decoys = score_controls(view, opts)
    stats.add_batch(view, rows)
    return scored, decoys


def _ahead(view: Batch) -> None:
    """Compute on the reading thread the sums over the attention and numpy's one BLAS product (the words'
    uniform references): numpy's BLAS keeps its own thread count, and can round a product differently
    when called from another thread."""
    view.received
    if any(f.heads is not None for f in view.facts):
        view.word_abar


@contextmanager
def _second_thread(parallel: bool):
    """An executor of one worker thread when ``parallel``, else one that runs each call at once.  The worker
    scores a batch, its controls and head statistics (numpy releases the GIL; torch on one thread there
    too, as a new thread starts with the default thread count) while this thread reads and checks the next
    batch.  Same results either way: every batch is computed by the same code with the same thread counts,
    and the head statistics are added in batch order (tests/unit/roles/test_roles_fast_paths.py compares
    both paths on trees and pairs)."""
    if not parallel:
        yield _Inline()
        return
    with ThreadPoolExecutor(1, "roles", initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield pool


@contextmanager
def _torch_threads(threads: int):
    """Torch on ``threads`` threads inside the block (restored after)."""
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


class _Inline:
    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as err:  # raised again by result(), as from the worker thread
            done.set_exception(err)
        return done


def scores_provenance(model: str, corpus: str, options: dict, tokens_path, index, n_inputs: int) -> dict:
    """What a scores table was made from: model, corpus, the scoring options, the tokens file's sha256 and the
    dump's inputs fingerprint (which inputs, with which word pieces)."""
    from headsieve.tokens import file_sha256

    dump = index_provenance(index)
    return {
        "model": model, "corpus": corpus, "options": options, "tokens_sha256": file_sha256(tokens_path),
        "inputs_fingerprint": dump.get("inputs_fingerprint"), "n_inputs": n_inputs,
    }  # fmt: skip


def read_scores_provenance(path) -> dict:
    """The provenance record of a scores table ({} for one made without it)."""
    return read_file_provenance(path, "scores", "rerun the score_roles step")


def _dictionary(values: list[str], order: np.ndarray, repeats: int) -> pa.DictionaryArray:
    """``values`` (one per key) in ``order``, each repeated ``repeats`` times, as a dictionary array over
    their sorted distinct values (coded per key, then repeated: no string array of the table's length)."""
    names = sorted(set(values)) if repeats else []
    code = {name: k for k, name in enumerate(names)}
    codes = np.array([code[v] for v in values], dtype=np.int8)
    return pa.DictionaryArray.from_arrays(pa.array(np.repeat(codes[order], repeats)), pa.array(names, pa.string()))


def _scores_table(keys, vectors, n_queries, n_undefined, forms, L, H, model, corpus, controls) -> pa.Table:
    """Long table, one row per sentence, role, layer and head, sorted in that order.

    ``score`` is NaN (``n_queries`` 0) for an input with the role's targets none of whose queries could be
    scored; ``n_undefined`` counts the queries left out; ``form`` names the score form (mass, ratio,
    block_contrast, block_plain, block_entropy), which sets the test's default threshold; ``control`` is the
    syntactic roles' decoy score (NaN for the other roles, or without a decoy of any arc's shape)."""
    roles = sorted({role for _, role in keys})
    code = {r: k for k, r in enumerate(roles)}
    sentence = np.array([s for s, _ in keys], dtype=np.int32)
    role_code = np.array([code[r] for _, r in keys], dtype=np.int16)
    order = np.lexsort((role_code, sentence))  # by sentence, then role (names sort as their codes)
    lh = L * H
    k = len(order)
    families = [role_family(r) for r in roles]
    family_names = sorted(set(families))
    family_code = np.array([family_names.index(f) for f in families], dtype=np.int8)

    def repeat(values):
        return np.repeat(np.asarray(values)[order], lh)

    def constant(value):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(k * lh, dtype=np.int8)), pa.array([value]))

    columns = {
        "model": constant(model),
        "corpus": constant(corpus),
        "sentence_index": pa.array(repeat(sentence)),
        "layer": pa.array(np.tile(np.repeat(np.arange(L, dtype=np.int16), H), k)),
        "head": pa.array(np.tile(np.tile(np.arange(H, dtype=np.int16), L), k)),
        "role": pa.DictionaryArray.from_arrays(pa.array(repeat(role_code)), pa.array(roles)),
        "family": pa.DictionaryArray.from_arrays(
            pa.array(family_code[repeat(role_code)]), pa.array(family_names)
        ),
        "score": pa.array(np.stack(vectors)[order].astype(np.float32).ravel()),
        "n_queries": pa.array(repeat(np.array(n_queries, dtype=np.int32))),
        "n_undefined": pa.array(repeat(np.array(n_undefined, dtype=np.int32))),
        "form": _dictionary(forms, order, lh),
        "control": pa.array(np.stack(controls)[order].astype(np.float32).ravel()),
    }
    return pa.Table.from_pydict(columns, schema=SCORES_SCHEMA)
