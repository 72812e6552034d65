"""Loading decoder-only language models (headsieve.models.load.load_decoder, load_tokenizer; issue 17): tiny
random GPT-2, Llama, Qwen2 and Mistral saved as safetensors folders load as eager ``*ForCausalLM`` models with
their head space; unsupported types, pickle-only weights, bad head counts, short position tables and models
without attention probabilities fail in one line; a decoder's tokenizer without a pad token pads with eos."""

from __future__ import annotations

import pytest
import torch

from headsieve.errors import HeadsieveError
from headsieve.models.heads import head_space
from headsieve.models.load import check_attention_output, load_decoder, load_encoder, load_tokenizer

from support.decoder import DECODERS, HEADS, KV_HEADS, LAYERS, tiny_batch, tiny_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    out = {}
    for model_type in DECODERS:
        folder = tmp_path_factory.mktemp(model_type)
        tiny_model(model_type).save_pretrained(folder)
        out[model_type] = folder
    return out


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_folder_loads_as_eager_causal_lm(folders, model_type):
    model = load_decoder("m", {"source": str(folders[model_type])})
    assert model.config.model_type == model_type and model.config._attn_implementation == "eager"
    assert not model.training and model.dtype == torch.float32
    kind = head_space(model).kind("decoder")
    assert (kind.layers, kind.heads, kind.kv_heads) == (LAYERS, HEADS, HEADS if model_type == "gpt2" else KV_HEADS)
    with torch.no_grad():
        got = model(**tiny_batch()).logits
        want = tiny_model(model_type)(**tiny_batch()).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_unsupported_model_type(tiny_bert):
    with pytest.raises(HeadsieveError, match="model_type 'bert' is not a supported decoder-only language model"):
        load_decoder("b", {"source": str(tiny_bert)})


def test_decoder_is_not_an_encoder(folders):
    with pytest.raises(HeadsieveError, match="model_type 'llama' is not a supported encoder"):
        load_encoder("l", {"source": str(folders["llama"])})


def test_pickle_weights_refused(tmp_path):
    model = tiny_model("gpt2")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(HeadsieveError, match=r"only pickle weights \(pytorch_model.bin\); headsieve reads safetensors"):
        load_decoder("p", {"source": str(tmp_path)})


def test_key_value_heads_must_divide_heads(tmp_path):
    config = tiny_model("llama").config
    config.num_key_value_heads = 3
    config.save_pretrained(tmp_path)
    with pytest.raises(HeadsieveError, match="num_key_value_heads is 3; it must be a whole number .* dividing"):
        load_decoder("k", {"source": str(tmp_path)})


def test_position_table_checked(folders):
    with pytest.raises(HeadsieveError, match="position table holds 64 pieces .* fewer than llm.max_length 65"):
        load_decoder("m", {"source": str(folders["qwen2"])}, max_length=65)
    assert load_decoder("m", {"source": str(folders["qwen2"])}, max_length=64) is not None


def test_model_without_attention_probabilities():
    model = tiny_model("llama", attn="sdpa")
    with pytest.raises(HeadsieveError, match="returns no attention probabilities"):
        check_attention_output("m", model, model.config)


def test_decoder_tokenizer_pads_with_eos(folders, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    tok = load_tokenizer("g", {"source": str(folder)})
    assert tok.pad_token == "</s>" and tok.pad_token_id == 2
    assert tok("a b")["input_ids"][-2:] == [3, 4]
