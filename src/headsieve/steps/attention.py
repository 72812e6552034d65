"""Steps of ``workflow/rules/attention.smk``: word pieces of a corpus, and the attention dump of a model."""

from __future__ import annotations

import logging
import os
import time

from headsieve.errors import HeadsieveError
from headsieve.steps.settings import Corpus, DumpSettings, Model

log = logging.getLogger(__name__)


def check_finetuned(model: Model) -> None:
    """A fine-tuned model (a ``<model>--<task>`` key: its spec points at ``.../finetuned/model`` and names in
    ``finetuned`` the pre-trained model and seed it must come from) is the one its ``metrics.json`` records;
    one line naming that file, the field and the rule to rerun when not."""
    from pathlib import Path

    from headsieve.io.provenance import expect_provenance

    expected = model.spec.get("finetuned")
    if expected:
        expect_provenance(Path(model.spec["source"]).parent, expected, "finetune")


def tokenize(model: Model, corpus: Corpus, max_length: int, output) -> None:
    """Rule ``tokenize``: corpus -> ``tokens.parquet`` (word pieces of the model's tokenizer aligned to words;
    duplicate inputs and pairs longer than ``max_length`` pieces dropped, both recorded)."""
    from headsieve.io.atomic import write_table
    from headsieve.models.load import check_positions, load_model_config, load_tokenizer
    from headsieve.tokens import drop_duplicates, encode_examples, encode_sentences, file_sha256, records_table

    spec = corpus.spec
    check_finetuned(model)
    tokenizer = load_tokenizer(model.key, model.spec)
    check_positions(model.key, load_model_config(model.key, model.spec), max_length)
    limit = spec.get("max_sentences")
    if spec["format"] == "conllu":
        from headsieve.io.conllu import read_conllu

        sentences = read_conllu(corpus.files, limit)
        log.info("read %d sentences from %s", len(sentences), corpus.files)
        sentences, duplicates = drop_duplicates(sentences, lambda s: tuple(s.tokens), lambda s: s.sent_id)
        records, stats = encode_sentences(tokenizer, sentences, max_length)
    else:
        from headsieve.io.glue import read_glue, task_spec

        task = "xnli" if spec["format"] == "xnli" else spec["task"]
        custom = spec if task == "custom" else None
        examples = read_glue(corpus.files, task_spec(task, custom), spec.get("header"), spec.get("language"), limit)
        log.info("read %d examples (%s) from %s", len(examples), task, corpus.files)
        examples, duplicates = drop_duplicates(examples, lambda e: (e.text_a, e.text_b), lambda e: e.example_id)
        records, stats = encode_examples(tokenizer, examples, max_length)
    stats.duplicates = len(duplicates)
    if duplicates:
        log.warning(
            "%d duplicate inputs dropped (the same text as an earlier input; the first copy is kept): %s",
            len(duplicates), ", ".join(f"{d} (= {f})" for d, f in duplicates[:20]),
        )  # fmt: skip
    log.info("tokenized: %s", stats.summary())
    if stats.dropped_ids:
        log.info("pairs dropped (longer than %d pieces): %s", max_length, ", ".join(stats.dropped_ids[:50]))
    provenance = {
        "max_length": max_length,
        "corpus_spec": spec,
        "model_source": str(model.spec.get("source", model.key)),
        "inputs": [os.path.basename(str(p)) for p in corpus.files],
        "input_sha256": file_sha256(corpus.files),
        "duplicates_dropped": len(duplicates),
        "pairs_dropped": stats.pairs_dropped,
    }
    write_table(records_table(records, model.key, corpus.key, provenance), output)


def read_token_rows(path) -> list[dict]:
    """The rows of a ``tokens.parquet`` the dump needs, as dicts; one-line error when unreadable."""
    import pyarrow.parquet as pq

    columns = ["model", "corpus", "sentence_index", "sentence_id", "input_ids", "token_type_ids", "n_pieces"]
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read tokens ({str(err).splitlines()[0]})") from None
    return table.to_pylist()


def check_tokens(rows: list[dict], tokens, model: str, corpus: str, max_length: int | None) -> dict:
    """Tokens made for another model or corpus, at another max_length, or longer than ``max_length``: refused.
    Returns the provenance recorded in ``tokens``."""
    from headsieve.io.provenance import check_provenance
    from headsieve.tokens import read_provenance

    if not rows:
        raise HeadsieveError(f"{tokens}: no sentences (empty corpus)")
    made_for = {r["model"] for r in rows}
    if made_for != {model}:
        raise HeadsieveError(f"{tokens}: tokens were made with the tokenizer of model {sorted(made_for)}, not '{model}'")
    made_of = {r["corpus"] for r in rows}
    if made_of != {corpus}:
        raise HeadsieveError(f"{tokens}: tokens were made of corpus {sorted(made_of)}, not '{corpus}'")
    provenance = read_provenance(tokens)
    fix = "rerun the tokenize step (rule tokenize) for this model and corpus"
    check_provenance(provenance, {"model": model, "corpus": corpus}, str(tokens), fix)
    check_provenance(provenance, {"max_length": max_length}, str(tokens), fix)
    longest = max(r["n_pieces"] for r in rows)
    if max_length is not None and longest > max_length:
        raise HeadsieveError(f"{tokens}: an input has {longest} pieces, more than --max-length {max_length}; {fix}")
    return provenance


def dump(model: Model, corpus: str, tokens, output, settings: DumpSettings = DumpSettings(), device: str = "cpu") -> None:
    """Rule ``dump``: ``tokens.parquet`` -> attention dump folder (float16 shards + index) of ``model`` on
    ``device``; the folder appears whole or not at all."""
    from headsieve.attention import dump_attention
    from headsieve.io.atomic import atomic_dir
    from headsieve.models.load import check_positions, load_encoder, load_model_config, model_shape
    from headsieve.tokens import file_sha256

    check_finetuned(model)
    rows = read_token_rows(tokens)
    provenance = check_tokens(rows, tokens, model.key, corpus, settings.max_length)
    longest = max(r["n_pieces"] for r in rows)
    check_positions(model.key, load_model_config(model.key, model.spec), provenance.get("max_length", longest))
    encoder = load_encoder(model.key, model.spec, device=device)
    vocab = encoder.config.vocab_size
    top = max(max(r["input_ids"]) for r in rows)
    if top >= vocab:
        raise HeadsieveError(
            f"{tokens}: token id {top} is outside model '{model.key}' vocabulary ({vocab}); "
            "tokens were made with another tokenizer"
        )
    L, H = model_shape(encoder)
    log.info("dumping %d sentences, %d layers x %d heads, device %s", len(rows), L, H, device)
    start = time.perf_counter()
    made_from = {
        "max_length": provenance.get("max_length"),
        "tokens_sha256": file_sha256(tokens),
        "corpus_sha256": provenance.get("input_sha256"),
    }
    with atomic_dir(output) as tmp:
        dump_attention(
            encoder, rows, tmp, model.key, corpus, settings.batch_tokens, settings.shard_mb << 20, device,
            provenance=made_from,
        )  # fmt: skip
    took = time.perf_counter() - start
    log.info("dumped %d sentences in %.1f s (%.1f sentences/s)", len(rows), took, len(rows) / max(took, 1e-9))
