"""The llm steps (workflow/rules/llm.smk) on tiny random decoders saved as model folders: role inputs, role
scores per input kind, tests per query head and key-value group, masks, evaluations and the report; the
paired comparisons against planted differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from headsieve.config import SCHEMA_PATH, validate_config
from headsieve.steps import llm as S
from headsieve.steps.settings import Corpus, Model, RoleTestSettings

from support.decoder import HEADS, KV_HEADS, LAYERS
from support.llm import tiny_decoder_folder, tiny_llm_section, word_tokenizer

EWT_DEV = "ud/UD_English-EWT/en_ewt-ud-dev.conllu"
EWT_TEST = "ud/UD_English-EWT/en_ewt-ud-test.conllu"


def with_record_of(source, frame: pd.DataFrame, dest) -> None:
    """``frame`` written to ``dest`` with the provenance record of the artifact ``source`` (a planted edit)."""
    from headsieve.io.atomic import write_frame
    from headsieve.io.provenance import provenance_metadata, read_file_provenance

    write_frame(frame, dest, metadata=provenance_metadata(read_file_provenance(source, "table", "")))


def llm_settings() -> dict:
    corpora = {"ewt_dev": {"format": "conllu", "path": EWT_DEV}, "ewt_test": {"format": "conllu", "path": EWT_TEST}}
    return validate_config({"corpora": corpora, "llm": tiny_llm_section()}, SCHEMA_PATH)["llm"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, one_thread):
    """Every step of the llm rules on a tiny Llama with grouped-query attention (4 query, 2 key-value heads)."""
    out = tmp_path_factory.mktemp("llm_steps")
    model = Model("tiny", {"source": str(tiny_decoder_folder(out / "model", "llama", data / EWT_DEV))})
    cfg = llm_settings()
    text = [Corpus("ewt_dev", {"format": "conllu"}, [data / EWT_DEV])]
    S.role_scores(model, text, cfg["inputs"], cfg["roles"], out / "role_scores.parquet")
    r = cfg["roles"]
    S.role_tests(out / "role_scores.parquet", RoleTestSettings(r["alpha"], r["correction"], r["tau"], None),
                 out / "role_tests.parquet", out / "kv_group_tests.parquet")  # fmt: skip
    p = cfg["pruning"]
    evaluations = []
    for seed in p["seeds"]:
        masks = out / f"seed{seed}/masks.parquet"
        S.select_masks(model, out / "role_tests.parquet", p["strategies"], p["fractions"], seed, masks)
        evaluations.append(out / f"seed{seed}/evaluations.parquet")
        S.evaluate(model, masks, p["evaluation"], Corpus("ewt_test", {"format": "conllu"}, [data / EWT_TEST]),
                   evaluations[-1], max_length=cfg["inputs"]["max_length"])  # fmt: skip
    S.report("tiny", out / "role_tests.parquet", out / "kv_group_tests.parquet", evaluations, out / "figures",
             out / "evaluations.parquet", out / "comparisons.parquet", out / "summary.md")  # fmt: skip
    return out, model, cfg


def test_text_inputs_align_pieces_with_words_and_mark_punctuation(data):
    from headsieve.io.conllu import read_conllu

    tokenizer = word_tokenizer(data / EWT_DEV)
    inputs, too_long = S.text_role_inputs([data / EWT_DEV], tokenizer, 30, 1000)
    sentences = read_conllu(data / EWT_DEV)[:30]
    assert len(inputs) == 30 and too_long == 0
    for (ids, facts), sentence in zip(inputs, sentences):
        assert ids[0] == tokenizer.bos_token_id and facts.piece_word[0] == -1 and not facts.delimiter[0]
        assert len(ids) == len(facts.piece_word) == len(facts.delimiter)
        assert list(facts.word_head) == list(sentence.heads)
        words = facts.piece_word[1:]
        assert np.all(np.diff(words) >= 0) and words.min() >= 0  # word order; every piece in a token
        # a piece merging two tokens (")." after a word) belongs to the first: the last token may have none
        assert words[-1] >= sentence.word_token.index(max(len(sentence.tokens) - 2, 0))
        for pos in range(1, len(ids)):
            word = facts.piece_word[pos]
            assert facts.delimiter[pos] == (sentence.upos[word] == "PUNCT")
            form = sentence.tokens[sentence.word_token[word]]
            if ids[pos] != tokenizer.unk_token_id and form.isalpha():
                assert tokenizer.convert_ids_to_tokens(int(ids[pos])) == form.lower()
    short, dropped = S.text_role_inputs([data / EWT_DEV], tokenizer, 30, 12)
    assert len(short) == 30 and dropped > 0 and max(len(ids) for ids, _ in short) <= 12


def test_text_pieces_of_a_byte_level_tokenizer_spell_their_tokens(data, roberta_tokenizer):
    """The sentence's own text is encoded (no space before punctuation) and each piece goes to the surface token
    it lies in: the pieces of a token spell it, but where the tokenizer merges across two tokens."""
    from headsieve.io.conllu import read_conllu

    checked = wrong = 0
    for sentence in read_conllu(data / EWT_DEV)[:80]:
        ids, words = S.sentence_pieces(roberta_tokenizer, sentence)
        assert len(ids) == len(roberta_tokenizer(sentence.text, add_special_tokens=False)["input_ids"])
        first = {}
        for w, tok in enumerate(sentence.word_token):
            first.setdefault(tok, w)
        for tok, form in enumerate(sentence.tokens):
            pieces = [i for i, w in zip(ids, words) if w == first[tok]]
            spelled = roberta_tokenizer.decode(pieces).strip()
            checked += 1
            wrong += spelled != form
    assert checked > 1000 and wrong / checked < 0.01, (wrong, checked)


def test_synthetic_inputs_are_seeded_and_keep_special_ids_out():
    spec = {"count": 5, "length": 7, "seed": 3}
    a, b = S.repeated_sequences(spec, 64, 4, 1), S.repeated_sequences(spec, 64, 4, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 5  # each sequence its own draw
    for x in a:
        assert x[0] == 1 and len(x) == 15 and np.array_equal(x[1:8], x[8:]) and x[1:].min() >= 4
    other = S.repeated_sequences(dict(spec, seed=4), 64, 4, 1)
    assert not any(np.array_equal(x, y) for x, y in zip(a, other))
    needles = S.needle_inputs({"count": 3, "context": 10, "needle": 4, "seed": 0}, 64, 4, 1)
    for n in needles:
        body = n.tokens[1:]
        assert (body == 4).sum() == 2  # the marker before the needle and before its copy, never drawn otherwise
        assert np.array_equal(n.tokens[n.copy_source], n.tokens[n.copy_query + 1])


def test_role_scores_one_table_over_input_kinds(run):
    from headsieve.io.provenance import read_file_provenance

    out, _, cfg = run
    scores = pd.read_parquet(out / "role_scores.parquet")
    assert list(scores.columns) == S.SCORE_COLUMNS
    for source, roles in S.ROLE_SOURCES.items():
        assert set(scores.loc[scores.source == source, "role"]) <= set(roles)
    assert set(scores["source"]) == {"text", "repeated", "needles"}
    inputs = cfg["inputs"]
    n = {k: scores.loc[scores.source == k, "input"].nunique() for k in ("text", "repeated", "needles")}
    assert n["repeated"] == inputs["repeated"]["count"] and n["needles"] == inputs["needles"]["count"]
    assert 0 < n["text"] <= inputs["max_sentences"]
    # one input index over every kind: text first, then repeated, then needles
    ranges = scores.groupby("source")["input"].agg(["min", "max"])
    assert ranges.loc["text", "max"] < ranges.loc["repeated", "min"]
    assert ranges.loc["repeated", "max"] < ranges.loc["needles", "min"]
    assert (scores["kv_group"] == scores["head"] // (HEADS // KV_HEADS)).all()
    per_input = scores.groupby(["input", "role"]).size()
    assert (per_input == LAYERS * HEADS).all()  # every query head scored once per input and role
    record = read_file_provenance(out / "role_scores.parquet", "scores", "")
    assert record["model"] == "tiny" and record["stand_in"] == "" and record["n_inputs"]["repeated"] == 6


def test_role_tests_per_query_head_and_per_group(run):
    out, _, cfg = run
    tests = pd.read_parquet(out / "role_tests.parquet")
    groups = pd.read_parquet(out / "kv_group_tests.parquet")
    roles = pd.read_parquet(out / "role_scores.parquet")["role"].unique()
    assert len(tests) == LAYERS * HEADS * len(roles) and len(groups) == LAYERS * KV_HEADS * len(roles)
    assert set(tests["source"].dropna()) == {"text", "repeated", "needles"} and tests["source"].notna().all()
    tested = tests["p_adj"].notna()
    assert ((tests.loc[tested, "p_adj"] < cfg["roles"]["alpha"]) == tests.loc[tested, "label"]).all()
    assert (tests.loc[tested, "p_adj"] >= tests.loc[tested, "p"] - 1e-12).all()  # a correction only raises p
    # a group's mean is its query heads' mean per input, averaged
    scores = pd.read_parquet(out / "role_scores.parquet")
    role = "causal:induction"
    sub = scores[scores.role == role]
    expected = sub.groupby(["input", "layer", "kv_group"])["score"].mean().groupby(["layer", "kv_group"]).mean()
    got = groups[groups.role == role].set_index(["layer", "kv_group"])["mean"]
    assert np.allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy())


def test_masks_have_the_share_of_heads(run):
    out, _, cfg = run
    for seed in cfg["pruning"]["seeds"]:
        masks = pd.read_parquet(out / f"seed{seed}/masks.parquet")
        assert set(masks["strategy"]) == set(cfg["pruning"]["strategies"]) and (masks["seed"] == seed).all()
        for (strategy, fraction), rows in masks.groupby(["strategy", "fraction"]):
            assert (rows.layer >= 0).sum() == round(fraction * LAYERS * HEADS), (strategy, fraction)
    random = [set(zip(*pd.read_parquet(out / f"seed{s}/masks.parquet").query("strategy == 'random' and fraction == 0.5")
                      [["layer", "head"]].to_numpy().T)) for s in cfg["pruning"]["seeds"]]  # fmt: skip
    assert len({frozenset(r) for r in random}) > 1  # seeds draw other heads


def test_role_masks_take_the_labelled_heads_strongest_first(run, tmp_path):
    out, model, cfg = run
    tests = pd.read_parquet(out / "role_tests.parquet")
    planted = {(2, 1): 0.9, (0, 3): 0.8, (1, 0): 0.7}  # labelled sink heads and their mean scores
    sink = tests["role"] == "causal:sink"
    tests.loc[sink, "label"] = False
    for (layer, head), mean in planted.items():
        at = sink & (tests.layer == layer) & (tests["head"] == head)
        tests.loc[at, ["label", "mean"]] = [True, mean]
    with_record_of(out / "role_tests.parquet", tests, tmp_path / "tests.parquet")
    S.select_masks(model, tmp_path / "tests.parquet", ["prune_role:causal:sink"], [0.25], 1, tmp_path / "masks.parquet")
    masks = pd.read_parquet(tmp_path / "masks.parquet")
    heads = list(zip(masks.layer, masks["head"]))
    assert len(heads) == 3 and set(heads) == set(planted)  # 25% of 12 heads: exactly the labelled ones
    S.select_masks(model, tmp_path / "tests.parquet", ["prune_role:causal:sink"], [0.5], 1, tmp_path / "half.parquet")
    half = set(zip(*pd.read_parquet(tmp_path / "half.parquet")[["layer", "head"]].to_numpy().T))
    assert len(half) == 6 and set(planted) <= half


def test_evaluations_of_every_mask_and_the_unpruned_model(run, data):
    from headsieve.models.load import load_decoder, load_tokenizer
    from headsieve.tasks.lm import perplexity

    out, model, cfg = run
    frames = [pd.read_parquet(out / f"seed{s}/evaluations.parquet") for s in cfg["pruning"]["seeds"]]
    frame = pd.concat(frames)
    assert list(frame.columns) == S.EVALUATION_COLUMNS
    assert set(frame["metric"]) == set(S.METRICS)
    zero = frame[frame.fraction == 0]
    assert zero.groupby("metric")["value"].nunique().eq(1).all()  # one unpruned model, whatever the strategy
    lm = load_decoder(model.key, model.spec)
    tokenizer = load_tokenizer(model.key, model.spec)
    ev = cfg["pruning"]["evaluation"]
    sequences = S.perplexity_sequences([data / EWT_TEST], tokenizer, ev["max_sentences"], cfg["inputs"]["max_length"])
    assert np.isclose(zero.loc[zero.metric == "perplexity", "value"].iloc[0], perplexity(lm, sequences)["perplexity"])
    pruned = frame[frame.fraction > 0]
    assert (pruned.heads_pruned == (pruned.fraction * LAYERS * HEADS).round()).all()
    masked = frame[(frame.fraction == 0.5) & (frame.metric == "perplexity")]
    assert (masked["value"] != zero.loc[zero.metric == "perplexity", "value"].iloc[0]).all()  # masking changes the model


def test_kv_groups_removed_counts_whole_groups():
    from headsieve.models.headspace import HeadSpace

    space = HeadSpace.from_shapes({"decoder": (3, 4)}, {"decoder": 2})
    assert S.kv_groups_removed(space, [("decoder", 0, 0), ("decoder", 0, 1), ("decoder", 1, 1), ("decoder", 1, 2)]) == 1
    assert S.kv_groups_removed(space, [("decoder", 2, h) for h in range(4)]) == 2
    assert S.kv_groups_removed(space, []) == 0


def test_report_tables_figures_and_summary(run):
    out, _, cfg = run
    evaluations = pd.read_parquet(out / "evaluations.parquet")
    p = cfg["pruning"]
    assert len(evaluations) == len(p["seeds"]) * len(p["strategies"]) * len(p["fractions"]) * len(S.METRICS)
    comparisons = pd.read_parquet(out / "comparisons.parquet")
    nonzero = [f for f in p["fractions"] if f > 0]
    assert len(comparisons) == len(S.METRICS) * len(nonzero) * (len(p["strategies"]) - 1)
    assert set(comparisons["against"]) == {"random"} and (comparisons["seeds"] == len(p["seeds"])).all()
    for name in S.FIGURES:
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    summary = (out / "summary.md").read_text()
    roles = pd.read_parquet(out / "role_tests.parquet")["role"].unique()
    assert all(f"| {role} |" in summary for role in roles)
    assert "(unpruned)" in summary and "strategy minus random" in summary


def test_comparisons_of_evaluation_rows_find_a_planted_difference_and_not_a_null_one():
    from headsieve.pruning.lm import lm_comparisons

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(1, 9):
        base = 10 + rng.normal(0, 1)  # seeds differ: pairing removes it
        for strategy, shift in (("random", 0.0), ("harms", 1.0), ("same", 0.0)):
            value = base + shift + rng.normal(0, 0.2)
            rows.append(("m", strategy, 0.5, seed, 0, 0, "copying_loss", value, 10))
            rows.append(("m", strategy, 0.0, seed, 0, 0, "copying_loss", base, 10))
    frame = pd.DataFrame(rows, columns=S.EVALUATION_COLUMNS)
    table = lm_comparisons(frame, S.BASELINE, keys=("model",), correction="holm").set_index("strategy")
    assert set(table.index) == {"harms", "same"} and (table["fraction"] == 0.5).all()
    assert table.loc["harms", "p_adj"] < 0.01 and table.loc["harms", "ci_low"] < 1.0 < table.loc["harms", "ci_high"]
    assert table.loc["same", "p_adj"] > 0.05 and table.loc["same", "ci_low"] < 0 < table.loc["same", "ci_high"]


def test_a_converted_model_is_named_a_stand_in(tmp_path):
    import json

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    model = Model("m", {"source": str(folder)})
    assert S.stand_in_note(model) == ""
    (folder / "conversion.json").write_text(json.dumps({"gguf_file": "x.Q4_1.gguf", "note": "4-bit weights dequantised"}))
    assert S.stand_in_note(model) == "x.Q4_1.gguf: 4-bit weights dequantised"


def test_chunked_role_scores_equal_the_stored_path(run, data, tmp_path):
    out, model, cfg = run
    text = [Corpus("ewt_dev", {"format": "conllu"}, [data / EWT_DEV])]
    S.role_scores(model, text, cfg["inputs"], cfg["roles"], tmp_path / "chunked.parquet", chunk=5)
    stored, chunked = (pd.read_parquet(p) for p in (out / "role_scores.parquet", tmp_path / "chunked.parquet"))
    keys = ["source", "input", "layer", "head", "role"]
    both = stored.merge(chunked, on=keys, suffixes=("", "_chunked"))
    assert len(both) == len(stored) == len(chunked)
    assert np.allclose(both["score"], both["score_chunked"], atol=1e-5, equal_nan=True)


def test_importance_from_the_language_model_loss_drives_the_importance_strategy(run, data, tmp_path):
    out, model, cfg = run
    text = [Corpus("ewt_dev", {"format": "conllu"}, [data / EWT_DEV])]
    S.importance(model, text, cfg["inputs"], tmp_path / "importance.parquet")
    table = pd.read_parquet(tmp_path / "importance.parquet")
    assert len(table) == LAYERS * HEADS and (table["importance"] >= 0).all()
    norms = table.groupby("layer")["importance"].apply(lambda v: float(np.sqrt((v**2).sum())))
    assert np.allclose(norms, 1.0)  # normalised per layer (Michel et al.)
    S.select_masks(model, None, ["importance"], [0.25], 1, tmp_path / "masks.parquet",
                   importance=tmp_path / "importance.parquet")
    masked = set(zip(*pd.read_parquet(tmp_path / "masks.parquet")[["layer", "head"]].to_numpy().T))
    order = table.sort_values("importance")
    assert masked == set(zip(order.layer[:3], order["head"][:3]))  # the 3 least important of 12


def test_a_corpus_max_sentences_reads_only_that_prefix(data):
    tokenizer = word_tokenizer(data / EWT_DEV)
    capped, _ = S.text_role_inputs([data / EWT_DEV], tokenizer, 30, 1000, read=7)
    full, _ = S.text_role_inputs([data / EWT_DEV], tokenizer, 30, 1000)
    assert len(capped) == 7 and all(np.array_equal(a[0], b[0]) for a, b in zip(capped, full))


# ------------------------------------------------------------------------------------------------ provenance


def test_masks_refuse_role_tests_without_a_record_or_of_another_model(run, tmp_path):
    from headsieve.errors import HeadsieveError

    out, model, cfg = run
    tests = pd.read_parquet(out / "role_tests.parquet")
    tests.to_parquet(tmp_path / "bare.parquet")  # no record: made by another tool
    with pytest.raises(HeadsieveError, match=r"bare\.parquet: records no provenance.*rerun rule llm_role_tests"):
        S.select_masks(model, tmp_path / "bare.parquet", ["prune_role:causal:sink"], [0.25], 1, tmp_path / "m.parquet")
    other = Model("other", model.spec)  # the same folder under another key: the tests are of "tiny"
    with pytest.raises(HeadsieveError, match=r"role_tests\.parquet: made for model 'tiny', not 'other'"):
        S.select_masks(other, out / "role_tests.parquet", ["random"], [0.25], 1, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()  # no partial output


def test_masks_record_what_they_were_drawn_from(run):
    from headsieve.io.provenance import read_file_provenance
    from headsieve.tokens import file_sha256

    out, _, cfg = run
    record = read_file_provenance(out / "seed1/masks.parquet", "masks", "")
    assert record["rule"] == "llm_masks" and record["model"] == "tiny" and record["seed"] == 1
    assert record["strategies"] == cfg["pruning"]["strategies"]
    assert record["tests_sha256"] == file_sha256(out / "role_tests.parquet") and record["importance_sha256"] is None


def test_evaluate_refuses_masks_without_a_record_or_of_another_model(run, data, tmp_path):
    from headsieve.errors import HeadsieveError

    out, model, cfg = run
    pd.read_parquet(out / "seed1/masks.parquet").to_parquet(tmp_path / "bare.parquet")
    perplexity = Corpus("ewt_test", {"format": "conllu"}, [data / EWT_TEST])
    ev = cfg["pruning"]["evaluation"]
    with pytest.raises(HeadsieveError, match=r"bare\.parquet: records no provenance.*rerun rule llm_masks"):
        S.evaluate(model, tmp_path / "bare.parquet", ev, perplexity, tmp_path / "e.parquet")
    with pytest.raises(HeadsieveError, match=r"masks\.parquet: made for model 'tiny', not 'other'.*llm_masks"):
        S.evaluate(Model("other", model.spec), out / "seed1/masks.parquet", ev, perplexity, tmp_path / "e.parquet")
    assert not (tmp_path / "e.parquet").exists()


def report_into(out, evaluations, tests=None):
    S.report("tiny", tests or out / "role_tests.parquet", out / "kv_group_tests.parquet", evaluations,
             out / "again" / "figures", out / "again" / "e.parquet", out / "again" / "c.parquet", out / "again" / "s.md")  # fmt: skip


def test_report_refuses_evaluations_that_do_not_add_up(run, tmp_path):
    from headsieve.errors import HeadsieveError

    out, _, cfg = run
    seeds = [out / f"seed{s}/evaluations.parquet" for s in cfg["pruning"]["seeds"]]
    with pytest.raises(HeadsieveError, match=r"seed1/evaluations\.parquet: evaluation .* is also in .*seed1"):
        report_into(out, seeds + seeds[:1])  # a seed given twice
    short = pd.read_parquet(seeds[1])
    short = short[~((short.strategy == "random") & (short.fraction > 0))]
    with_record_of(seeds[1], short, tmp_path / "short.parquet")
    with pytest.raises(HeadsieveError, match=r"seed \d: no evaluation .*'random'"):
        report_into(out, [seeds[0], tmp_path / "short.parquet", *seeds[2:]])  # a seed lacking cells
    pd.read_parquet(seeds[0]).to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(HeadsieveError, match=r"bare\.parquet: records no provenance.*rerun rule llm_evaluate"):
        report_into(out, [tmp_path / "bare.parquet", *seeds[1:]])
    # masks drawn from other role tests than the ones the report shows
    tests = pd.read_parquet(out / "role_tests.parquet")
    with_record_of(out / "role_tests.parquet", tests.iloc[::-1], tmp_path / "other_tests.parquet")
    with pytest.raises(HeadsieveError, match=r"evaluations\.parquet: its masks were drawn from other role tests"):
        report_into(out, seeds, tests=tmp_path / "other_tests.parquet")


def test_report_records_its_inputs(run):
    from headsieve.io.provenance import read_file_provenance, record_sha256

    out, _, cfg = run
    made = read_file_provenance(out / "evaluations.parquet", "evaluations", "")
    seeds = [out / f"seed{s}/evaluations.parquet" for s in cfg["pruning"]["seeds"]]
    assert made["inputs"] == sorted(record_sha256(read_file_provenance(p, "e", "")) for p in seeds)
    assert made["seeds"] == cfg["pruning"]["seeds"]


def test_findings_state_what_the_planted_comparisons_say():
    from headsieve.pruning.lm import lm_comparisons

    rng = np.random.default_rng(1)
    rows = []
    for seed in range(1, 7):
        base = 5 + rng.normal(0, 0.5)
        for strategy, copy_shift, acc_shift in (("random", 0.0, 0.0), ("prune_role:causal:induction", 2.0, -0.4),
                                                ("prune_role:causal:sink", 0.0, 0.0)):  # fmt: skip
            rows.append(("m", strategy, 0.25, seed, 3, 0, "copying_loss", base + copy_shift + rng.normal(0, 0.1), 9))
            rows.append(("m", strategy, 0.25, seed, 3, 0, "retrieval_accuracy", 0.8 + acc_shift + rng.normal(0, .02), 9))
    evaluations = pd.DataFrame(rows, columns=S.EVALUATION_COLUMNS)
    comparisons = lm_comparisons(evaluations, S.BASELINE, keys=("model",), correction="holm")
    heads = [(layer, head) for layer in range(3) for head in range(4)]
    tests = pd.DataFrame([("m", role, layer, head, (layer, head) in labelled, 0.5)
                          for role, labelled in (("causal:induction", {(0, 1), (2, 3)}), ("causal:sink", {(1, 1)}))
                          for layer, head in heads], columns=["model", "role", "layer", "head", "label", "mean"])  # fmt: skip
    lines = S.findings_lines(tests, evaluations, comparisons)
    assert len(lines) == 4  # two role strategies x two metrics; random itself is the baseline
    by = {(line.split("`")[1], line.split(", ")[1]): line for line in lines}
    induction = by[("prune_role:causal:induction", "copying_loss")]
    assert "3 heads pruned, 2 of them labelled causal:induction (the other 1 unlabelled" in induction
    assert ", 2 labelled in all;" in induction
    assert induction.endswith("harms more than random.")
    assert by[("prune_role:causal:induction", "retrieval_accuracy")].endswith("harms more than random.")  # lower acc
    for metric in ("copying_loss", "retrieval_accuracy"):
        sink = by[("prune_role:causal:sink", metric)]
        assert "1 of them labelled causal:sink" in sink and "no difference from random found" in sink
    flat = evaluations.assign(value=np.where(evaluations.metric == "retrieval_accuracy", 0.0, evaluations.value))
    untestable = S.findings_lines(tests, flat, lm_comparisons(flat, S.BASELINE, keys=("model",), correction="holm"))
    assert sum("retrieval_accuracy" in line and "not testable" in line for line in untestable) == 2  # all zero
    summary = S.summary_markdown("t", "", tests.assign(source="text", n=4, alpha=0.05, correction="bh"),
                                 tests.rename(columns={"head": "kv_group"}), evaluations, comparisons)  # fmt: skip
    assert "## What the data say" in summary and all(line in summary for line in lines)
