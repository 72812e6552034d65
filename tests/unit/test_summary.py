"""The run's results document: every report step's summary, in order, headings demoted, sources named."""

from __future__ import annotations

from support.cli import one_error_line, run_cli
from headsieve.summary import combine_summaries, demote_headings


def test_summaries_combined_in_order_with_their_sources(tmp_path):
    a, b = tmp_path / "roles" / "summary.md", tmp_path / "pruning" / "summary.md"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text("# Head roles: m on c\n\n| role | heads |\n|---|---:|\n| local | 7 |\n## detail\n- x\n")
    b.write_text("- a line without a heading\n")
    text = combine_summaries([str(a), str(b)], "results")
    assert text.startswith("# results\n")
    assert text.index("## Head roles: m on c") < text.index("## pruning")
    assert "### detail" in text and "| local | 7 |" in text
    assert f"(from `{a}`)" in text and f"(from `{b}`)" in text
    assert demote_headings("#x\nplain\n## y") == "##x\nplain\n### y"


def test_missing_summary_is_one_line(tmp_path):
    out = tmp_path / "summary.md"
    proc = run_cli("collect-summaries", "--parts", str(tmp_path / "none.md"), "--title", "t", "--output", str(out))
    assert "none.md: cannot read summary" in one_error_line(proc)
    assert not out.exists()
