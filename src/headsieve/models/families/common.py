"""Pieces shared by family descriptions: attention blocks that have no heads left.  (Torch is imported where
it is used: the registry, and so ``headsieve.models.load``, stays light to import.)"""

from __future__ import annotations


def empty_weights(module, hidden_states, key_length: int | None = None):
    """Attention probabilities of zero heads, ``[batch, 0, queries, keys]`` under eager attention, else None."""
    if getattr(module.config, "_attn_implementation", "eager") != "eager":
        return None
    batch, seq = hidden_states.shape[0], hidden_states.shape[1]
    return hidden_states.new_zeros(batch, 0, seq, seq if key_length is None else key_length)


def empty_context(hidden_states):
    """The concatenated context of zero heads, ``[..., 0]``."""
    return hidden_states.new_zeros(*hidden_states.shape[:-1], 0)


def cache_length_update(module, hidden_states, key_value_states, cache, head_dim: int, kwargs: dict) -> int:
    """Update the KV cache of a block without heads; return the key length its attention would have.

    One all-zero placeholder head is cached (never read by this block): transformers takes the cached
    sequence length from the cached keys and reports 0 for keys without elements.
    """
    from transformers.cache_utils import EncoderDecoderCache

    is_cross = key_value_states is not None
    current = key_value_states if is_cross else hidden_states
    if cache is None:
        return int(current.shape[1])
    is_updated = False
    layer_cache = cache
    if isinstance(cache, EncoderDecoderCache):
        is_updated = bool(cache.is_updated.get(module.layer_idx))
        layer_cache = cache.cross_attention_cache if is_cross else cache.self_attention_cache
    if is_cross and is_updated:
        return int(layer_cache.layers[module.layer_idx].keys.shape[-2])
    placeholder = current.new_zeros(current.shape[0], 1, current.shape[1], head_dim)
    keys, _ = layer_cache.update(placeholder, placeholder, module.layer_idx, kwargs=kwargs)
    if is_cross and isinstance(cache, EncoderDecoderCache):
        cache.is_updated[module.layer_idx] = True
    return int(keys.shape[-2])


def headless_output(module, output, hidden_states, key_length: int):
    """(output projection of an empty context, attention weights of zero heads or None)."""
    return output(empty_context(hidden_states)), empty_weights(module, hidden_states, key_length)


_SUBCLASSES: dict[tuple[type, type], type] = {}


def switch_class(module, mixin: type) -> None:
    """Give ``module`` a subclass of its class with ``mixin`` first (keeps ``isinstance`` checks, such as
    transformers' attention-output recording, and registered hooks); a module switched before is left."""
    cls = type(module)
    if cls in _SUBCLASSES.values():
        return
    key = (cls, mixin)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(f"Pruned{cls.__name__}", (mixin, cls), {"__module__": mixin.__module__})
    module.__class__ = _SUBCLASSES[key]
