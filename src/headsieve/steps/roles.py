"""Steps of ``workflow/rules/roles.smk``: role scores, tests, report, agreement of two maps, and the change of
the scores under fine-tuning."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from headsieve.errors import HeadsieveError
from headsieve.steps.settings import RoleTestSettings, StabilitySettings

log = logging.getLogger(__name__)


def score(model: str, corpus: str, tokens, dump, scores, head_stats, options: dict | None = None) -> None:
    """Rule ``score_roles``: dump + tokens -> per-sentence role ``scores`` and Clark-style ``head_stats``
    (role options: see :mod:`headsieve.roles.sieve`)."""
    from headsieve.io.atomic import write_frame, write_table
    from headsieve.roles.score import score_dump

    start = time.perf_counter()
    table, stats = score_dump(tokens, dump, model, corpus, {} if options is None else options)
    log.info(
        "scored %d rows (%d roles) in %.1f s",
        table.num_rows, len(table.column("role").unique()), time.perf_counter() - start,
    )  # fmt: skip
    write_table(table, scores)
    write_frame(stats, head_stats, metadata=table.schema.metadata)  # the same provenance


def test(scores, settings: RoleTestSettings, output) -> None:
    """Rule ``test_roles``: role scores -> one-sided t tests per head and role, corrected, with labels and the
    positional control of the syntactic roles; the settings and the scores' sha256 recorded."""
    from headsieve.io.atomic import write_frame
    from headsieve.io.provenance import provenance_metadata
    from headsieve.roles.controls import add_controls
    from headsieve.roles.score import read_scores_provenance
    from headsieve.roles.tests import read_scores, role_tests
    from headsieve.tokens import file_sha256

    s = settings
    made_from = read_scores_provenance(scores)
    frame = read_scores(scores)
    tests = role_tests(frame, s.tau, s.alpha, s.correction, tau_by_role=s.tau_by_role)
    labelled = tests[tests["label"]]
    log.info(
        "%d tests (tau %s, alpha %g, %s): %d labels on %d heads",
        len(tests), "by score form" if s.tau is None else s.tau, s.alpha, s.correction, len(labelled),
        labelled[["layer", "head"]].drop_duplicates().shape[0],
    )  # fmt: skip
    # positional control of the syntactic roles (roles/controls.py): paired test against decoys
    tests = add_controls(tests, frame, s.alpha, s.correction)
    syntactic = tests["diff_n"] > 0
    log.info(
        "positional control: %d of %d syntactic labels hold against shape-matched decoys",
        int(tests["label_controlled"].sum()), int(tests.loc[syntactic, "label"].sum()),
    )  # fmt: skip
    record = {
        "model": made_from.get("model"), "corpus": made_from.get("corpus"), "scores_sha256": file_sha256(scores),
        "inputs_fingerprint": made_from.get("inputs_fingerprint"), "tau": s.tau, "tau_by_role": s.tau_by_role,
        "alpha": s.alpha, "correction": s.correction,
    }  # fmt: skip
    write_frame(tests, output, metadata=provenance_metadata(record))


def same_inputs(before, after: list) -> None:
    """Paired tests pair inputs: every scores table must record the same corpus and inputs (fingerprint of the
    sentence indexes and their word pieces) as ``before``, where both recorded them."""
    from headsieve.roles.score import read_scores_provenance

    reference = read_scores_provenance(before)
    for path in after:
        record = read_scores_provenance(path)
        for key in ("corpus", "inputs_fingerprint"):
            if reference.get(key) is not None and record.get(key) is not None and reference[key] != record[key]:
                raise HeadsieveError(f"{path}: scores of other inputs than {before} ({key} differs): not paired")


def check_made_from(tests_path, scores_path) -> None:
    """A tests table recorded the sha256 of the scores it tested: the scores given beside it must be those."""
    import pyarrow.parquet as pq

    from headsieve.io.provenance import parse_provenance
    from headsieve.tokens import file_sha256

    try:
        meta = pq.read_schema(tests_path).metadata or {}
    except Exception as err:
        raise HeadsieveError(f"{tests_path}: cannot read role tests ({str(err).splitlines()[0]})") from None
    recorded = parse_provenance(meta, tests_path, "rerun the test_roles step").get("scores_sha256")
    if recorded is not None and recorded != file_sha256(scores_path):
        raise HeadsieveError(f"{tests_path}: made from another scores table than {scores_path} (rerun the test_roles step)")


def report(tests, scores, figures, tables, summary, stability: StabilitySettings = StabilitySettings()) -> None:
    """Rule ``report_roles``: role tests and scores -> figures (PNG + PDF) in ``figures``, the tables
    colocation, stability and heads_per_layer (Parquet) in ``tables``, and a markdown ``summary``."""
    import pandas as pd

    from headsieve.io.atomic import write_frame, write_text
    from headsieve.plots import roles as plots
    from headsieve.roles.analysis import (
        colocation_tests,
        heads_per_layer,
        label_stability,
        role_order,
        stability_lines,
        summary_markdown,
    )
    from headsieve.roles.tests import read_scores

    check_made_from(tests, scores)
    frame = pd.read_parquet(tests)
    if frame.empty:
        raise HeadsieveError(f"{tests}: no tests")
    first = frame.iloc[0]
    title = f"{first['model']} on {first['corpus']}"
    figures = Path(figures)
    order = role_order(frame["role"].unique())
    plots.role_maps(frame, [r for r in order if not r.startswith("dep:")], figures / "role_map", title)
    relations = [r for r in order if r.startswith("dep:")]
    plots.role_maps(
        frame, relations, figures / "relation_map", f"{title}: one role per dependency relation",
        empty_note="no relation roles: the corpus has no dependency trees",
    )  # fmt: skip
    plots.layer_counts(frame, figures / "heads_per_layer", title)
    plots.p_values(frame, figures / "pvalues", title)
    colocation = colocation_tests(frame, correction=str(first["correction"]))
    plots.colocation_figure(frame, colocation, figures / "colocation", title)
    if "label_controlled" in frame:  # the syntactic labels that hold against the positional control, too
        controlled = colocation_tests(frame, correction=str(first["correction"]), controlled=True)
        colocation = pd.concat([colocation, controlled], ignore_index=True)
    stable = label_stability(read_scores(scores), frame, seed=stability.seed, n_boot=stability.bootstrap)
    tables = Path(tables)
    write_frame(colocation, tables / "colocation.parquet")
    write_frame(stable, tables / "stability.parquet")
    write_frame(heads_per_layer(frame), tables / "heads_per_layer.parquet")
    text = summary_markdown(frame, f"Head roles: {title}", colocation=colocation)
    write_text(text + "\n".join(stability_lines(stable)) + "\n", summary)
    log.info("wrote figures to %s and the summary to %s", figures, summary)


def agreement(a, b, name_a: str, name_b: str, title: str, output, summary) -> None:
    """Rule ``roles_agreement``: two role maps of one model (e.g. gold against parsed trees) -> agreement per
    role (``output``, Parquet) and a markdown ``summary``."""
    import pyarrow.parquet as pq

    from headsieve.io.atomic import write_frame, write_text
    from headsieve.roles.analysis import agreement_markdown, map_agreement

    tables = []
    for path in (a, b):
        try:
            tables.append(pq.read_table(path).to_pandas())
        except Exception as err:
            raise HeadsieveError(f"{path}: cannot read role tests ({str(err).splitlines()[0]})") from None
    models = [sorted(set(t["model"].astype(str))) for t in tables]
    if models[0] != models[1]:
        raise HeadsieveError(f"{b}: role tests of model {models[1]}, not {models[0]} as {a}")
    frame = map_agreement(*tables)
    write_frame(frame, output)
    write_text(agreement_markdown(frame, name_a, name_b, title), summary)


def compare(
    before, after: list, seeds: list, task: str, *, output, agreement, by_layer, summary, figure, title: str,
    alpha: float = 0.05, correction: str = "bh",
) -> None:  # fmt: skip
    """Rule ``compare_roles``: per-sentence role scores of the pre-trained model (``before``) and of one
    fine-tuned model per seed (``after``, in the order of ``seeds``) -> paired tests per seed, head and role
    (``output``), their agreement over seeds, the change by layer, a markdown summary and a figure."""
    from headsieve.io.atomic import write_frame, write_text
    from headsieve.plots.roles import finetuning_change as change_figure
    from headsieve.roles.analysis import change_agreement, change_by_layer, change_summary_markdown, finetuning_change
    from headsieve.roles.tests import read_scores

    if len(after) != len(seeds) or len(set(seeds)) != len(seeds):
        raise HeadsieveError(f"--after has {len(after)} tables for the seeds {seeds}: one per seed")
    reference = read_scores(before)
    tuned = {seed: read_scores(path) for seed, path in zip(seeds, after)}
    same_inputs(before, after)
    for seed, path in zip(seeds, after):
        if not set(tuned[seed]["sentence_index"].unique()) & set(reference["sentence_index"].unique()):
            raise HeadsieveError(f"{path}: no sentence in common with {before} (another corpus?)")
    change = finetuning_change(reference, tuned, task, alpha, correction)
    agrees = change_agreement(change)
    layers = change_by_layer(change, level=1 - alpha)
    write_frame(change, output)
    write_frame(agrees, agreement)
    write_frame(layers, by_layer)
    write_text(change_summary_markdown(change, agrees, layers, title), summary)
    change_figure(layers, agrees, figure, title)
    log.info("%d seeds: %d head x role scores changed in every seed with the same sign", len(seeds), int(agrees["agrees"].sum()))
