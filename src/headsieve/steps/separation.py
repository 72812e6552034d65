"""The separation matrix of the head roles (``roles.separation``): planted heads on real corpora's pieces, scored
and tested by the real code; writes the tidy tables, ``separation.md`` and the figure.

Not a workflow rule: ``python -m headsieve.steps.separation --data <data mirror> --output docs/separation``
(README, "Separation matrix").
"""

from __future__ import annotations

import argparse
from pathlib import Path

CORPORA = ("ewt", "ewt_gold", "mrpc", "qnli")


def write_summaries(folder) -> None:
    """separation.md and the figure (separation.png/.pdf; EWT with random trees, MRPC, QNLI) from the tables
    in ``folder``."""
    import pandas as pd

    from headsieve.plots.separation import separation_figure
    from headsieve.roles.separation import markdown_summary

    folder = Path(folder)
    matrix = pd.read_parquet(folder / "separation.parquet")
    recall = pd.read_parquet(folder / "recall_by_bin.parquet")
    separation_figure(matrix[matrix["corpus"] != "ewt_gold"], folder / "separation")
    (folder / "separation.md").write_text(markdown_summary(matrix, recall))


def separation_matrix(data, output, n: int = 200, per_bin: int = 40, seed: int = 0) -> None:
    """The tables (``separation.parquet/.csv``, ``recall_by_bin.parquet/.csv``), the summary and the figure."""
    import pandas as pd

    from headsieve.io.atomic import write_frame
    from headsieve.roles.separation import real_rows, recall_by_bin, run_corpus, separation_tables

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    matrices, recalls = [], []
    for k, corpus in enumerate(CORPORA):
        rows = real_rows(data, corpus.replace("_gold", ""))
        heads, tests, tests_by_bin = run_corpus(rows, corpus, n, per_bin, seed + k)
        matrices.append(separation_tables(tests, heads))
        recalls.append(recall_by_bin(tests_by_bin, heads))
    matrix = pd.concat(matrices, ignore_index=True)
    recall = pd.concat(recalls, ignore_index=True)
    write_frame(matrix, out / "separation.parquet")
    write_frame(recall, out / "recall_by_bin.parquet")
    matrix.to_csv(out / "separation.csv", index=False)
    recall.to_csv(out / "recall_by_bin.csv", index=False)
    write_summaries(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the data mirror (ud/, glue/)")
    parser.add_argument("--output", required=True, help="folder for separation.parquet/.csv, recall_by_bin.*, figure")
    parser.add_argument("--summaries-only", action="store_true", help="redraw the figure and markdown from the tables")
    parser.add_argument("--n", type=int, default=200, help="inputs per corpus at the corpus's length distribution")
    parser.add_argument("--per-bin", type=int, default=40, help="more inputs from each length bin")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.summaries_only:
        return write_summaries(args.output)
    separation_matrix(args.data, args.output, args.n, args.per_bin, args.seed)


if __name__ == "__main__":
    main()
