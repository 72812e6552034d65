"""One results document from the summaries the report steps write (``results/summary.md``).

Each report step writes its own Markdown summary from its artifacts (role maps, gold against parsed trees,
fine-tuning change, pruning, the multilingual study); this module puts them under one title, each section's
headings moved one level down and its source file named, so that every result figure of a run is in one
generated file and none has to be typed by hand.
"""

from __future__ import annotations

from pathlib import Path

from headsieve.errors import HeadsieveError


def demote_headings(text: str) -> str:
    """Markdown headings one level deeper (``# x`` -> ``## x``); other lines unchanged."""
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def combine_summaries(paths: list[str], title: str) -> str:
    """The summaries at ``paths``, in order, under ``title``; each begins with the file it came from."""
    parts = [f"# {title}", "", f"Generated from {len(paths)} summaries of this run's report steps.", ""]
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise HeadsieveError(f"{path}: cannot read summary ({err.strerror})") from None
        if not text.startswith("#"):
            text = f"# {Path(path).parent.name}\n\n{text}"
        parts += [demote_headings(text), "", f"(from `{path}`)", ""]
    return "\n".join(parts)
