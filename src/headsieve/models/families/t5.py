"""The T5 family: T5, mT5 (base models or ``*ForConditionalGeneration``).

Encoder blocks ``encoder.block``, decoder blocks ``decoder.block``; self-attention ``layer.0.SelfAttention``,
cross-attention ``layer.1.EncDecAttention``; projections ``q``/``k``/``v`` and ``o`` (``n_heads``,
``key_value_proj_dim``, ``inner_dim``).

**The relative position bias** is what is T5's own.  Only the first self-attention layer of each stack owns
the embedding ``relative_attention_bias`` (``[buckets, heads]``); the other layers reuse the bias it
computed, head for head.  Once a T5 model is pruned (:func:`finish`), the bias passed between layers lives
in a *stack space*: the embedding keeps the columns of the heads (original indices) still present in at
least one self-attention layer of the stack, and every self-attention layer selects its own heads' columns
at run time (attribute ``headsieve_bias_heads`` on the modules; :class:`PrunedAttention`).  A head pruned in
layer 0 but kept in layer 1 thus keeps its bias column, and layer 0 itself may lose all its heads: it
still computes the stack's bias.  The cross-attention bias of T5 is zero; pruned cross-attention blocks
make their own.  A block without heads writes one placeholder head into the KV cache, as BART-like ones do.
"""

from __future__ import annotations

from headsieve.models.families.base import SEQ2SEQ_RECORD, Family, KindLayout
from headsieve.models.families.common import cache_length_update, headless_output, switch_class


class PrunedAttention:
    """Mixin for T5-like attention of a pruned model: position bias in stack space (see the module docstring).

    ``headsieve_heads``: this block's heads (original indices); ``headsieve_bias_heads``: the columns of the
    stack's bias (original indices; self-attention only).  The bias returned to the next layer is always
    the stack-space bias; cross-attention returns None (its bias is zero: each block makes its own).
    """

    def _own_bias(self, bias):
        """This block's columns of a stack-space bias."""
        import torch

        space = self.headsieve_bias_heads
        if list(self.headsieve_heads) == list(space):
            return bias
        index = torch.tensor([space.index(h) for h in self.headsieve_heads], dtype=torch.long, device=bias.device)
        return bias.index_select(1, index)

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        full = super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
        self._headsieve_full_bias = full
        return self._own_bias(full)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        if key_value_states is not None:  # cross-attention: zero bias, made by each block in its own shape
            if self.n_heads == 0:
                length = cache_length_update(
                    self, hidden_states, key_value_states, cache, self.key_value_proj_dim, kwargs
                )
                out, weights = headless_output(self, self.o, hidden_states, length)
                return out, None, weights
            out, _, weights = super().forward(hidden_states, mask, key_value_states, None, cache, **kwargs)
            return out, None, weights
        if self.n_heads == 0:
            return self._headless_self(hidden_states, position_bias, cache, kwargs)
        own = None if position_bias is None else self._own_bias(position_bias)
        self._headsieve_full_bias = None
        out, own_bias, weights = super().forward(hidden_states, mask, None, own, cache, **kwargs)
        if position_bias is None:
            position_bias = self._headsieve_full_bias  # None only for a layer without its own bias
        self._headsieve_full_bias = None
        return out, position_bias, weights

    def _headless_self(self, hidden_states, position_bias, cache, kwargs):
        """Self-attention without heads: still computes the stack's bias when this layer owns it."""
        past = cache.get_seq_length(self.layer_idx) if cache is not None else 0
        length = cache_length_update(self, hidden_states, None, cache, self.key_value_proj_dim, kwargs)
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = super().compute_bias(hidden_states.shape[1], length, hidden_states.device, past)
        out, weights = headless_output(self, self.o, hidden_states, length)
        return out, position_bias, weights


def slice_bias_embedding(attention, old: list[int], new: list[int]) -> None:
    """Keep the columns ``new`` (original head indices) of a relative-bias embedding whose columns are ``old``."""
    import torch
    from torch import nn

    embedding = attention.relative_attention_bias
    if new == old:
        return
    index = torch.tensor([old.index(h) for h in new], dtype=torch.long, device=embedding.weight.device)
    requires_grad = embedding.weight.requires_grad
    with torch.no_grad():
        embedding.weight = nn.Parameter(embedding.weight.index_select(1, index).clone(), requires_grad=requires_grad)
    embedding.embedding_dim = len(new)


def finish(sites, remaining: dict, record: dict, space) -> None:
    """After pruning: once any head is pruned, put every attention module in stack space (bias columns =
    heads left in any self-attention layer of the stack) and give it :class:`PrunedAttention`."""
    if not (record or any(hasattr(site.attention, "headsieve_heads") for site in sites)):
        return
    for kind in ("encoder", "decoder"):
        stack = [site for site in sites if site.kind == kind]
        heads = sorted({h for site in stack for h in remaining[site.site]})
        for site in stack:
            module = site.attention
            old = list(getattr(module, "headsieve_bias_heads", range(space.shape(kind)[1])))
            if module.has_relative_attention_bias:
                slice_bias_embedding(module, old, heads)
            module.headsieve_bias_heads = heads
    for site in sites:
        site.attention.headsieve_heads = list(remaining[site.site])
        switch_class(site.attention, PrunedAttention)


def _layout(kind: str, part: str, attention: str, layers: tuple[str, ...]) -> KindLayout:
    return KindLayout(
        kind, stack=f"{part}.block", attention=attention, output=f"{attention}.o", layers=layers, heads=("num_heads",)
    )


FAMILY = Family(
    name="t5",
    model_types=("t5", "mt5"),
    kinds=(
        _layout("encoder", "encoder", "layer.0.SelfAttention", ("num_layers",)),
        _layout("decoder", "decoder", "layer.0.SelfAttention", ("num_decoder_layers", "num_layers")),
        _layout("cross", "decoder", "layer.1.EncDecAttention", ("num_decoder_layers", "num_layers")),
    ),
    # the attention module's projections and its attributes: heads, size of one head, heads x head size
    projections=("q", "k", "v"), head_count="n_heads", head_size="key_value_proj_dim", head_width="inner_dim",
    token_types=False, record=SEQ2SEQ_RECORD, headless=PrunedAttention, finish=finish,
)  # fmt: skip
