"""The translation experiment: parallel PUD data, BLEU/chrF, gate importance, the many-mask translation
evaluator, head roles and the commands (tiny random models, tiny tokenizer; the strategies: test_strategies.py)."""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from support.seq2seq import EOS, pud_path, tiny_model, tiny_tokenizer

from headsieve.errors import HeadsieveError
from headsieve.models import heads as S
from headsieve.models.headspace import KINDS, HeadSpace
from headsieve.models.masking import check_mask, mask_from_heads
from headsieve.translation import data as D
from headsieve.translation.bleu import bleu_tokenizer, corpus_scores
from headsieve.translation.evaluate import TranslationEvaluator
from headsieve.translation.importance import head_importance, pair_batches


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def en_de():
    return D.read_parallel(pud_path("en"), pud_path("de"))


def _texts(path, key: str) -> dict[str, str]:
    out, sid = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# sent_id ="):
            sid = line.split("=", 1)[1].strip()
        elif line.startswith(f"# {key} ="):
            out[sid] = line.split("=", 1)[1].strip()
    return out


# -------------------------------------------------------------------------------------------------- data


def test_pud_pairs_align_by_sent_id(en_de):
    assert len(en_de) == 1000
    assert en_de[0].sent_id == "n01001011"
    assert en_de[0].source.startswith("“While much of the digital transition")
    assert en_de[0].target.startswith("„Ein Großteil des digitalen Übergangs")
    german = _texts(pud_path("de"), "text")
    assert all(german[p.sent_id] == p.target for p in en_de)


def test_icelandic_is_aligned_by_sent_id_not_by_position():
    """Icelandic PUD lists the sentences in another order; its ``# text_en`` lines give the English
    sentence of each one, so they check the alignment."""
    path = pud_path("is")
    english_of = _texts(path, "text_en")
    pairs = D.read_parallel(pud_path("en"), path)
    assert len(pairs) == 1000
    norm = lambda s: " ".join(s.split())  # noqa: E731
    icelandic = _texts(path, "text")
    assert all(icelandic[p.sent_id] == p.target for p in pairs)
    same = sum(norm(english_of[p.sent_id]) == norm(p.source) for p in pairs)
    assert same >= 998  # two text_en lines differ from English PUD by a character
    in_file_order = list(icelandic)
    assert sum(a != p.sent_id for a, p in zip(in_file_order, pairs)) > 400  # positions would pair wrongly
    reverse = D.read_parallel(path, pud_path("en"))
    assert [p.sent_id for p in reverse] == in_file_order  # source order


def test_alignment_errors_and_split(en_de):
    source = {"a": "x", "b": "y", "c": "z"}
    with pytest.raises(HeadsieveError, match="sent_id 'c'") as err:
        D.align(source, {"a": "1", "b": "2"})
    assert "\n" not in str(err.value)
    assert [p.sent_id for p in D.align(source, {"b": "2", "a": "1"}, strict=False)] == ["a", "b"]
    with pytest.raises(HeadsieveError, match="share no sent_id"):
        D.align(source, {"q": "1"}, strict=False)
    pool, test = D.split_pairs(en_de, 200, seed=0)
    assert len(pool) == 200 and len(test) == 800
    assert not {p.sent_id for p in pool} & {p.sent_id for p in test}
    assert D.split_pairs(en_de, 200, seed=0) == (pool, test)
    assert D.split_pairs(en_de, 200, seed=1)[0] != pool
    with pytest.raises(HeadsieveError, match="must leave test pairs"):
        D.split_pairs(en_de[:5], 5, seed=0)


# -------------------------------------------------------------------------------------------------- BLEU


def _hand_bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU from clipped n-gram counts (lower-case words, no punctuation: 13a = whitespace split)."""
    matches, totals, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / 4)


def test_bleu_and_chrf_on_a_known_example():
    import sacrebleu

    hyps = ["the quick brown fox jumps over the dog", "we are going home now"]
    refs = ["the quick brown fox jumped over the lazy dog", "we are going home"]
    row = corpus_scores(hyps, refs)
    # 1-grams 11/13, 2-grams 7/11, 3-grams 4/9, 4-grams 2/7; 13 words vs 13 reference words: BP 1
    expected = 100 * math.exp((math.log(11 / 13) + math.log(7 / 11) + math.log(4 / 9) + math.log(2 / 7)) / 4)
    assert row["bleu"] == pytest.approx(expected, abs=1e-9)
    assert row["bleu"] == pytest.approx(_hand_bleu(hyps, refs), abs=1e-9)
    assert row["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert row["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert row["bleu_bp"] == 1.0 and (row["sys_len"], row["ref_len"]) == (13, 13)
    assert [round(row[f"bleu_p{n}"], 6) for n in range(1, 5)] == [
        round(100 * x, 6) for x in (11 / 13, 7 / 11, 4 / 9, 2 / 7)
    ]
    assert "tok:13a" in row["bleu_signature"] and "nc:6" in row["chrf_signature"]
    perfect = corpus_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    short = corpus_scores(["the quick brown fox"], ["the quick brown fox jumped over"])
    assert short["bleu_bp"] == pytest.approx(math.exp(1 - 6 / 4))


def test_bleu_options_and_errors():
    assert bleu_tokenizer("zh") == "zh" and bleu_tokenizer("de") == "13a" and bleu_tokenizer(None) == "13a"
    zh = corpus_scores(["我们回家"], ["我们回家了"], tokenize="zh")
    assert "tok:zh" in zh["bleu_signature"]
    with pytest.raises(HeadsieveError, match="2 translations for 1 references"):
        corpus_scores(["a", "b"], ["a"])
    with pytest.raises(HeadsieveError, match="tokeniser 'nope'"):
        corpus_scores(["a"], ["a"], tokenize="nope")


# -------------------------------------------------------------------------------------------- masks


def test_masks_from_heads():
    facts = HeadSpace.from_shapes({"encoder": (2, 4), "decoder": (2, 4), "cross": (2, 4)})
    mask = mask_from_heads(facts, [("cross", 1, 2), ("encoder", 0, 0)])
    assert mask["cross"][1, 2] == 0 and mask["encoder"][0, 0] == 0 and sum(m.sum() for m in mask.values()) == 22
    with pytest.raises(HeadsieveError, match="out of range"):
        mask_from_heads(facts, [("cross", 2, 0)])
    with pytest.raises(HeadsieveError, match="only 0"):
        check_mask(facts, dict(mask, cross=np.full((2, 4), 0.5)))


# --------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def small_pairs(en_de):
    return [p for p in en_de if len(p.source) < 90][:10]


def test_tiny_tokenizer_round_trip(tok):
    ids = tok("The peaceful transition of power")["input_ids"]
    assert ids[-1] == EOS and max(ids) < 320
    assert tok.decode(ids, skip_special_tokens=True) == "The peaceful transition of power"


def test_pair_batches_mask_padding_in_labels(tok, small_pairs):
    batches = pair_batches(tok, small_pairs, batch_size=4)
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 2]
    for b in batches:
        assert (b["labels"] == tok.pad_token_id).sum() == 0
        lengths = (b["labels"] != -100).sum(1)
        assert all(b["labels"][i, n - 1] == EOS for i, n in enumerate(lengths.tolist()))


@pytest.mark.parametrize("name", ["marian", "t5"])
def test_importance_of_all_three_kinds(name, tok, small_pairs):
    model = tiny_model(name)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    batches = pair_batches(tok, small_pairs, batch_size=5)
    raw = head_importance(model, batches, normalise=False)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    for kind in KINDS:
        assert raw[kind].shape == (2, 4) and (raw[kind] > 0).all()
    norm = head_importance(model, batches)
    for kind in KINDS:
        assert np.allclose(np.linalg.norm(norm[kind], axis=1), 1.0)
    # by hand: mean over batches of |dL/dgate|, model in eval mode
    model.eval()
    gates = {k: g.requires_grad_(True) for k, g in S.make_gates(model).items()}
    total = {k: 0 for k in KINDS}
    with S.HeadGates(model, gates):
        for batch in batches:
            grads = torch.autograd.grad(model(**batch).loss, [gates[k] for k in KINDS])
            for k, g in zip(KINDS, grads):
                total[k] = total[k] + g.abs()
    for kind in KINDS:
        assert np.allclose(raw[kind], (total[kind] / len(batches)).numpy(), rtol=1e-5, atol=1e-8)
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, [("cross", 0, 0), ("cross", 0, 1), ("cross", 0, 2), ("cross", 0, 3), ("encoder", 1, 2)])
    after = head_importance(pruned, batches, normalise=False)
    assert (after["cross"][0] == 0).all() and after["encoder"][1, 2] == 0 and (after["decoder"] > 0).all()
    with pytest.raises(HeadsieveError, match="at least one batch"):
        head_importance(model, [])


class CountingTokenizer:
    """A tokenizer wrapper counting encode calls (the evaluator must tokenise the test set once)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("name", ["marian", "bart", "t5"])
def test_evaluator_many_masks_equal_pruned_models(name, small_pairs):
    tok = tiny_tokenizer(bos=name == "bart")
    model = tiny_model(name)
    counting = CountingTokenizer(tok)
    options = dict(batch_size=4, max_new_tokens=8, progress=False)
    masks = {
        "none": None,
        "cross0": mask_from_heads(S.head_space(model), [("cross", 0, h) for h in range(4)]),
        "mixed": mask_from_heads(
            S.head_space(model), [("encoder", 1, 1), ("decoder", 0, 3), ("cross", 1, 0)]
        ),
    }
    with TranslationEvaluator(model, counting, small_pairs, **options) as evaluator:
        rows = evaluator.evaluate_many(masks, keep_translations=True)
        assert counting.calls == 1  # tokenised once for every mask
    assert [r["mask"] for r in rows] == ["none", "cross0", "mixed"]
    assert [r["heads_pruned"] for r in rows] == [0, 4, 3] and rows[1]["heads_pruned_cross"] == 4
    assert rows[0]["translations"] != rows[1]["translations"]
    for row in rows:
        assert row["n"] == 10 and len(row["translations"]) == 10
        assert row["bleu"] == corpus_scores(row["translations"], [p.target for p in small_pairs])["bleu"]
    # the hooks are gone: the model runs as without gates
    assert not any(s.output._forward_pre_hooks for s in S.attention_sites(model))
    # physical pruning gives the same translations as the mask
    for key, heads in [("cross0", [("cross", 0, h) for h in range(4)]),
                       ("mixed", [("encoder", 1, 1), ("decoder", 0, 3), ("cross", 1, 0)])]:  # fmt: skip
        pruned = copy.deepcopy(model)
        S.prune_heads(pruned, heads)
        with TranslationEvaluator(pruned, tok, small_pairs, **options) as evaluator:
            assert evaluator.translate() == next(r for r in rows if r["mask"] == key)["translations"]


def test_evaluator_order_and_errors(tok, small_pairs):
    model = tiny_model("marian")
    with TranslationEvaluator(model, tok, small_pairs, batch_size=3, max_new_tokens=6, progress=False) as ev:
        batched = ev.translate()
    one = TranslationEvaluator(model, tok, small_pairs[:1], batch_size=1, max_new_tokens=6, progress=False)
    assert one.translate()[0] == batched[0]
    one.close()
    with pytest.raises(HeadsieveError, match="was closed"):
        one.translate()
    with pytest.raises(HeadsieveError, match="no test sentence pairs"):
        TranslationEvaluator(model, tok, [])
    with pytest.raises(HeadsieveError, match="deterministic"):
        TranslationEvaluator(model, tok, small_pairs, generate_options={"do_sample": True})


# ---------------------------------------------------------------------------------------------- roles


def test_bias_scores_match_the_sieve_definition():
    from headsieve.roles.sieve import sieve_from_pairs
    from headsieve.roles.targets import local_targets
    from headsieve.translation.roles import bias_scores

    rng = np.random.default_rng(0)
    A = rng.random((6, 7, 7)).astype(np.float32)
    A /= A.sum(-1, keepdims=True)
    S_ = local_targets(7, 1)
    S_[3] = False  # a query without targets is left out
    score, share = bias_scores(A, S_)
    q, k = np.nonzero(S_)
    values = A[:, q, k].T  # [pairs, heads]
    reference = (A.sum(-1) / 7).T[None]  # [1, queries, heads]
    _, _, expected, _ = sieve_from_pairs(values, np.zeros(len(q), int), np.zeros(len(q), int), q, reference)
    assert np.allclose(score, expected[0], rtol=1e-5)
    assert np.allclose(share, (A * S_).sum(-1)[:, S_.any(1)].mean(1))


def test_diagonal_targets():
    from headsieve.tokens import REGULAR, SEP
    from headsieve.roles.targets import diagonal_targets

    special = np.array([REGULAR] * 5 + [SEP])
    S0 = diagonal_targets(3, special, band=0)
    assert [list(np.flatnonzero(row)) for row in S0] == [[0], [2], [4]]
    S1 = diagonal_targets(2, special, band=1)
    assert [list(np.flatnonzero(row)) for row in S1] == [[0, 1], [3, 4]]
    assert not diagonal_targets(2, np.array([SEP]), band=1).any()


def test_planted_roles():
    """Head 0 attends only to </s>, head 1 uniformly, head 2 to the diagonal / neighbours."""
    from headsieve.translation.roles import _add_batch, _summarise

    model = tiny_model("marian")
    tok = tiny_tokenizer()
    n_src, n_tgt, heads = 6, 4, 4
    ids = torch.tensor([[10, 11, 12, 13, 14, EOS]])
    enc = torch.full((1, heads, n_src, n_src), 1 / n_src)
    enc[0, 0] = 0
    enc[0, 0, :, n_src - 1] = 1
    enc[0, 2] = torch.eye(n_src)
    cross = torch.full((1, heads, n_tgt, n_src), 1 / n_src)
    cross[0, 0] = 0
    cross[0, 0, :, n_src - 1] = 1
    cross[0, 2] = 0
    for t, j in enumerate([0, 1, 3, 4]):  # centres round(t * 4 / 3)
        cross[0, 2, t, j] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([[20, 21, 22, EOS]])}
    sums = {}
    _add_batch(batch, [enc, enc], [cross, cross], tok, model, window=2, band=0, sums=sums)
    frame = _summarise(sums, S.head_space(model).shapes).set_index(["kind", "layer", "head", "role"])
    assert frame.loc[("encoder", 0, 0, "eos"), "score"] == pytest.approx(n_src)
    assert frame.loc[("encoder", 0, 1, "eos"), "score"] == pytest.approx(1)
    assert frame.loc[("encoder", 0, 0, "eos"), "share"] == pytest.approx(1)
    assert frame.loc[("cross", 1, 0, "delimiter"), "score"] == pytest.approx(n_src)
    assert frame.loc[("cross", 0, 2, "diagonal"), "score"] == pytest.approx(n_src)
    assert frame.loc[("cross", 0, 1, "diagonal"), "score"] == pytest.approx(1)
    assert frame.loc[("encoder", 0, 2, "local"), "share"] == pytest.approx(1)


@pytest.mark.parametrize("name", ["marian", "bart", "t5"])
def test_head_roles_on_a_tiny_model(name, small_pairs):
    from headsieve.translation.roles import head_roles

    tok = tiny_tokenizer(bos=name == "bart")
    model = tiny_model(name, attn="sdpa")
    frame = head_roles(model, tok, small_pairs[:6], batch_size=4)
    assert model.config._attn_implementation == "sdpa"  # switched to eager for the pass, then back
    assert len(frame) == 2 * 4 * 3 * 2
    assert set(frame["role"]) == {"local", "eos", "delimiter", "diagonal"}
    assert frame["share"].between(0, 1 + 1e-6).all() and (frame["score"] > 0).all()
    assert (frame["n_sentences"] == 6).all()
    if name != "bart":  # no <s>: delimiter = </s>
        enc = frame[frame.kind == "encoder"].set_index(["layer", "head", "role"])["score"]
        assert np.allclose(enc.xs("eos", level="role"), enc.xs("delimiter", level="role"))
    pruned = copy.deepcopy(model)
    S.prune_heads(pruned, [("cross", 0, 0)])
    with pytest.raises(HeadsieveError, match="unpruned"):
        head_roles(pruned, tok, small_pairs[:2])


# ------------------------------------------------------------------------------------------------ commands


def test_commands_end_to_end(tmp_path):
    from headsieve.cli import build_parser

    folder = tmp_path / "model"
    model = tiny_model("marian")
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    parser = build_parser()
    spec = f'{{"source": "{folder}", "target_language": "de"}}'
    files = ["--source", str(pud_path("en")), "--target", str(pud_path("de")),
             "--pairs", '{"importance_pool": 6, "max_test": 5, "split_seed": 0}']  # fmt: skip

    def run(*argv):
        args = parser.parse_args(list(argv))
        args.run(args)

    run(
        "translation-importance",
        "--model-spec",
        spec,
        *files,
        "--options",
        '{"batch_size": 3}',
        "--output",
        str(tmp_path / "imp.parquet"),
    )
    importance = pd.read_parquet(tmp_path / "imp.parquet")
    assert len(importance) == 24 and set(importance["kind"]) == set(KINDS)
    strategies = '["random", "importance", "kind:cross", "spare:cross", "layer:top"]'
    run(
        "translation-select-masks",
        "--model-spec",
        spec,
        "--strategies",
        strategies,
        "--fractions",
        "[0.0, 0.25, 0.5]",
        "--seed",
        "1",
        "--importance",
        str(tmp_path / "imp.parquet"),
        "--output",
        str(tmp_path / "masks.parquet"),
    )
    masks = pd.read_parquet(tmp_path / "masks.parquet")
    assert masks.groupby(["strategy", "fraction"]).size().to_dict()[("kind:cross", 0.25)] == 6
    assert (masks[masks.fraction == 0.0]["layer"] == -1).all()
    options = '{"batch_size": 4, "max_new_tokens": 6, "progress": false}'
    run(
        "translation-evaluate-masks",
        "--model-spec",
        spec,
        *files,
        "--masks",
        str(tmp_path / "masks.parquet"),
        "--options",
        options,
        "--output",
        str(tmp_path / "scores.parquet"),
        "--translations",
        str(tmp_path / "tr.parquet"),
    )
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(scores) == 15 and (scores["n"] == 5).all() and scores["bleu"].between(0, 100).all()
    assert set(scores.loc[scores.fraction == 0.0, "chrf"].round(9)) == {
        scores.loc[scores.fraction == 0.0, "chrf"].iloc[0].round(9)
    }
    assert len(pd.read_parquet(tmp_path / "tr.parquet")) == 15 * 5
    with pytest.raises(HeadsieveError, match=r"score \(seed, strategy, fraction\) .* is also in"):
        run(
            "translation-collect",
            "--inputs",
            str(tmp_path / "scores.parquet"),
            str(tmp_path / "scores.parquet"),
            "--output",
            str(tmp_path / "all.parquet"),
        )  # every cell exactly once (issue #18)
    run(
        "translation-collect",
        "--inputs",
        str(tmp_path / "scores.parquet"),
        "--output",
        str(tmp_path / "all.parquet"),
    )
    assert len(pd.read_parquet(tmp_path / "all.parquet")) == 15
    run(
        "translation-roles",
        "--model-spec",
        spec,
        *files,
        "--options",
        '{"batch_size": 3}',
        "--output",
        str(tmp_path / "roles.parquet"),
    )
    assert len(pd.read_parquet(tmp_path / "roles.parquet")) == 48
    with pytest.raises(HeadsieveError, match=r"unknown pruning strategy .nope. \(known: .*kind"):
        run(
            "translation-select-masks",
            "--model-spec",
            spec,
            "--strategies",
            '["nope"]',
            "--fractions",
            "[0.1]",
            "--seed",
            "1",
            "--output",
            str(tmp_path / "bad.parquet"),
        )
    assert not (tmp_path / "bad.parquet").exists()


def translation_config(data_dir) -> dict:
    """config/config.yaml with the overlay config/translation.yaml merged over it, as
    ``snakemake --configfile config/translation.yaml`` does (Snakemake's own merge), data_dir set."""
    from support.paths import REPO
    from snakemake.utils import update_config

    from headsieve.config import load_yaml

    config = load_yaml(REPO / "config" / "config.yaml")
    update_config(config, load_yaml(REPO / "config" / "translation.yaml"))
    config["data_dir"] = str(data_dir)
    return config


def validated(config: dict) -> dict:
    from support.paths import REPO

    from headsieve.config import validate_config

    return validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")


def test_workflow_settings(tmp_path, data):
    from support.paths import REPO

    from headsieve.config import load_yaml
    from headsieve.translation.workflow import pair_corpora, translation_title

    config = validated(translation_config(data))
    settings = config["translation"]
    assert settings["models"]["opus_en_de"]["source"] == "Helsinki-NLP/opus-mt-en-de"
    assert settings["models"]["opus_en_de"]["trust_remote_code"] is False  # the schema's default filled in
    assert pair_corpora(settings, "opus_en_de") == {"source": "pud_en", "target": "pud_de"}
    assert translation_title(settings, "opus_en_de") == "opus_en_de: Helsinki-NLP/opus-mt-en-de, en -> de"
    local = {"models": {"m": {"source": str(tmp_path), "source_language": "en", "target_language": "fi"}}}
    assert translation_title(local, "m") == f"m: {tmp_path.name}, en -> fi"  # a folder: its name only
    assert "device" not in settings and config["device"] == "auto"  # one device setting: the top-level one
    # the default run alone: the section is there with its defaults and no model (nothing to run)
    default = validated(dict(load_yaml(REPO / "config" / "config.yaml"), data_dir=str(data)))["translation"]
    assert default["models"] == {} and default["languages"] == {} and default["seeds"] == [1, 2, 3]


def _glob_corpus(c):
    c["corpora"]["pud_many"] = {"format": "conllu", "path": "ud/*/en_pud-ud-test.conllu"}
    c["translation"]["languages"]["en"] = "pud_many"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["translation"].update(device="cuda"), "config key 'translation.device': unknown key"),
        (lambda c: c["translation"].update(ud_dir="ud"), "config key 'translation.ud_dir': unknown key"),
        (lambda c: c["translation"]["generation"].update(beams=4), "config key 'translation.generation.beams': unknown key"),
        (lambda c: c["translation"].update(strategies=["random", "kind:self"]), "config key 'translation.strategies[1]': "),
        (lambda c: c["translation"].update(fractions=[1.5]), "config key 'translation.fractions[0]': 1.5 is greater than or equal to the maximum of 1"),
        (lambda c: c["translation"].update(seeds=[-1]), "config key 'translation.seeds[0]': -1 is less than the minimum of 0"),
        (lambda c: c["translation"]["pairs"].update(importance_pool=0), "config key 'translation.pairs.importance_pool': 0 is less than the minimum of 1"),
        (lambda c: c["translation"]["models"]["opus_en_de"].pop("target_language"), "config key 'translation.models.opus_en_de': 'target_language' is a required property"),
        (lambda c: c["translation"]["models"]["opus_en_de"].update(source_language="English"), "config key 'translation.models.opus_en_de.source_language': 'English' does not match"),
        (lambda c: c["translation"]["models"]["opus_en_de"].update(bleu_tokenize="13b"), "config key 'translation.models.opus_en_de.bleu_tokenize': '13b' is not one of"),
        (lambda c: c["translation"]["models"]["opus_en_de"].update(target_language="nl"), "config key 'translation.models.opus_en_de.target_language': 'nl' is not in translation.languages"),
        (lambda c: c["translation"]["languages"].update(de="pud_nl"), "config key 'translation.languages.de': unknown corpus 'pud_nl'"),
        (lambda c: c["translation"]["languages"].update(de="sst2_dev"), "config key 'translation.languages.de': corpus 'sst2_dev' is glue, not a conllu treebank"),
        (_glob_corpus, "config key 'translation.languages.en': corpus 'pud_many' names several files"),
    ],
)  # fmt: skip
def test_translation_config_errors_are_one_line_naming_the_key(data, edit, expected):
    config = translation_config(data)
    edit(config)
    with pytest.raises(HeadsieveError) as err:
        validated(config)
    assert expected in str(err.value) and "\n" not in str(err.value)
    if "strategies" in expected:
        assert "kind 'self'" in str(err.value)  # the registry's own reason


def test_translation_rules_through_snakemake_dry_run(tmp_path, data):
    """config/translation.yaml over config/config.yaml builds its DAG: one importance, roles and report job per
    model, masks and evaluation per seed, every job with its log and benchmark (the files a cluster run leaves
    behind); the sentence files are the corpora's: fetched (url, sha256) when not under data_dir, else a
    one-line error naming the corpus."""
    import yaml
    from support.workflow import job_counts, snakemake

    merged = translation_config(data)
    merged["device"] = "cpu"  # the one device setting reaches every translation job
    settings = merged["translation"]
    models, seeds = len(settings["models"]), len(settings["seeds"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merged), encoding="utf-8")
    proc = snakemake(tmp_path, "-n", "-p", "translation_all", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout) == {
        "translation_importance": models, "translation_roles": models, "translation_masks": models * seeds,
        "translation_evaluate": models * seeds, "translation_collect": models, "translation_report": models,
        "translation_all": 1, "total": 4 * models + 2 * models * seeds + 1,
    }  # fmt: skip
    jobs = [block for block in proc.stdout.split("\nrule ")[1:] if not block.startswith("translation_all")]
    assert len(jobs) == 4 * models + 2 * models * seeds
    for block in jobs:
        assert "    log: logs/translation/" in block and "    benchmark: benchmarks/translation/" in block, block
    assert str(pud_path("de")) in proc.stdout  # the mirror's file of corpora.pud_de
    devices = [line.split("--device ")[1].split()[0] for line in proc.stdout.splitlines() if "--device " in line]
    assert len(devices) == 2 * models + models * seeds and set(devices) == {"cpu"}

    empty = tmp_path / "no-mirror"
    empty.mkdir()
    merged["data_dir"] = str(empty)
    config.write_text(yaml.safe_dump(merged), encoding="utf-8")
    proc = snakemake(tmp_path / "fetching", "-n", "translation_all", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout)["fetch_corpus"] == 2
    assert "resources/corpora/pud_de/de_pud-ud-test.conllu" in proc.stdout

    del merged["corpora"]["pud_de"]["url"], merged["corpora"]["pud_de"]["sha256"]
    config.write_text(yaml.safe_dump(merged), encoding="utf-8")
    proc = snakemake(tmp_path / "missing", "-n", "translation_all", config=config)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "corpus 'pud_de': file" in said and "no url to download it from" in said, said[-3000:]


# ------------------------------------------------------------------------------------------ report, workflow


def planted_scores(gain: float, seeds=(1, 2, 3, 4, 5, 6), fractions=(0.0, 0.2, 0.4)) -> pd.DataFrame:
    """BLEU/chrF of random and of strategies around it: ``spare:cross`` keeps ``gain`` more BLEU (and twice as
    much chrF) than random at every fraction > 0; ``layer:top`` and ``layer:bottom`` are random plus noise."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for fraction in fractions:
            base = 30 - 40 * fraction + rng.normal(0, 2)  # random's score varies by seed
            for strategy, shift in (("random", 0.0), ("spare:cross", gain), ("layer:top", 0.0), ("layer:bottom", 0.0)):
                shift = shift if fraction > 0 else 0.0
                noise = 0.0 if strategy == "random" or fraction == 0 else rng.normal(0, 0.3)
                bleu = base + shift + noise
                rows.append({"strategy": strategy, "fraction": fraction, "seed": seed, "bleu": bleu,
                             "chrf": 2 * bleu, "n": 100})  # fmt: skip
    return pd.DataFrame(rows)


def test_comparisons_find_a_planted_gain_and_no_gain_where_none_is():
    from headsieve.translation.report import comparisons

    table = comparisons(planted_scores(gain=3.0), "m")
    assert list(table.columns[:5]) == ["model", "metric", "fraction", "strategy", "against"]
    assert set(table["metric"]) == {"bleu", "chrf"} and (table["model"] == "m").all()
    assert set(table["fraction"]) == {0.2, 0.4} and (table["seeds"] == 6).all()
    spare = table[(table.strategy == "spare:cross") & (table.against == "random")].set_index("metric")
    assert np.allclose(spare.loc["bleu", "mean_diff"], 3.0, atol=0.5) and (spare["p"] < 1e-4).all()
    assert np.allclose(spare.loc["chrf", "mean_diff"], 6.0, atol=1.0)
    top = table[(table.strategy == "layer:top") & (table.against == "layer:bottom")]
    assert len(top) == 4 and (top["mean_diff"].abs() < 0.5).all()  # the location pair: nothing planted
    assert not table.duplicated(["metric", "fraction", "strategy", "against"]).any()


def test_report_needs_the_score_columns():
    from headsieve.translation.report import comparisons

    with pytest.raises(HeadsieveError, match=r"lacks columns \['chrf'\]") as err:
        comparisons(planted_scores(1.0).drop(columns=["chrf"]), "m")
    assert "\n" not in str(err.value)


@pytest.mark.e2e
def test_translation_pipeline_through_snakemake(tmp_path, data):
    """translation_all for real on a tiny random Marian saved in a folder: every table, every figure as PNG and
    PDF, and the report with the translation figures captioned."""
    import yaml
    from support.workflow import snakemake

    folder = tmp_path / "tiny-marian"
    tiny_model("marian").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    merged = translation_config(data)
    settings = merged["translation"]
    settings["models"] = {"tiny": {"source": str(folder), "source_language": "en", "target_language": "de"}}
    settings["pairs"].update(importance_pool=8, max_test=6)
    settings["generation"].update(max_new_tokens=8, batch_size=4)
    settings.update(seeds=[1, 2], fractions=[0.0, 0.25, 0.5], strategies=["random", "importance", "kind:cross",
                                                                           "layer:top", "layer:bottom"])  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merged), encoding="utf-8")
    proc = snakemake(tmp_path, "translation_all", config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results/translation/tiny"
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 5 * 3 * 2 and set(scores["seed"]) == {1, 2}
    table = pd.read_parquet(out / "comparisons.parquet")
    assert set(table["metric"]) == {"bleu", "chrf"} and set(table["fraction"]) == {0.25, 0.5}
    assert {("layer:top", "layer:bottom"), ("importance", "random")} <= set(zip(table.strategy, table.against))
    for name in ("bleu_by_fraction", "chrf_by_fraction", "bleu_comparisons", "chrf_comparisons", "importance", "roles"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 5000, (name, ext)
    report = tmp_path / "report.html"
    proc = snakemake(tmp_path, "translation_all", "--report", str(report), config=config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = report.read_text(errors="replace")
    assert "Translation" in html and "Paired comparisons of chrF" in html and "Gate importance of every head" in html
