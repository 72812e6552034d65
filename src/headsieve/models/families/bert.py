"""The BERT family: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA (base models and task wrappers).

Each layer's self-attention is ``layer.attention.self`` (``query``/``key``/``value``, ``num_attention_heads``,
``attention_head_size``, ``all_head_size``); its output projection ``layer.attention.output.dense`` sits
outside that module.
"""

from __future__ import annotations

from headsieve.models.families.base import ENCODER_RECORD, Family, KindLayout
from headsieve.models.families.common import empty_context, empty_weights


class HeadlessSelfAttention:
    """Mixin for a self-attention module with no heads left: an empty context, so the output projection
    (outside the module) yields its bias."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        return empty_context(hidden_states), empty_weights(self, hidden_states)


FAMILY = Family(
    name="bert",
    model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
    kinds=(
        KindLayout(
            "encoder", stack="encoder.layer", attention="attention.self", output="attention.output.dense",
            layers=("num_hidden_layers",), heads=("num_attention_heads",),
        ),
    ),  # fmt: skip
    # the attention module's projections and its attributes: heads, size of one head, heads x head size
    projections=("query", "key", "value"), head_count="num_attention_heads", head_size="attention_head_size",
    head_width="all_head_size",
    token_types=True, record=ENCODER_RECORD, headless=HeadlessSelfAttention,
)  # fmt: skip
