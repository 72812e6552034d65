"""Steps of ``workflow/rules/summary.smk``: one results document."""

from __future__ import annotations


def collect_summaries(parts: list, title: str, output) -> None:
    """Rule ``summary``: every report step's summary.md (in the order given) -> one results document."""
    from headsieve.io.atomic import write_text
    from headsieve.summary import combine_summaries

    write_text(combine_summaries(parts, title), output)
