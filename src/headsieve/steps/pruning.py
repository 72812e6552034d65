"""Steps of ``workflow/rules/pruning.smk`` (one function per rule): fine-tuning, importance, masks, their
evaluation with and without retraining, compensation and the report.

Each step loads what it needs, calls the science (fine-tuning, importance, strategies, the mask evaluator,
compensation) and writes its outputs atomically.  The evaluation split is only ever scored: importance, early
stopping and the compensation inputs come from the training split.

Two protocols (:data:`headsieve.pruning.evaluations.PROTOCOLS`), both scored on the evaluation split with the
same masks:

* ``finetune_then_prune`` (Michel et al. 2019): the heads a strategy picks are masked in the fine-tuned
  model, which is scored without further training (:func:`evaluate_masks`);
* ``prune_then_finetune`` (the seed study): the same heads are physically removed from the *pre-trained*
  model, which is then fine-tuned on the task with exactly the recipe, seed, classifier initialisation and
  data order of the unpruned fine-tuning (:func:`finetune`), and scored (:func:`prune_finetune`).
  The removed heads cannot come back during training.  With no head removed it reproduces the unpruned
  fine-tuning bit for bit, so the unpruned model is the fraction-0 point of both protocols.

Masks are selected once per seed and fraction (:func:`select_masks`) from the fine-tuned model of that seed:
``importance`` under ``prune_then_finetune`` therefore ranks heads by the importance they have in the
unpruned model fine-tuned with the same seed (the pre-trained model has no task loss to differentiate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from headsieve.steps.settings import ComparisonSettings, Model, TaskSettings

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ provenance
# Every artifact of these rules records what it was made from (a ``provenance`` key in a JSON file, the
# ``headsieve_provenance`` schema metadata of a Parquet table, io.provenance), and every reader checks it
# against its own inputs and settings: the fine-tuned folder (model, task, corpora and their sha256, seed,
# fine-tuning options), and each later artifact the record hash (``finetuned``) of the fine-tuning it comes
# from, its seed and the sha256 of the tables it read.


def finetuned_record(model: Model, task: TaskSettings, options: dict, seed: int) -> dict:
    """What a fine-tuned model folder was made from (its ``metrics.json`` ``provenance``)."""
    from headsieve.io.provenance import canonical
    from headsieve.tokens import file_sha256

    return canonical({
        "rule": "finetune", "model": model.key, "model_source": str(model.spec.get("source", model.key)),
        "model_spec": model.spec, "task": task.options, "max_length": task.max_length, "seed": int(seed),
        "train_corpus": task.train_spec, "train_sha256": file_sha256(task.train) if task.train else None,
        "eval_corpus": task.eval_spec, "eval_sha256": file_sha256(task.eval) if task.eval else None,
        "finetune": options,
    })  # fmt: skip


def check_finetuned(folder, *, model: Model | None = None, task: TaskSettings | None = None, train: bool = False,
                    evaluation: bool = False, seed=None, options: dict | None = None) -> tuple[dict, str]:  # fmt: skip
    """The provenance record of a fine-tuned folder and its hash, after checking it against what the reader
    was given: ``model``, the ``task``'s max_length and (``train`` / ``evaluation``) the sha256 of that
    split's files, ``seed`` and the fine-tuning ``options``."""
    from headsieve.io.provenance import expect_provenance, record_sha256
    from headsieve.tokens import file_sha256

    expected = {"seed": None if seed is None else int(seed), "finetune": options}
    if model is not None:
        expected.update(model=model.key, model_spec=model.spec)
    if task is not None:
        expected["max_length"] = task.max_length
        if train:
            expected["train_sha256"] = file_sha256(task.train)
        if evaluation:
            expected["eval_sha256"] = file_sha256(task.eval)
    record = expect_provenance(folder, expected, "finetune")
    return record, record_sha256(record)


def write_made_from(frame, output, record: dict) -> None:
    """``frame`` as Parquet with ``record`` as its provenance."""
    from headsieve.io.atomic import write_frame
    from headsieve.io.provenance import canonical, provenance_metadata

    write_frame(frame, output, metadata=provenance_metadata(canonical(record)))


# ------------------------------------------------------------------------------------------ fine-tuning


def pretrained_classifier(model: Model, n_labels: int, seed: int, heads, device):
    """The pre-trained ``model`` as a classifier whose head is initialised from ``seed``, with ``heads``
    (encoder (layer, head) pairs) removed.

    The start of every fine-tuning: the unpruned one (no heads) and each of prune_then_finetune.
    """
    from headsieve.models import heads as H
    from headsieve.models.load import load_encoder
    from headsieve.tasks.finetune import set_seed

    set_seed(seed)
    classifier = load_encoder(model.key, model.spec, task_labels=n_labels, device=device)
    if heads:
        H.prune_heads(classifier, heads)
    return classifier


def finetune(model: Model, task: TaskSettings, options: dict, seed: int, output, work, device: str = "cpu") -> dict:
    """Rule ``finetune``: the pre-trained ``model`` fine-tuned on the task's training split with the fine-tuning
    ``options``, evaluated on its evaluation split -> ``output/`` (model/ and metrics.json); checkpoints in
    ``work`` (a killed run started again resumes there)."""
    from headsieve.io.atomic import atomic_dir, write_json
    from headsieve.models.load import load_tokenizer
    from headsieve.tasks.finetune import FinetuneConfig, evaluate, finetune as train_model

    tokenizer = load_tokenizer(model.key, model.spec)
    train, test = task.read_train(tokenizer), task.read_eval(tokenizer)
    classifier = pretrained_classifier(model, train.n_labels, seed, [], device)
    config = FinetuneConfig.from_dict(dict(options, seed=seed))
    train_metrics = train_model(classifier, train, config, work, tokenizer=tokenizer, device=device)
    metrics = {"train": train_metrics, "eval": evaluate(classifier, test, config.eval_batch_size, device)}
    metrics["provenance"] = finetuned_record(model, task, options, seed)
    log.info("eval split: %s", metrics["eval"])
    with atomic_dir(output) as tmp:
        shutil.copytree(Path(work) / "model", tmp / "model")
        write_json(metrics, tmp / "metrics.json")
    shutil.rmtree(work, ignore_errors=True)
    return metrics


# ------------------------------------------------------------------------------------------ importance


def importance(finetuned, task: TaskSettings, examples: int, seed: int, output, batch_size: int = 16, device: str = "cpu"):
    """Rule ``importance``: head importance (Michel et al.) of a fine-tuned model on a seeded sample of
    ``examples`` training examples -> (layer, head, importance, seed)."""
    import numpy as np
    import pandas as pd

    from headsieve import batching as B
    from headsieve.models.runtime import batch_options
    from headsieve.pruning.importance import head_importance
    from headsieve.tasks.finetune import load_finetuned

    made, made_hash = check_finetuned(finetuned, task=task, train=True, seed=seed)
    model, tokenizer = load_finetuned(finetuned, device)
    train = task.read_train(tokenizer)
    pick = np.random.default_rng([seed, 31337]).permutation(len(train.examples))[:examples]
    pad, types = batch_options(model)
    batches = list(B.iter_batches(train.examples, batch_size, pad, types, order=np.sort(pick)))
    scores = head_importance(model, batches, device=device)
    L, Hh = scores.shape
    layer, head = np.meshgrid(np.arange(L), np.arange(Hh), indexing="ij")
    frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "importance": scores.ravel(), "seed": seed})
    record = {"rule": "importance", "model": made["model"], "seed": int(seed), "finetuned": made_hash,
              "max_length": task.max_length, "train_sha256": made["train_sha256"], "examples": int(examples)}  # fmt: skip
    write_made_from(frame.astype({"layer": "int16", "head": "int16", "seed": "int32"}), output, record)


# ------------------------------------------------------------------------------------------ masks


def select_masks(finetuned, strategies: list, fraction, seed: int, output, labels="", importance=""):
    """Rule ``select_masks``: the heads each strategy prunes at ``fraction`` (a share of the heads; ``"fixed"``
    or None for the fixed-size strategies) for one seed (:func:`headsieve.pruning.masks.mask_table`: strategy,
    fraction, seed, kind, layer, head); ``labels`` (role tests) and ``importance`` tables for the strategies
    that need them."""
    import pandas as pd

    from headsieve.io.provenance import expect_provenance
    from headsieve.models.headspace import HeadSpace
    from headsieve.models.heads import head_space, load_pruned
    from headsieve.pruning.masks import mask_table, read_importance
    from headsieve.tokens import file_sha256

    made, made_hash = check_finetuned(finetuned, seed=seed)
    space = HeadSpace.encoder(*head_space(load_pruned(str(Path(finetuned) / "model"))).shape("encoder"))
    fractions = [] if fraction in ("fixed", None) else [float(fraction)]
    if labels:  # the role tests of the pre-trained model that was fine-tuned
        expect_provenance(labels, {"model": made["model"]}, "test_roles")
    table = pd.read_parquet(labels) if labels else None
    if importance:
        expect_provenance(importance, {"finetuned": made_hash, "seed": int(seed)}, "importance")
    scores = read_importance(importance, space) if importance else None
    frame = mask_table(space, strategies, fractions, seed, labels=table, importance=scores)
    record = {"rule": "select_masks", "model": made["model"], "seed": int(seed), "finetuned": made_hash,
              "fraction": None if fraction in ("fixed", None) else float(fraction), "strategies": list(strategies),
              "labels_sha256": file_sha256(labels) if labels else None,
              "importance_sha256": file_sha256(importance) if importance else None}  # fmt: skip
    write_made_from(frame, output, record)
    return frame


def evaluate_masks(finetuned, masks, task: TaskSettings, output, batch_size: int = 64, device: str = "cpu"):
    """Rule ``evaluate_masks``: every mask of one seed on the evaluation split, without retraining, in one
    process (each distinct mask scored once)."""
    import pandas as pd

    from headsieve.io.provenance import expect_provenance
    from headsieve.models import heads as H
    from headsieve.models.masking import mask_from_heads, mask_key
    from headsieve.pruning.evaluate import MaskEvaluator
    from headsieve.pruning.evaluations import FINETUNE_THEN_PRUNE, metric_rows
    from headsieve.pruning.masks import heads_of
    from headsieve.tasks.finetune import load_finetuned
    from headsieve.tokens import file_sha256

    made, made_hash = check_finetuned(finetuned, task=task, evaluation=True)
    mask_record = expect_provenance(masks, {"finetuned": made_hash, "seed": made["seed"]}, "select_masks")
    model, tokenizer = load_finetuned(finetuned, device)
    test = task.read_eval(tokenizer)
    table = pd.read_parquet(masks)
    space = H.head_space(model)
    named = {}
    for (strategy, fraction), _ in table.groupby(["strategy", "fraction"], sort=True):
        named[(strategy, float(fraction))] = mask_from_heads(space, heads_of(table, strategy, fraction))
    seed = int(table["seed"].iloc[0])
    unique = {mask_key(mask): mask for mask in named.values()}  # e.g. every strategy at fraction 0
    log.info("evaluating %d masks (%d distinct) on %d examples", len(named), len(unique), len(test.examples))
    with MaskEvaluator(model, test, batch_size, device=device) as evaluator:
        found = dict(zip(unique, evaluator.evaluate_many(unique)))
    rows = []
    for (strategy, fraction), mask in named.items():
        result = {k: v for k, v in found[mask_key(mask)].items() if k != "mask"}
        rows += metric_rows(result, test, strategy, fraction, seed, FINETUNE_THEN_PRUNE)
    record = evaluation_record(made, made_hash, mask_record, masks, FINETUNE_THEN_PRUNE, sorted({s for s, _ in named}))
    record.update(rule="evaluate_masks", eval_sha256=file_sha256(task.eval), max_length=task.max_length)
    write_made_from(pd.DataFrame(rows), output, record)


def evaluation_record(made: dict, made_hash: str, mask_record: dict, masks, protocol: str, strategies: list) -> dict:
    """What an evaluation table of one seed and mask group was made from: the fine-tuning, the masks (their
    sha256, seed, fraction) and the strategies it scores (the collected table checks its cells)."""
    from headsieve.tokens import file_sha256

    return {"model": made["model"], "task": made["task"], "seed": mask_record["seed"], "finetuned": made_hash,
            "protocol": protocol, "fraction": mask_record.get("fraction"), "masks_sha256": file_sha256(masks),
            "strategies": list(strategies)}  # fmt: skip


# ------------------------------------------------------------------------------------------ prune, then fine-tune


def heads_key(heads) -> str:
    """A short name of a head set (the folder of its fine-tuning in a job's work folder)."""
    text = json.dumps(sorted([int(l), int(h)] for l, h in heads), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def strategy_folder(strategy: str) -> str:
    """A strategy name as a folder name (``prune_role:syntactic`` -> ``prune_role+syntactic``)."""
    return strategy.replace(":", "+")


def reset_stale_work(work: Path, params: dict) -> None:
    """Keep ``work`` for a resume only if it was started with the same parameters; else start it afresh."""
    record = work / "job.json"
    text = json.dumps(params, sort_keys=True)
    if work.exists() and (not record.is_file() or record.read_text(encoding="utf-8") != text):
        log.info("%s was started with other settings: starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        record.write_text(text, encoding="utf-8")


def head_groups(masks) -> dict:
    """The masks of a masks table by head set: {:func:`heads_key`: (heads, [(strategy, fraction)])}; strategies
    that pick the same heads share one entry."""
    from headsieve.pruning.masks import heads_of

    groups = {}
    for (strategy, fraction), _ in masks.groupby(["strategy", "fraction"], sort=True):
        heads = [(l, h) for _, l, h in heads_of(masks, strategy, fraction)]  # an encoder's (layer, head)
        groups.setdefault(heads_key(heads), (heads, []))[1].append((strategy, float(fraction)))
    return groups


def prune_finetune(
    model: Model, finetuned, masks, task: TaskSettings, options: dict, seed: int, output, work, *,
    keep_models: list = (), skip: list = (), device: str = "cpu", progress: bool = True,
):  # fmt: skip
    """Rule ``prune_finetune``: the seed study's protocol for every mask of one seed and fraction (one job, one
    mask group).

    For each distinct head set of the masks table: load the pre-trained model as a classifier with the seed
    (the classifier initialisation of the unpruned fine-tuning), physically remove the heads, fine-tune with
    the unpruned fine-tuning's ``options`` and seed (the removed heads cannot come back), score on the
    evaluation split.  A head set that is empty is the unpruned fine-tuning itself: its metrics are read from
    ``finetuned/metrics.json``.  Strategies that pick the same heads share one fine-tuning.

    ``work`` holds one folder per head set (its checkpoints, then ``result.json``): a killed job started again
    skips the finished head sets and resumes the unfinished one from its last checkpoint.  Writes ``output/``:
    ``evaluation.parquet`` (the evaluations table's columns), ``metrics.json`` (training metrics per head set)
    and ``models/<strategy>/`` for the strategies in ``keep_models`` (the compensation analysis reads them).
    Strategies in ``skip`` are left out (scored under finetune_then_prune only).
    """
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.io.atomic import atomic_dir, write_json
    from headsieve.io.provenance import expect_provenance
    from headsieve.models.load import load_tokenizer, save_tokenizer
    from headsieve.pruning.evaluations import PRUNE_THEN_FINETUNE, metric_rows
    from headsieve.tasks.finetune import FinetuneConfig, evaluate, finetune as train_model

    made, made_hash = check_finetuned(finetuned, model=model, task=task, train=True, evaluation=True, seed=seed, options=options)
    mask_record = expect_provenance(masks, {"finetuned": made_hash, "seed": int(seed)}, "select_masks")
    table = pd.read_parquet(masks)
    table = table[~table.strategy.isin(list(skip))]
    if table.empty:
        raise HeadsieveError(f"{masks}: no masks (after leaving out {list(skip)})")
    work = Path(work)
    reset_stale_work(work, {"model": model.spec, "train": [task.train_spec, [str(p) for p in task.train]],
                            "eval": [task.eval_spec, [str(p) for p in task.eval]], "task": task.options,
                            "finetune": options, "seed": int(seed), "device": str(device)})  # fmt: skip
    groups = head_groups(table)
    base = json.loads((Path(finetuned) / "metrics.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(model.key, model.spec)
    train, test = task.read_train(tokenizer), task.read_eval(tokenizer)
    config = FinetuneConfig.from_dict(dict(options, seed=seed))
    keep = set(keep_models)
    rows, records = [], {}
    log.info("%d masks, %d distinct head sets", sum(len(n) for _, n in groups.values()), len(groups))
    for key, (heads, named) in sorted(groups.items()):
        folder, kept = work / key, [s for s, _ in named if s in keep and heads]
        if not heads:  # nothing pruned: the unpruned fine-tuning of this seed
            result = {"eval": dict(base["eval"]), "train": base["train"], "heads": []}
        elif (folder / "result.json").is_file():  # finished before a kill
            result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        else:
            classifier = pretrained_classifier(model, train.n_labels, seed, heads, device)
            log.info("%s: %d heads removed from the pre-trained model; fine-tuning", ", ".join(s for s, _ in named), len(heads))
            train_metrics = train_model(classifier, train, config, folder, progress=progress, device=device)
            result = {"eval": evaluate(classifier, test, config.eval_batch_size, device), "train": train_metrics,
                      "heads": [[int(l), int(h)] for l, h in heads]}  # fmt: skip
            log.info("%s: %s", ", ".join(s for s, _ in named), result["eval"])
            for strategy in kept:
                shutil.copytree(folder / "model", folder / "keep" / strategy_folder(strategy), dirs_exist_ok=True)
            shutil.rmtree(folder / "model", ignore_errors=True)
            write_json(result, folder / "result.json")  # last: marks the head set done
        for strategy, fraction in named:
            rows += metric_rows(dict(result["eval"], heads_pruned=len(heads)), test, strategy, fraction, seed, PRUNE_THEN_FINETUNE)
            records[f"{strategy}@{fraction:g}"] = {"heads_pruned": len(heads), "train": result["train"], "eval": result["eval"]}
    record = evaluation_record(made, made_hash, mask_record, masks, PRUNE_THEN_FINETUNE, sorted(set(table.strategy)))
    record.update(rule="prune_finetune", finetune=options, kept=sorted(keep))
    with atomic_dir(output) as tmp:
        write_made_from(pd.DataFrame(rows), tmp / "evaluation.parquet", record)
        write_json(dict(records, provenance=record), tmp / "metrics.json")
        for key, (heads, named) in groups.items():
            for strategy, _ in named:
                if strategy in keep and heads:
                    shutil.copytree(work / key / "keep" / strategy_folder(strategy), tmp / "models" / strategy_folder(strategy))
                    save_tokenizer(tokenizer, tmp / "models" / strategy_folder(strategy))
    shutil.rmtree(work, ignore_errors=True)
    return pd.DataFrame(rows)


def collect(inputs: list, output):
    """Rule ``collect_pruning``: one evaluations table from every evaluation of both protocols (masked tables,
    or prune_finetune folders with their ``evaluation.parquet``)."""
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.io.provenance import check_cells, check_same_cells, expect_provenance, record_sha256
    from headsieve.pruning.evaluations import evaluations_table

    frames, records, cells, by_seed = [], {}, [], {}
    for path in inputs:
        table = Path(path) / "evaluation.parquet" if Path(path).is_dir() else Path(path)
        first = next(iter(records.values()), {})
        rule = "prune_finetune" if Path(path).is_dir() else "evaluate_masks"
        record = expect_provenance(table, {"model": first.get("model"), "task": first.get("task")}, rule)
        frame = pd.read_parquet(table)
        held = set(zip(frame["protocol"], frame["seed"].astype(int), frame["strategy"], frame["fraction"].astype(float)))
        if {(p, s) for p, s, _, _ in held} - {(record["protocol"], record["seed"])} or set(frame["strategy"]) != set(record["strategies"]):
            raise HeadsieveError(f"{table}: its rows are not those its provenance records: rerun rule {rule}")
        records[str(table)] = record
        cells.append((table, held))
        for protocol, seed, strategy, fraction in held:
            by_seed.setdefault(f"{protocol} seed {seed}", set()).add((strategy, fraction))
        frames.append(frame)
    if not frames:
        raise HeadsieveError("collect_pruning: no evaluation tables to collect")
    check_cells(cells, "evaluation (protocol, seed, strategy, fraction)")
    for protocol in {r["protocol"] for r in records.values()}:  # every seed of a protocol: the same cells
        check_same_cells({k: v for k, v in by_seed.items() if k.startswith(protocol + " ")}, "(strategy, fraction)")
    frame = evaluations_table(frames)
    first = next(iter(records.values()))
    record = {"rule": "collect_pruning", "model": first["model"], "task": first["task"],
              "seeds": sorted({r["seed"] for r in records.values()}),
              "protocols": sorted({r["protocol"] for r in records.values()}),
              "inputs": sorted(record_sha256(r) for r in records.values())}  # fmt: skip
    write_made_from(frame, output, record)
    return frame


# ------------------------------------------------------------------------------------------ compensation


def parse_pruned(items: list) -> dict:
    """``STRATEGY=FRACTION=MODEL_FOLDER`` items -> {(strategy, fraction): folder}."""
    pruned = {}
    for item in items:
        strategy, fraction, folder = item.split("=", 2)
        pruned[(strategy, float(fraction))] = folder
    return pruned


def compensation(
    reference, model: Model, pruned: dict, task: TaskSettings, examples: int, seed: int, output, summary,
    device: str = "cpu",
):  # fmt: skip
    """Rule ``compensation``: how the remaining heads changed in each model pruned, then fine-tuned, on a sample
    of ``examples`` training inputs.

    ``reference``: the unpruned fine-tuning of the seed (``finetuned/``); ``pruned``: {(strategy, fraction):
    folder of a model pruned, then fine-tuned with the same recipe and seed}.  Two comparisons per remaining
    head: against the unpruned model fine-tuned alike (``jsd``, ``norm_change``, ``importance_change``:
    everything pruning changed, including what its removal passes on to later layers), and against the same
    pruned model before fine-tuning, i.e. the pruned pre-trained ``model`` it started from
    (``jsd_retraining``, ``norm_change_retraining``: what the fine-tuning changed).
    """
    import numpy as np
    import pandas as pd

    from headsieve import batching as B
    from headsieve.errors import HeadsieveError
    from headsieve.io.provenance import expect_provenance, record_sha256
    from headsieve.models import heads as H
    from headsieve.models.runtime import batch_options
    from headsieve.pruning.compensation import compare_heads, head_activity, spread_summary
    from headsieve.pruning.importance import head_importance
    from headsieve.tasks.finetune import load_finetuned

    made, made_hash = check_finetuned(reference, model=model, task=task, train=True, seed=seed)
    made_of = {}  # each pruned model: from a prune_finetune job of this fine-tuning, with its strategy kept
    for key, folder in sorted(pruned.items()):
        job = Path(folder).parent.parent  # .../pruned_finetuned/<fraction>/models/<strategy>
        record = expect_provenance(job, {"finetuned": made_hash, "seed": int(seed)}, "prune_finetune")
        fraction = record.get("fraction")
        if key[0] not in record.get("kept", []) or fraction is None or abs(fraction - key[1]) > 1e-9:
            raise HeadsieveError(f"{folder}: not the model of {key[0]} at {key[1]:g} that {job} kept: rerun rule prune_finetune")
        made_of[f"{key[0]}@{key[1]:g}"] = record_sha256(record)
    reference_model, tokenizer = load_finetuned(reference, device)
    train = task.read_train(tokenizer)
    pick = np.sort(np.random.default_rng([seed, 4242]).permutation(len(train.examples))[:examples])
    pad, types = batch_options(reference_model)
    batches = list(B.iter_batches(train.examples, 16, pad, types, order=pick))
    ref_activity = head_activity(reference_model, batches, device)
    ref_importance = head_importance(reference_model, batches, device=device)
    frames, summaries = [], []
    for (strategy, fraction), folder in sorted(pruned.items()):
        pruned_model = H.load_pruned(str(folder), device=device)
        activity = head_activity(pruned_model, batches, device)
        heads = compare_heads(ref_activity, activity, ref_importance, head_importance(pruned_model, batches, device=device))
        before = pretrained_classifier(model, train.n_labels, seed, H.pruned_heads(pruned_model), device)
        retraining = compare_heads(head_activity(before, batches, device), activity)
        heads["jsd_retraining"] = retraining["jsd"].to_numpy()
        heads["norm_change_retraining"] = retraining["norm_change"].to_numpy()
        heads.insert(0, "fraction", float(fraction))
        heads.insert(0, "strategy", strategy)
        heads["seed"] = seed
        frames.append(heads)
        for measure in ("jsd", "norm_change", "importance_change", "jsd_retraining", "norm_change_retraining"):
            summaries.append(
                dict(strategy=strategy, fraction=float(fraction), seed=seed, **spread_summary(heads, measure, seed=seed))
            )
    record = {"rule": "compensation", "model": made["model"], "task": made["task"], "seed": int(seed),
              "finetuned": made_hash, "pruned": made_of, "examples": int(examples),
              "train_sha256": made["train_sha256"]}  # fmt: skip
    write_made_from(pd.concat(frames, ignore_index=True), output, record)
    write_made_from(pd.DataFrame(summaries), summary, record)


def report(
    evaluations, comparisons, figures, title: str, *, compensation: list = (), compensation_summary: list = (),
    settings: ComparisonSettings = ComparisonSettings(), summary=None,
) -> None:  # fmt: skip
    """Rule ``pruning_report``: evaluations (and the compensation tables of every seed) -> paired strategy
    ``comparisons`` (Parquet), figures, and when ``summary`` is given a markdown summary."""
    import pandas as pd

    from headsieve.errors import HeadsieveError
    from headsieve.io.atomic import write_text
    from headsieve.io.provenance import check_same_cells, expect_provenance, record_sha256
    from headsieve.plots import pruning as plots
    from headsieve.pruning.report import compensation_lines, paired_comparisons, results_markdown, summary_lines
    from headsieve.tokens import file_sha256

    s = settings
    made = expect_provenance(evaluations, {}, "collect_pruning")
    paired = {}  # the compensation tables of every seed: of this model and task, each seed once, heads with totals
    for kind, paths in (("heads", compensation), ("summary", compensation_summary)):
        for path in paths:
            record = expect_provenance(path, {"model": made["model"], "task": made["task"]}, "compensation")
            if set(pd.read_parquet(path, columns=["seed"])["seed"].astype(int)) - {record["seed"]}:
                raise HeadsieveError(f"{path}: rows of seeds other than its recorded seed {record['seed']}: rerun rule compensation")
            if made.get("seeds") is not None and record["seed"] not in made["seeds"]:
                raise HeadsieveError(f"{path}: seed {record['seed']} is not among the evaluations' seeds {made['seeds']}: rerun rule compensation")
            if record["seed"] in paired.setdefault(kind, {}):
                raise HeadsieveError(f"{path}: seed {record['seed']} is also in {paired[kind][record['seed']][0]} (every seed once)")
            paired[kind][record["seed"]] = (path, record_sha256(record))
    check_same_cells({f"compensation {kind}": {(seed, h) for seed, (_, h) in by_seed.items()} for kind, by_seed in paired.items()},
                     "table of (seed, compensation run)")  # fmt: skip
    frame = pd.read_parquet(evaluations)
    compared = paired_comparisons(frame, correction=s.correction, alpha=s.alpha, power=s.power)
    write_made_from(compared, comparisons, {"rule": "report_pruning", "model": made["model"], "task": made["task"],
                                            "evaluations_sha256": file_sha256(evaluations), "correction": s.correction,
                                            "alpha": s.alpha, "power": s.power})  # fmt: skip
    lines = summary_lines(compared)
    figures = Path(figures)
    plots.metric_curves(frame, figures / "metric_by_fraction", title)
    plots.comparison_map(compared, figures / "strategy_comparisons", title, note="\n".join(lines[1:]))
    if compensation:
        heads = pd.concat([pd.read_parquet(p) for p in compensation], ignore_index=True)
        totals = pd.concat([pd.read_parquet(p) for p in compensation_summary], ignore_index=True)
        plots.compensation_figure(heads, totals, figures / "compensation", title)
        lines += compensation_lines(totals, alpha=s.alpha)
    if summary:
        text = results_markdown(frame, compared, title, s.alpha)
        text += ["## Design and tests", ""] + [f"- {line}" for line in lines]
        write_text("\n".join(text) + "\n", summary)
