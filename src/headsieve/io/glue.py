"""Labelled classification sets in GLUE TSV form (and XNLI's), single sentences and pairs.

Each task names where its text and label columns are: by header name when the file has a header line,
by position when it does not (several GLUE copies drop the header: RTE ``val.tsv``, MRPC train, CoLA).
Files are split on tabs only (GLUE files contain quote characters that are text, not quoting).
"""

from __future__ import annotations

from dataclasses import dataclass

from headsieve.errors import HeadsieveError
from headsieve.io.conllu import read_text

Column = tuple[str | None, int | None]  # (name in a header line, position in a file without header)


@dataclass(frozen=True)
class TaskSpec:
    text_a: Column
    text_b: Column | None
    label: Column
    labels: tuple[str, ...]  # label strings; the class id is the position in this tuple
    metric: str  # accuracy | matthews | f1_accuracy
    language: str | None = None  # XNLI: header column used to select one language's rows


NLI_LABELS = ("contradiction", "entailment", "neutral")  # GLUE MNLI order, shared with XNLI

TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(("sentence", 0), None, ("label", 1), ("0", "1"), "accuracy"),
    "cola": TaskSpec(("sentence", 3), None, ("label", 1), ("0", "1"), "matthews"),
    "mrpc": TaskSpec(("#1 String", 3), ("#2 String", 4), ("Quality", 0), ("0", "1"), "f1_accuracy"),
    "rte": TaskSpec(("sentence1", 1), ("sentence2", 2), ("label", 3), ("entailment", "not_entailment"), "accuracy"),
    "qnli": TaskSpec(("question", 1), ("sentence", 2), ("label", 3), ("entailment", "not_entailment"), "accuracy"),
    "qqp": TaskSpec(("question1", 3), ("question2", 4), ("is_duplicate", 5), ("0", "1"), "f1_accuracy"),
    "mnli": TaskSpec(("sentence1", 8), ("sentence2", 9), ("gold_label", -1), NLI_LABELS, "accuracy"),
    # XNLI release (xnli.dev.tsv / xnli.test.tsv: header, all languages, 'language' column) or the
    # three-column headerless form (premise, hypothesis, label) of XGLUE copies.
    "xnli": TaskSpec(("sentence1", 0), ("sentence2", 1), ("gold_label", 2), NLI_LABELS, "accuracy", "language"),
}


@dataclass
class Example:
    example_id: str
    text_a: str
    text_b: str | None
    label: str
    label_id: int
    line: int


def task_spec(task: str, custom: dict | None = None) -> TaskSpec:
    """The spec of a known task, or one built from a config's ``columns``/``labels`` for any GLUE-form task."""
    if custom:
        cols = custom["columns"]

        def col(key):
            value = cols.get(key)
            if value is None:
                return None
            return (value, None) if isinstance(value, str) else (None, int(value))

        return TaskSpec(
            col("text_a"), col("text_b"), col("label"), tuple(map(str, custom["labels"])), custom.get("metric", "accuracy")
        )
    if task not in TASKS:
        raise HeadsieveError(f"unknown task '{task}' (known: {', '.join(sorted(TASKS))}; or give columns and labels)")
    return TASKS[task]


def common_width(lines: list[str]) -> int:
    """The most common number of tab-separated columns of the non-blank ``lines`` (a tie: the earliest)."""
    counts: dict[int, int] = {}
    for line in lines:
        if line.strip():
            n = line.count("\t") + 1
            counts[n] = counts.get(n, 0) + 1
    return max(counts, key=lambda n: counts[n])  # dicts keep insertion order: max keeps the first of a tie


def read_glue(
    path,
    spec: TaskSpec,
    header: bool | None = None,
    language: str | None = None,
    max_examples: int | None = None,
) -> list[Example]:
    """Read labelled examples; ``header=None`` detects a header line by the label column's name.

    ``path`` may be a list of files (one split spread over several files): read in order, numbered on."""
    if isinstance(path, (list, tuple)):
        examples: list[Example] = []
        for one in path:
            left = None if max_examples is None else max_examples - len(examples)
            if left == 0:
                break
            for ex in read_glue(one, spec, header, language, left):
                ex.example_id = str(len(examples))
                examples.append(ex)
        return examples
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise HeadsieveError(f"{path}: no examples (empty file)")
    first = [name.strip() for name in lines[0].rstrip("\r").split("\t")]  # 'label ' is the column 'label'
    if header is None:
        header = spec.label[0] is not None and spec.label[0] in first
    names = first if header else None
    # every row has the header's number of columns (a tab inside a text shifts them); a file without a header
    # has no reference line, so its rows' most common number is the reference (a bad first row is blamed on
    # itself, not on the good row after it)
    width, reference = (len(first), "line 1 has") if header else (common_width(lines), "most lines have")

    def index(col: Column | None, what: str) -> int | None:
        if col is None:
            return None
        name, pos = col
        if names is not None and name:
            if name not in names:
                raise HeadsieveError(f"{path}:1: header has no column '{name}' ({what}); found: {', '.join(names)}")
            return names.index(name)
        if pos is None:
            raise HeadsieveError(f"{path}:1: no header line, so column '{name}' ({what}) cannot be found; give its position")
        return pos

    ia, ib, il = index(spec.text_a, "text"), index(spec.text_b, "second text"), index(spec.label, "label")
    ilang = None
    if language and spec.language and names is not None:
        if spec.language not in names:
            raise HeadsieveError(f"{path}:1: header has no '{spec.language}' column to select language '{language}'")
        ilang = names.index(spec.language)
    needed = max(i if i >= 0 else 0 for i in (ia, ib, il) if i is not None) + 1
    examples: list[Example] = []
    start = 1 if header else 0
    for k in range(start, len(lines)):
        lineno = k + 1
        line = lines[k].rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < needed:
            raise HeadsieveError(f"{path}:{lineno}: expected at least {needed} tab-separated columns, found {len(fields)}")
        if len(fields) != width:
            raise HeadsieveError(
                f"{path}:{lineno}: {len(fields)} tab-separated columns, but {reference} {width} "
                "(a tab inside a text, or a missing or extra field)"
            )
        if ilang is not None and language and fields[ilang] != language:
            continue
        label = fields[il].strip()
        if label not in spec.labels:
            raise HeadsieveError(
                f"{path}:{lineno}: unknown label '{label}' (expected one of: {', '.join(spec.labels)})"
            )
        text_a = fields[ia].strip()
        text_b = fields[ib].strip() if ib is not None else None
        if not text_a or (ib is not None and not text_b):
            raise HeadsieveError(f"{path}:{lineno}: empty text")
        examples.append(Example(str(len(examples)), text_a, text_b, label, spec.labels.index(label), lineno))
        if max_examples is not None and len(examples) >= max_examples:
            break
    if not examples:
        what = f" for language '{language}'" if language else ""
        raise HeadsieveError(f"{path}: no examples{what} (empty corpus)")
    return examples
