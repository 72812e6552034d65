"""GPT-2 (``GPT2Model``, ``GPT2LMHeadModel``, ...): a decoder-only language model, head-space kind ``decoder``.

Each block's attention ``h.<i>.attn`` holds one fused ``Conv1D`` ``c_attn`` whose output columns are the query,
key and value thirds (``split_size`` wide each; projection layout ``fused_conv1d``) and the output projection
``c_proj`` (``num_heads``, ``head_dim``).  Pruning keeps the heads' columns in each third and their input
rows of ``c_proj``; the stock forward then runs with the smaller ``num_heads`` and ``split_size``.  A block
without heads writes one placeholder head into the KV cache, as BART-like ones do.
"""

from __future__ import annotations

from headsieve.models.families.base import ENCODER_RECORD, Family, KindLayout
from headsieve.models.families.common import cache_length_update, empty_weights


class HeadlessAttention:
    """Mixin for a GPT-2 attention block with no heads left: output = ``c_proj`` bias; the KV cache gets a
    placeholder head (:func:`~headsieve.models.families.common.cache_length_update`)."""

    def forward(self, hidden_states, cache=None, attention_mask=None, *args, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        kwargs.pop("output_attentions", None)
        length = cache_length_update(self, hidden_states, None, cache, self.head_dim, kwargs)
        # Conv1D cannot take a zero-width input (it flattens with view(-1, 0)): its bias, broadcast
        out = hidden_states.new_zeros(*hidden_states.shape[:-1], self.c_proj.nf) + self.c_proj.bias
        return self.resid_dropout(out), empty_weights(self, hidden_states, length)


FAMILY = Family(
    name="gpt2",
    model_types=("gpt2",),
    kinds=(
        KindLayout(
            "decoder", stack="h", attention="attn", output="attn.c_proj", layers=("n_layer",), heads=("n_head",)
        ),
    ),
    projections=("c_attn", "c_attn", "c_attn"),
    head_count="num_heads",
    head_size="head_dim",
    head_width="split_size",
    token_types=False,
    record=ENCODER_RECORD,
    headless=HeadlessAttention,
    projection_layout="fused_conv1d",
)
