"""Markdown tables of the summaries."""

from __future__ import annotations

import pytest

from headsieve.io.markdown import table_lines, table_row


def test_table_lines():
    lines = table_lines(["role", "heads", "mean"], "lrr", [["local", 3, "0.50"], ["block", 0, ""]])
    assert lines == ["| role | heads | mean |", "|---|---:|---:|", "| local | 3 | 0.50 |", "| block | 0 |  |"]
    assert table_row([]) == "|  |"
    with pytest.raises(KeyError):
        table_lines(["a"], "c", [])
