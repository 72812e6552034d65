"""DistilBERT: each layer's self-attention ``layer.attention`` holds ``q_lin``/``k_lin``/``v_lin`` and its
output projection ``out_lin`` (``n_heads``, ``attention_head_size``); no token type ids."""

from __future__ import annotations

from headsieve.models.families.base import ENCODER_RECORD, Family, KindLayout
from headsieve.models.families.common import empty_context, empty_weights


class HeadlessSelfAttention:
    """Mixin for a DistilBERT self-attention with no heads left: the output projection of an empty context
    (its bias)."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        return self.out_lin(empty_context(hidden_states)), empty_weights(self, hidden_states)


FAMILY = Family(
    name="distilbert",
    model_types=("distilbert",),
    kinds=(
        KindLayout(
            "encoder", stack="transformer.layer", attention="attention", output="attention.out_lin",
            layers=("n_layers",), heads=("n_heads",),
        ),
    ),  # fmt: skip
    # the attention module's projections and its attributes: heads, size of one head (no heads x head size)
    projections=("q_lin", "k_lin", "v_lin"), head_count="n_heads", head_size="attention_head_size", head_width=None,
    token_types=False, record=ENCODER_RECORD, headless=HeadlessSelfAttention,
)  # fmt: skip
