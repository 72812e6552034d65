"""The BART family of encoder-decoders: Marian, BART, mBART, Pegasus (base models or
``*ForConditionalGeneration``).

Encoder layers ``encoder.layers``, decoder layers ``decoder.layers``; self-attention ``self_attn``,
cross-attention ``encoder_attn`` of a decoder layer; projections ``q_proj``/``k_proj``/``v_proj`` and
``out_proj`` inside the attention module (``num_heads``, ``head_dim``).
"""

from __future__ import annotations

from headsieve.models.families.base import SEQ2SEQ_RECORD, Family, KindLayout
from headsieve.models.families.common import cache_length_update, headless_output


class HeadlessAttention:
    """Mixin for BART-like attention: a block without heads skips attention (output = ``out_proj`` bias) and
    still writes one placeholder head into the KV cache
    (:func:`~headsieve.models.families.common.cache_length_update`)."""

    def forward(self, hidden_states, key_value_states=None, cache=None, attention_mask=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        if self.num_heads > 0:
            return super().forward(hidden_states, key_value_states, cache, attention_mask, **kwargs)
        length = cache_length_update(self, hidden_states, key_value_states, cache, self.head_dim, kwargs)
        return headless_output(self, self.out_proj, hidden_states, length)


def _layout(kind: str, part: str, attention: str) -> KindLayout:
    return KindLayout(
        kind, stack=f"{part}.layers", attention=attention, output=f"{attention}.out_proj",
        layers=(f"{part}_layers",), heads=(f"{part}_attention_heads",),
    )  # fmt: skip


FAMILY = Family(
    name="bart",
    model_types=("marian", "bart", "mbart", "pegasus"),
    kinds=(
        _layout("encoder", "encoder", "self_attn"),
        _layout("decoder", "decoder", "self_attn"),
        _layout("cross", "decoder", "encoder_attn"),
    ),
    # the attention module's projections and its attributes: heads, size of one head (no heads x head size)
    projections=("q_proj", "k_proj", "v_proj"), head_count="num_heads", head_size="head_dim", head_width=None,
    token_types=False, record=SEQ2SEQ_RECORD, headless=HeadlessAttention,
)  # fmt: skip
