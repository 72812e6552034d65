"""Markdown tables of the summaries, one way: a header row, an alignment row and a row per record."""

from __future__ import annotations

#: alignment letter -> the cell of the alignment row
ALIGN = {"l": "---|", "r": "---:|"}


def table_row(cells) -> str:
    """``| a | b |`` of the cells (each as ``str``)."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table_lines(header, align: str, rows) -> list[str]:
    """The lines of a markdown table: ``header`` (column names), the alignment row (``align``: a letter per column,
    ``l`` left, ``r`` right) and a line per row of ``rows`` (lists of cells)."""
    return [table_row(header), "|" + "".join(ALIGN[a] for a in align)] + [table_row(row) for row in rows]
