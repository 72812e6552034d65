"""Seeded fine-tuning of a sequence classifier, with exact resume after a kill.

:func:`finetune` trains an already loaded transformers ``*ForSequenceClassification`` (possibly physically
pruned with :func:`headsieve.models.heads.prune_heads`) with AdamW and a linear warmup/decay schedule,
dropout on.  Determinism rests on three things:

* the caller seeds torch before loading the model (``torch.manual_seed(seed)`` or :func:`set_seed`; the
  classifier head is initialised randomly inside ``load_encoder``), and ``finetune`` seeds torch again with
  ``config.seed`` before its first step (dropout);
* the order of an epoch is ``data.epoch_order(n, seed, epoch)``, a function of (seed, epoch) alone, so the
  batches after a resume are exactly those an uninterrupted run sees;
* checkpoints hold everything else that changes: weights, optimizer and scheduler state, the torch RNG
  state(s), the position (step, epoch, batch in epoch), the losses and the early-stopping record.

A run killed at any moment (SIGKILL included) and started again with the same arguments ends with the same
bytes in ``model/model.safetensors`` and the same ``train_metrics.json`` (``seconds`` aside) as an
uninterrupted run, on CPU with the same number of torch threads.  On CUDA the RNG state is saved and restored
too, but kernels need not be bit-reproducible.

Layout of ``out_dir``::

    checkpoint/                 while training (removed at the end); never pickled
        model/                  config.json (pruned heads recorded) + model.safetensors (save_pruned)
        optimizer.safetensors   AdamW tensors (exp_avg, exp_avg_sq, step)
        optimizer.json          the rest of optimizer.state_dict() (param groups), tensors by reference
        scheduler.safetensors   LR-scheduler tensors (normally none)
        scheduler.json          LR-scheduler state_dict()
        rng.safetensors         torch RNG state(s) as uint8 tensors: "cpu" (and "cuda")
        best.safetensors        early stopping only: the weights of the best held-out evaluation so far
        state.json              position, losses, evaluations, config, data fingerprint (written last)
    model/                      the final model (save_pruned) and the tokenizer, if one was given
    held_out.json               when the held-out part was split off the training data: its indices
    train_metrics.json          steps, losses, seconds, held-out metrics

A checkpoint is written to ``.checkpoint.tmp`` and renamed into place (the previous one is moved aside to
``.checkpoint.old`` for the moment between the two renames), so a partial write is never read.  One process
per ``out_dir`` at a time.

Early stopping evaluates on a held-out part of the *training* data (``data.split_held_out`` with
``held_out_fraction`` and the seed, or a ``held_out`` set the caller split off the training data itself);
the evaluation split never enters this module.  The final model is then the one of the best evaluation.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headsieve.errors import HeadsieveError
from headsieve.io.atomic import atomic_dir, write_json
from headsieve.models import heads as H
from headsieve import batching as B
from headsieve.tasks import data as D
from headsieve.models.load import load_tokenizer, save_tokenizer
from headsieve.models.runtime import batch_options, eval_mode, model_device, to_device
from headsieve.tasks.metrics import METRICS, compute_metrics, primary_metric

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
_TMP, _OLD, _TRASH = ".checkpoint.tmp", ".checkpoint.old", ".checkpoint.trash"
STATE_VERSION = 1
#: config fields that may change between a kill and the resume
_RESUMABLE_CHANGES = ("checkpoint_every",)
#: at most this many steps (and at most a tenth of them) are averaged for the initial and final loss
LOSS_WINDOW = 50


# ------------------------------------------------------------------------------------------------- config


@dataclass
class FinetuneConfig:
    """Fine-tuning settings.

    ``epochs`` may be fractional; ``max_steps``, when set, overrides it.  ``early_stopping`` is a patience in
    held-out evaluations (every ``eval_every`` steps, default once per epoch, and at the last step) without
    improvement of the task's primary metric.  ``held_out_fraction`` is the share of the training data held
    out for those evaluations (default 0.1 with early stopping, else 0).  ``freeze_embeddings`` keeps the input
    word embeddings as pre-trained (no gradient, no optimizer state): cheaper steps, above all for models with
    large vocabularies.  ``group_by_length`` makes each epoch's batches of examples of similar length
    (:func:`headsieve.tasks.data.grouped_epoch_order`): the same examples per epoch with less padding.
    """

    seed: int = 0
    epochs: float | None = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    checkpoint_every: int = 500
    eval_batch_size: int = 64
    early_stopping: int | None = None
    held_out_fraction: float | None = None
    eval_every: int | None = None
    freeze_embeddings: bool = False
    group_by_length: bool = False

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> HeadsieveError:
            return HeadsieveError(f"fine-tuning config: {field} = {getattr(self, field)!r} {why}")

        if self.max_steps is None and self.epochs is None:
            raise HeadsieveError("fine-tuning config: give epochs or max_steps")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise bad("max_steps", "must be a positive integer")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise bad("epochs", "must be a positive number")
        for field in ("batch_size", "checkpoint_every", "eval_batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(field, "must be a positive integer")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be positive")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be in [0, 1)")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "must be positive (or null for no clipping)")
        if self.early_stopping is not None and (not isinstance(self.early_stopping, int) or self.early_stopping < 1):
            raise bad("early_stopping", "must be a positive integer (patience in evaluations) or null")
        if self.held_out_fraction is not None and not 0 <= self.held_out_fraction < 1:
            raise bad("held_out_fraction", "must be in [0, 1)")
        if self.early_stopping is not None and self.held_out_fraction == 0:
            raise bad("held_out_fraction", "must be > 0 with early stopping (it evaluates on the held-out part)")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise bad("eval_every", "must be a positive integer or null")
        for field in ("freeze_embeddings", "group_by_length"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "must be true or false")

    @property
    def held_out_share(self) -> float:
        """The held-out fraction in effect: as given, else 0.1 with early stopping, else 0."""
        if self.held_out_fraction is not None:
            return float(self.held_out_fraction)
        return 0.1 if self.early_stopping is not None else 0.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "FinetuneConfig":
        """Build from a config mapping; unknown keys are a one-line error."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HeadsieveError(
                f"fine-tuning config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def set_seed(seed: int) -> None:
    """Seed torch (CPU and every CUDA device).  Call it before loading the model to fix the head's init."""
    torch.manual_seed(int(seed))


# ------------------------------------------------------------------------------------------ model plumbing


def predict(model, data: D.TaskData, batch_size: int, device=None) -> np.ndarray:
    """Class ids (argmax of the logits) for every example of ``data``, in order; model in eval mode, no grad.

    Batches hold examples of similar length (less padding); the predictions are put back in the data's order.
    """
    device = torch.device(device) if device is not None else model_device(model)
    pad, types = batch_options(model)
    order = np.argsort([len(e["input_ids"]) for e in data.examples], kind="stable")
    out: list[np.ndarray] = []
    with eval_mode(model), torch.no_grad():
        for batch in B.iter_batches(data.examples, batch_size, pad, types, order=order):
            batch.pop("labels", None)
            logits = model(**to_device(batch, device)).logits
            out.append(logits.argmax(-1).cpu().numpy())
    pred = np.zeros(len(order), dtype=np.int64)
    if out:
        pred[order] = np.concatenate(out)
    return pred


def evaluate(model, data: D.TaskData, batch_size: int, device=None) -> dict:
    """Every metric of the task (``compute_metrics``) on ``data``, plus ``n``."""
    if not data.examples:
        raise HeadsieveError(f"task '{data.task}': nothing to evaluate (no examples)")
    pred = predict(model, data, batch_size, device)
    gold = np.asarray([e["label"] for e in data.examples], dtype=np.int64)
    return dict(compute_metrics(data.metric, pred, gold), n=int(len(gold)))


def held_out_split(train: D.TaskData, config: FinetuneConfig):
    """(training part, held-out part or None, held-out indices into ``train.examples`` or None).

    The held-out part is ``data.split_held_out(n, config.held_out_share, config.seed)`` of the training data.
    """
    share = config.held_out_share
    if share <= 0:
        return train, None, None
    keep, held = D.split_held_out(len(train.examples), share, config.seed)
    if len(held) == 0:
        raise HeadsieveError(
            f"task '{train.task}': held_out_fraction {share} of {len(train.examples)} training examples holds "
            f"out nothing; raise held_out_fraction"
        )
    def part(idx) -> D.TaskData:
        return D.TaskData(train.task, train.labels, train.metric, [train.examples[i] for i in idx])

    return part(keep), part(held), held


def _fingerprint(*datasets: D.TaskData | None) -> str:
    """SHA-256 of the encoded examples (ids, segment ids, labels), to refuse resuming on other data."""
    digest = hashlib.sha256()
    for data in datasets:
        if data is None:
            digest.update(b"none;")
            continue
        digest.update(json.dumps([data.task, list(data.labels), data.metric]).encode())
        for e in data.examples:
            digest.update(json.dumps([e["input_ids"], e["token_type_ids"], e["label"]], separators=(",", ":")).encode())
    return digest.hexdigest()


def _optimizer(model, config: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and LayerNorm weights (parameters with fewer than 2 dimensions)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


# ---------------------------------------------------------------------------- JSON + safetensors state dicts


def _split_state(obj, tensors: dict, prefix: str):
    """A JSON tree of ``obj`` with every tensor moved into ``tensors`` (referenced by key)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__items__": [[k, _split_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} as JSON/safetensors")


def _join_state(tree, tensors: dict):
    """Inverse of :func:`_split_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__tuple__" in tree:
            return tuple(_join_state(v, tensors) for v in tree["__tuple__"])
        return {k: _join_state(v, tensors) for k, v in tree["__items__"]}
    if isinstance(tree, list):
        return [_join_state(v, tensors) for v in tree]
    return tree


def _save_state(state: dict, folder: Path, name: str) -> None:
    from safetensors.torch import save_file

    tensors: dict = {}
    tree = _split_state(state, tensors, name)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(tree, indent=1), encoding="utf-8")


def _load_state(folder: Path, name: str) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / f"{name}.safetensors"))
    tree = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return _join_state(tree, tensors)


@contextlib.contextmanager
def _quiet_saves():
    """No "Writing model shards" progress bar from transformers for every checkpoint."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------- checkpoint folder handling


def recover_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """Tidy up after a kill and return the complete checkpoint folder, if there is one.

    A leftover ``.checkpoint.tmp`` (partial write) or ``.checkpoint.trash`` is deleted; a ``.checkpoint.old``
    is the previous complete checkpoint, put back if the kill came before the new one was renamed in place.
    Temporaries of the final outputs (``.model.tmp-<pid>`` ...) left by a killed run are deleted too.
    """
    out = Path(out_dir)
    final, tmp, old, trash = out / CHECKPOINT, out / _TMP, out / _OLD, out / _TRASH
    for path in (tmp, trash):
        if path.exists():
            shutil.rmtree(path)
    for name in ("model", "train_metrics.json", "held_out.json"):  # io.atomic temporaries of killed runs
        for stale in out.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)
    return final if final.is_dir() else None


def _replace_checkpoint(out: Path, write) -> None:
    """Write a checkpoint with ``write(folder)`` into a temporary folder, then rename it into place."""
    final, tmp, old, trash = out / CHECKPOINT, out / _TMP, out / _OLD, out / _TRASH
    for path in (tmp, trash, old):
        if path.exists():
            shutil.rmtree(path)
    tmp.mkdir(parents=True)
    write(tmp)
    _fsync_tree(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(out)
    if old.exists():
        os.replace(old, trash)
        shutil.rmtree(trash)


def _remove_checkpoint(out: Path) -> None:
    final, trash = out / CHECKPOINT, out / _TRASH
    if final.exists():
        os.replace(final, trash)
        shutil.rmtree(trash)


# ------------------------------------------------------------------------------------------------ training


class _Run:
    """The mutable state of one fine-tuning run (what a checkpoint stores besides weights and optimizer)."""

    def __init__(self):
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict] = []  # held-out evaluations during training
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.done = False
        self.seconds = 0.0
        self.threads = torch.get_num_threads()
        self.best_state: dict | None = None  # weights at best_step (early stopping)


def _model_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_weights_checked(model, tensors: dict, where: str) -> None:
    """Copy saved tensors into ``model``; shapes and keys must match (tied duplicates may be missing)."""
    params = model.state_dict()
    delete = f"delete '{where}' to start over"
    for key, value in tensors.items():
        if key not in params:
            raise HeadsieveError(f"checkpoint '{where}' has weight '{key}' the model lacks (another model?); {delete}")
        if tuple(params[key].shape) != tuple(value.shape):
            raise HeadsieveError(
                f"checkpoint '{where}': weight '{key}' has shape {list(value.shape)}, the model has "
                f"{list(params[key].shape)} (different model or pruning); {delete}"
            )
    loaded_ptrs = {params[k].data_ptr() for k in tensors}
    missing = [k for k in params if k not in tensors and params[k].numel() and params[k].data_ptr() not in loaded_ptrs]
    if missing:
        raise HeadsieveError(f"checkpoint '{where}' lacks the model's weight '{missing[0]}'; {delete}")
    with torch.no_grad():
        model.load_state_dict(tensors, strict=False)


def _check_resume(state: dict, where: Path, config: FinetuneConfig, fingerprint: str, pruned: dict, plan: dict):
    delete = f"delete '{where}' to start over"
    if state.get("version") != STATE_VERSION:
        raise HeadsieveError(
            f"checkpoint '{where}' has state version {state.get('version')!r}, not {STATE_VERSION}; {delete}"
        )
    saved, now = state["config"], config.to_dict()
    for key in sorted(set(saved) | set(now)):
        if key in _RESUMABLE_CHANGES:
            continue
        if saved.get(key) != now.get(key):
            raise HeadsieveError(
                f"checkpoint '{where}' was written with {key} = {saved.get(key)!r}, the run now asks for "
                f"{now.get(key)!r}; restore the setting or {delete}"
            )
    if state["fingerprint"] != fingerprint:
        raise HeadsieveError(f"checkpoint '{where}' was written for other training or held-out data; {delete}")
    if state["pruned_heads"] != pruned:
        raise HeadsieveError(
            f"checkpoint '{where}' is of a model with pruned heads {state['pruned_heads']}, this model has "
            f"{pruned}; {delete}"
        )
    for key, value in plan.items():
        if state["plan"].get(key) != value:
            raise HeadsieveError(
                f"checkpoint '{where}' planned {key} = {state['plan'].get(key)}, now {value}; {delete}"
            )


def _loss_summary(losses: list[float], steps_per_epoch: int) -> dict:
    if not losses:
        return {"initial_loss": None, "final_loss": None, "mean_loss": None, "epoch_losses": []}
    window = max(1, min(LOSS_WINDOW, math.ceil(len(losses) / 10)))
    epochs = [losses[i : i + steps_per_epoch] for i in range(0, len(losses), steps_per_epoch)]
    return {
        "initial_loss": float(np.mean(losses[:window])),
        "final_loss": float(np.mean(losses[-window:])),
        "last_loss": float(losses[-1]),
        "mean_loss": float(np.mean(losses)),
        "epoch_losses": [float(np.mean(e)) for e in epochs],
        "loss_window": window,
    }


@contextlib.contextmanager
def frozen_embeddings(model, enabled: bool):
    """With ``enabled``, the input word embeddings get no gradient inside the block (``requires_grad``
    restored after, also after an error)."""
    weight = model.get_input_embeddings().weight
    freeze = enabled and weight.requires_grad
    if freeze:
        weight.requires_grad_(False)
    try:
        yield
    finally:
        if freeze:
            weight.requires_grad_(True)


def _with_frozen_embeddings(fn):
    """Run a fine-tuning with its config's ``freeze_embeddings`` applied to the model."""

    @functools.wraps(fn)
    def wrapper(model, train, config, *args, **kwargs):
        with frozen_embeddings(model, config.freeze_embeddings):
            return fn(model, train, config, *args, **kwargs)

    return wrapper


@_with_frozen_embeddings
def finetune(
    model,
    train: D.TaskData,
    config: FinetuneConfig,
    out_dir: str | os.PathLike,
    held_out: D.TaskData | None = None,
    progress: bool = True,
    *,
    tokenizer=None,
    device=None,
) -> dict:
    """Fine-tune ``model`` on ``train`` (resuming from ``out_dir/checkpoint`` if present); returns the metrics.

    ``held_out`` (a part the caller split off the training data) replaces the automatic held-out split.
    Writes ``out_dir/model`` (and the ``tokenizer``, if given) and ``out_dir/train_metrics.json``.  With
    ``config.freeze_embeddings`` the input word embeddings get no update (their ``requires_grad`` is restored
    after).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)

    n_labels = int(getattr(model.config, "num_labels", 0) or 0)
    if n_labels != train.n_labels:
        raise HeadsieveError(
            f"task '{train.task}' has {train.n_labels} classes, the model's classifier has {n_labels} "
            f"(load it with task_labels={train.n_labels})"
        )
    if train.metric not in METRICS:
        raise HeadsieveError(f"task '{train.task}': unknown metric '{train.metric}' (known: {', '.join(METRICS)})")

    # ---- data: training part and held-out part (never the evaluation split)
    if held_out is not None:
        if tuple(held_out.labels) != tuple(train.labels):
            raise HeadsieveError(f"held-out labels {held_out.labels} differ from the training labels {train.labels}")
        if not held_out.examples:
            raise HeadsieveError(f"task '{train.task}': the given held-out set is empty")
        if config.held_out_fraction:
            log.warning("held_out_fraction %s ignored: a held-out set was given", config.held_out_fraction)
        part, held, held_idx, held_source = train, held_out, None, "given"
    else:
        part, held, held_idx = held_out_split(train, config)
        held_source = "split_held_out" if held is not None else None
    examples = part.examples
    n = len(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    if n == 0:
        raise HeadsieveError(f"task '{train.task}': no training examples")
    early = config.early_stopping is not None
    if early and held is None:
        raise HeadsieveError("early stopping needs a held-out part of the training data (held_out_fraction > 0)")

    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.max_steps if config.max_steps is not None else math.ceil(config.epochs * steps_per_epoch)
    warmup = math.ceil(config.warmup_ratio * total)
    eval_every = config.eval_every or steps_per_epoch
    pad, types = batch_options(model)
    plan = {"n_train": n, "n_held_out": len(held.examples) if held is not None else 0, "steps": total,
            "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup}
    fingerprint = _fingerprint(train, held_out)
    pruned = H.pruned_record(model)

    model.train()
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(warmup, total))
    run = _Run()

    # ---- resume
    found = recover_checkpoint(out)
    if found is not None:
        run = _restore(found, model, optimizer, scheduler, device, config, fingerprint, pruned, plan, early)
        log.info("resuming from %s at step %d of %d (epoch %d, batch %d)", found, run.step, total,
                 run.step // steps_per_epoch, run.step % steps_per_epoch)
        if torch.get_num_threads() != run.threads:
            log.warning("checkpoint written with %d torch threads, now %d: results may differ in the last bits",
                        run.threads, torch.get_num_threads())
    else:
        set_seed(config.seed)
        log.info(
            "fine-tuning on %d examples of %s (%s held out), %d steps (%d per epoch, %d warmup), batch %d, lr %g",
            n, train.task, plan["n_held_out"] or "none", total, steps_per_epoch, warmup, config.batch_size,
            config.learning_rate,
        )

    def checkpoint() -> None:
        run.seconds += time.perf_counter() - clock[0]
        clock[0] = time.perf_counter()
        state = {
            "version": STATE_VERSION,
            "step": run.step,
            "epoch": run.step // steps_per_epoch,
            "batch_in_epoch": run.step % steps_per_epoch,
            "losses": run.losses,
            "history": run.history,
            "best_step": run.best_step,
            "best_score": run.best_score,
            "bad_evals": run.bad_evals,
            "stopped_early": run.stopped_early,
            "done": run.done,
            "seconds": run.seconds,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "config": config.to_dict(),
            "plan": plan,
            "fingerprint": fingerprint,
            "pruned_heads": pruned,
        }

        def write(folder: Path) -> None:
            from safetensors.torch import save_file

            with _quiet_saves():
                H.save_pruned(model, str(folder / "model"))
            _save_state(optimizer.state_dict(), folder, "optimizer")
            _save_state(scheduler.state_dict(), folder, "scheduler")
            rng = {"cpu": torch.get_rng_state()}
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(device)
            save_file(rng, str(folder / "rng.safetensors"))
            if run.best_state is not None:
                best = {k: v.cpu().contiguous() for k, v in run.best_state.items()}
                save_file(best, str(folder / "best.safetensors"))
            write_json(state, folder / "state.json")  # last: its presence marks a complete write

        _replace_checkpoint(out, write)
        log.debug("checkpoint at step %d written to %s", run.step, out / CHECKPOINT)

    def held_out_eval() -> None:
        metrics = evaluate(model, held, config.eval_batch_size, device)
        run.history.append(dict(metrics, step=run.step))
        score = metrics[primary_metric(held.metric)]
        better = run.best_score is None or (
            not math.isnan(score) and (math.isnan(run.best_score) or score > run.best_score)
        )
        if better:
            run.best_score, run.best_step, run.bad_evals = score, run.step, 0
            run.best_state = _model_state(model)
        else:
            run.bad_evals += 1
            if run.bad_evals >= config.early_stopping:
                run.stopped_early = True
        log.info("step %d: held-out %s = %.4f (best %.4f at step %d)%s", run.step, primary_metric(held.metric),
                 score, run.best_score, run.best_step, " - stopping early" if run.stopped_early else "")

    clock = [time.perf_counter()]
    params = [p for p in model.parameters() if p.requires_grad]
    bar = None
    if not run.done:
        from headsieve.progress import progress_bar

        bar = progress_bar(total=total, initial=run.step, enabled=progress, desc=f"fine-tune {train.task}",
                           unit="step", dynamic_ncols=True)
        model.train()
        while run.step < total and not run.stopped_early:
            epoch, start = divmod(run.step, steps_per_epoch)
            if config.group_by_length:
                order = D.grouped_epoch_order(lengths, config.batch_size, config.seed, epoch)
            else:
                order = D.epoch_order(n, config.seed, epoch)
            for batch in B.iter_batches(examples, config.batch_size, pad, types, order, start=start):
                loss = model(**to_device(batch, device)).loss
                loss.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                run.step += 1
                run.losses.append(float(loss.item()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(run.losses[-20:]):.4f}", refresh=False)
                if early and (run.step % eval_every == 0 or run.step == total):
                    held_out_eval()
                if run.stopped_early or run.step >= total:
                    break
                if run.step % config.checkpoint_every == 0:
                    checkpoint()
        bar.close()
        run.done = True
        checkpoint()  # the end state, so a kill while writing the outputs does not cost the training

    # ---- outputs
    if early and run.best_state is not None:
        with torch.no_grad():
            model.load_state_dict(run.best_state)
        log.info("final model: the best held-out evaluation, step %d", run.best_step)
    held_metrics = evaluate(model, held, config.eval_batch_size, device) if held is not None else None
    model.train()
    metrics = {
        "task": train.task,
        "seed": config.seed,
        "steps": run.step,
        "planned_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": run.step / steps_per_epoch,
        "n_train": n,
        "n_held_out": plan["n_held_out"],
        "held_out_source": held_source,
        **_loss_summary(run.losses, steps_per_epoch),
        "stopped_early": run.stopped_early,
        "best_step": run.best_step,
        "held_out": held_metrics,
        "held_out_history": run.history,
        "pruned_heads": pruned,
        "config": config.to_dict(),
        "threads": torch.get_num_threads(),
        "device": device.type,
        "seconds": round(run.seconds, 3),
    }
    if held_idx is not None:
        held_record = {"fraction": config.held_out_share, "seed": config.seed, "n": len(train.examples),
                       "indices": [int(i) for i in held_idx]}
        write_json(held_record, out / "held_out.json")
    with atomic_dir(out / "model") as tmp:
        with _quiet_saves():
            H.save_pruned(model, str(tmp))
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
    write_json(metrics, out / "train_metrics.json")
    _remove_checkpoint(out)
    log.info("fine-tuned %d steps in %.1f s: loss %.4f -> %.4f%s; model in %s", run.step, run.seconds,
             metrics["initial_loss"] or float("nan"), metrics["final_loss"] or float("nan"),
             f", held-out {held_metrics}" if held_metrics else "", out / "model")
    return metrics


def _restore(folder: Path, model, optimizer, scheduler, device, config, fingerprint, pruned, plan, early) -> _Run:
    """Load a checkpoint into the model, optimizer, scheduler and RNG; returns the run state."""
    from safetensors.torch import load_file

    state_path = folder / "state.json"
    delete = f"delete '{folder}' to start over"
    if not state_path.is_file():
        raise HeadsieveError(f"checkpoint '{folder}' has no state.json (not written by finetune?); {delete}")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HeadsieveError(f"checkpoint '{folder}': state.json unreadable ({err}); {delete}") from None
    _check_resume(state, folder, config, fingerprint, pruned, plan)
    try:
        weights = load_file(str(folder / "model" / "model.safetensors"), device=str(device))
        _load_weights_checked(model, weights, str(folder))
        optimizer.load_state_dict(_load_state(folder, "optimizer"))
        scheduler.load_state_dict(_load_state(folder, "scheduler"))
        rng = load_file(str(folder / "rng.safetensors"))
        best = None
        if early and state["best_step"] is not None:
            best = load_file(str(folder / "best.safetensors"), device=str(device))
    except HeadsieveError:
        raise
    except Exception as err:  # a damaged or foreign checkpoint
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HeadsieveError(f"checkpoint '{folder}' cannot be restored ({text}); {delete}") from None
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda":
        if "cuda" not in rng:
            raise HeadsieveError(f"checkpoint '{folder}' was written on CPU, this run uses {device}; {delete}")
        torch.cuda.set_rng_state(rng["cuda"], device)
    run = _Run()
    run.step = int(state["step"])
    run.losses = [float(x) for x in state["losses"]]
    run.history = state["history"]
    run.best_step = state["best_step"]
    run.best_score = state["best_score"]
    run.bad_evals = int(state["bad_evals"])
    run.stopped_early = bool(state["stopped_early"])
    run.done = bool(state["done"])
    run.seconds = float(state["seconds"])
    run.threads = int(state["threads"])
    run.best_state = best
    return run


def load_finetuned(folder, device):
    """The fine-tuned classifier of a ``finetune`` output folder (its ``model/``, pruned shape kept) and its
    tokenizer."""
    model = H.load_pruned(str(Path(folder) / "model"), device=device)
    tokenizer = load_tokenizer("finetuned", {"source": str(Path(folder) / "model")})
    return model, tokenizer
