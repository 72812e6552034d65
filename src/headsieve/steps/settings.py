"""Settings that travel together through the steps, as small frozen dataclasses.

The values are the config entries as they are (dicts parsed from the config or from a command line's JSON):
the steps pass them on unchanged, so that what they record in the outputs' provenance does not depend on
whether a step was called from the command line or from Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Model:
    """A model: its key in the config (``models.<key>``) and its config entry (e.g. ``{"source": "minilm"}``)."""

    key: str
    spec: dict


@dataclass(frozen=True)
class Corpus:
    """A corpus: its key in the config, its config entry (``format``, ``task``, ``max_sentences`` ...) and its
    file(s)."""

    key: str
    spec: dict
    files: list


@dataclass(frozen=True)
class TaskSettings:
    """The five values of a classification task that travel together: the task's config entry (``options``:
    metric, max_length, max_train, max_eval, held_out ...), the corpus entries and files of the training split
    and of the evaluation split.  A step that needs only one split leaves the other empty."""

    options: dict
    train_spec: dict | None = None
    train: list = field(default_factory=list)
    eval_spec: dict | None = None
    eval: list = field(default_factory=list)

    @property
    def max_length(self) -> int:
        """Word pieces per input (longer inputs are dropped)."""
        return self.options["max_length"]

    @property
    def max_train(self) -> int | None:
        """A seeded subset of the training split of this size (None: all of it)."""
        return self.options.get("max_train")

    @property
    def max_eval(self) -> int | None:
        """A seeded subset of the evaluation split of this size (None: all of it)."""
        return self.options.get("max_eval")

    def read_train(self, tokenizer):
        """The training split as :class:`headsieve.tasks.data.TaskData`: inputs longer than ``max_length``
        dropped, a seeded (seed 0) subset of ``max_train``."""
        from headsieve.tasks.data import read_task

        return read_task(self.train_spec, self.train, tokenizer, self.max_length, self.max_train, 0)

    def read_eval(self, tokenizer):
        """The evaluation split as :class:`headsieve.tasks.data.TaskData` (``max_length``, a seeded subset of
        ``max_eval``)."""
        from headsieve.tasks.data import read_task

        return read_task(self.eval_spec, self.eval, tokenizer, self.max_length, self.max_eval, 0)


@dataclass(frozen=True)
class DumpSettings:
    """Attention dump: padded pieces per batch (speed only), shard size in MiB, and ``attention.max_length``
    (the tokens must have been cut at it; None: not checked)."""

    batch_tokens: int = 4096
    shard_mb: int = 64
    max_length: int | None = None


@dataclass(frozen=True)
class RoleTestSettings:
    """Role tests: level, correction (none, holm, bh), threshold (None: the default of each role's score form)
    and per-role thresholds."""

    alpha: float = 0.05
    correction: str = "bh"
    tau: float | None = None
    tau_by_role: dict | None = None


@dataclass(frozen=True)
class StabilitySettings:
    """Split-half stability of the role labels: the seed of the split and bootstrap, and the resamples."""

    seed: int = 0
    bootstrap: int = 200


@dataclass(frozen=True)
class ComparisonSettings:
    """Paired strategy comparisons: p correction across the report (holm, bh), test level (CI 1 - alpha) and
    the power of the minimal detectable difference."""

    correction: str = "holm"
    alpha: float = 0.05
    power: float = 0.8


@dataclass(frozen=True)
class RandomPruningSettings:
    """Multilingual study: shares of heads masked at random, draws per share, examples of the layer CKA and the
    evaluation batch size."""

    fractions: list
    draws: int = 1
    cka_examples: int = 256
    batch_size: int = 64


@dataclass(frozen=True)
class SentencePairs:
    """Translation: source- and target-language CoNLL-U files of the same sentences, and the pair options
    (importance_pool, split_seed, max_test ...)."""

    source: str
    target: str
    options: dict = field(default_factory=dict)
