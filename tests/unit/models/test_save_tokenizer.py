"""A saved tokenizer has the same bytes however it was loaded: transformers writes ``local_files_only`` (which
follows ``HF_HUB_OFFLINE``) into tokenizer_config.json; ``models.load.save_tokenizer`` leaves it out, so a
fine-tuned or converted folder is the same online and offline (determinism: same config, same bytes)."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from headsieve.models.load import LOADING_FLAGS, save_tokenizer


def test_saved_tokenizer_does_not_depend_on_how_it_was_loaded(tmp_path, minilm_dir):
    offline = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)
    online = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=False)

    offline.save_pretrained(str(tmp_path / "stock"))  # what transformers itself writes
    stock = json.loads((tmp_path / "stock" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert stock.get("local_files_only") is True  # the flag this helper exists for (fails if transformers stops)

    save_tokenizer(offline, tmp_path / "offline")
    save_tokenizer(online, tmp_path / "online")
    a = (tmp_path / "offline" / "tokenizer_config.json").read_bytes()
    b = (tmp_path / "online" / "tokenizer_config.json").read_bytes()
    assert a == b
    saved = json.loads(a)
    assert not set(LOADING_FLAGS) & set(saved)
    # everything else transformers wrote is kept
    assert saved == {k: v for k, v in stock.items() if k not in LOADING_FLAGS}
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "offline"))
    assert reloaded("a short sentence")["input_ids"] == offline("a short sentence")["input_ids"]
