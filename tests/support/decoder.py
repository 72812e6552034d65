"""Tiny random-initialised decoder-only language models (GPT-2; Llama, Qwen2 and Mistral with grouped-query
attention: 4 query heads sharing 2 key-value heads), shared by the decoder head tests."""

from __future__ import annotations

import torch

#: every decoder-only model type with a family description, and its tiny configuration
DECODERS = ("gpt2", "llama", "qwen2", "mistral")
#: one per family description, for the heavier checks
ONE_PER_FAMILY = {"gpt2": "gpt2", "llama": "llama"}
VOCAB, LAYERS, HEADS, KV_HEADS, HIDDEN = 64, 3, 4, 2, 32
#: larger than the default 0.02, so that single heads visibly change tiny models' logits
INIT_RANGE = 0.2


def tiny_config(model_type: str):
    """A tiny config: 3 layers, 4 query heads (2 key-value heads for the Llama-style types), hidden 32."""
    import transformers as T

    if model_type == "gpt2":
        config = T.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                              initializer_range=INIT_RANGE, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    else:
        cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "mistral": T.MistralConfig}[model_type]
        config = cls(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64,
                     initializer_range=INIT_RANGE, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    return config


def tiny_model(model_type: str, seed: int = 0, attn: str = "eager"):
    """A seeded random ``*ForCausalLM`` (GPT-2: ``GPT2LMHeadModel``) in eval mode, biases random."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation=attn)
    with torch.no_grad():  # random biases make bias slicing testable (Qwen2 has q/k/v biases, GPT-2 all)
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, INIT_RANGE)
    model.generation_config.pad_token_id = 0
    return model.eval()


def tiny_batch(seed: int = 1, batch: int = 2, length: int = 9) -> dict:
    """Random token ids (avoiding the special ids 0-2) with an all-ones attention mask."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, batch=None, gates=None) -> torch.Tensor:
    """Logits of ``batch`` (default :func:`tiny_batch`), under head gates if given."""
    from headsieve.models.heads import apply_head_gates

    batch = tiny_batch() if batch is None else batch
    with torch.no_grad():
        if gates is None:
            return model(**batch).logits
        with apply_head_gates(model, gates):
            return model(**batch).logits


def greedy(model, batch=None, gates=None, new_tokens: int = 5, use_cache: bool = True):
    """Greedy generation (with the KV cache unless ``use_cache`` is false): (token ids, stacked per-step
    logits), under gates if given."""
    from headsieve.models.heads import apply_head_gates

    batch = tiny_batch(batch=1, length=6) if batch is None else batch
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                  output_logits=True, return_dict_in_generate=True)  # fmt: skip
    with torch.no_grad():
        if gates is None:
            out = model.generate(**batch, **kwargs)
        else:
            with apply_head_gates(model, gates):
                out = model.generate(**batch, **kwargs)
    return out.sequences, torch.stack(out.logits)
