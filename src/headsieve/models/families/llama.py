"""Llama-style decoder-only language models with grouped-query attention: Llama, Qwen2, Mistral
(``*Model``, ``*ForCausalLM``); head-space kind ``decoder``.

Each layer's attention ``layers.<i>.self_attn`` holds ``q_proj`` (``num_attention_heads`` x ``head_dim``
rows), ``k_proj`` and ``v_proj`` (``num_key_value_heads`` x ``head_dim`` rows) and ``o_proj``; query head
``h`` reads key-value head ``h // (num_attention_heads // num_key_value_heads)``.  The module has no
head-count attribute; its ``num_key_value_groups`` says how many query heads share a key-value head.

**Pruning inside key-value groups** (:func:`finish`).  A pruned query head loses its ``q_proj`` rows and
``o_proj`` columns; a key-value head loses its ``k_proj``/``v_proj`` rows once all its query heads are gone.
The stock attention repeats each key-value head ``num_key_value_groups`` times, which expresses only groups
of equal size.  So, per layer: when every key-value head left serves the same number ``c`` of query heads
left, ``num_key_value_groups = c`` and the stock forward runs unchanged (this covers whole groups removed);
otherwise (ragged groups) ``num_key_value_groups = 1`` and ``k_proj``/``v_proj`` get :class:`ExpandedHeads`,
which repeats each key-value head's output once per query head reading it (``headsieve_expand``: for each
query head left, the position of its key-value head among those left).  The rotary embedding acts on each
head alone, so expanding before it is exact; the KV cache then holds one key/value head per query head of
that layer.  A layer with no heads left writes one placeholder head into the KV cache.

**Stock transformers.**  :func:`headsieve.models.heads.save_pruned` keeps the unpruned shape in the config
(the record names the pruned heads), so only :func:`~headsieve.models.heads.load_pruned` loads it (stock
``from_pretrained`` refuses the mismatched projection shapes).  When every layer keeps
the same numbers of query and key-value heads in even groups (e.g. the same whole groups removed in every
layer), :func:`~headsieve.models.heads.save_stock` writes a config with those numbers and ``head_dim``
pinned, which stock ``from_pretrained`` loads as an unpruned model of the smaller shape.
"""

from __future__ import annotations

from headsieve.models.families.base import ENCODER_RECORD, Family, KindLayout
from headsieve.models.families.common import cache_length_update, headless_output, switch_class


class HeadlessAttention:
    """Mixin for a Llama-style attention layer with no heads left: output = ``o_proj`` of an empty context
    (its bias, zero without bias); the KV cache gets a placeholder head."""

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)
        length = cache_length_update(self, hidden_states, None, cache, self.head_dim, kwargs)
        return headless_output(self, self.o_proj, hidden_states, length)


class ExpandedHeads:
    """Mixin for a key or value projection of a layer with ragged key-value groups: each key-value head's
    output repeated for every query head that reads it (``headsieve_expand``; None: unchanged)."""

    headsieve_expand = None

    def forward(self, hidden_states):
        out = super().forward(hidden_states)
        if self.headsieve_expand is None:
            return out
        import torch

        index = torch.tensor(self.headsieve_expand, dtype=torch.long, device=out.device)
        heads = out.view(*out.shape[:-1], -1, self.headsieve_head_dim).index_select(-2, index)
        return heads.reshape(*out.shape[:-1], -1)


def _group(module, key, value, heads: list[int], group_size: int) -> None:
    """Set ``num_key_value_groups`` and the key/value expansion of one layer whose query heads are ``heads``."""
    groups = sorted({h // group_size for h in heads})
    counts = {sum(1 for h in heads if h // group_size == g) for g in groups}
    expand = None
    if len(counts) == 1:
        module.num_key_value_groups = counts.pop()
    else:
        module.num_key_value_groups = 1
        expand = [groups.index(h // group_size) for h in heads]
    for projection in (key, value):
        if expand is not None:
            switch_class(projection, ExpandedHeads)
            projection.headsieve_head_dim = module.head_dim
        if isinstance(projection, ExpandedHeads):
            projection.headsieve_expand = expand


def finish(sites, remaining: dict, record: dict, space) -> None:
    """After pruning: headless layers get :class:`HeadlessAttention`, the others their grouping (docstring)."""
    for site in sites:
        heads = remaining[site.site]
        if not heads:
            switch_class(site.attention, HeadlessAttention)
            continue
        _group(site.attention, site.key, site.value, heads, space.kind(site.kind).group_size)


FAMILY = Family(
    name="llama",
    model_types=("llama", "qwen2", "mistral"),
    kinds=(
        KindLayout(
            "decoder", stack="layers", attention="self_attn", output="self_attn.o_proj",
            layers=("num_hidden_layers",), heads=("num_attention_heads",), kv_heads=("num_key_value_heads",),
        ),
    ),  # fmt: skip
    projections=("q_proj", "k_proj", "v_proj"),
    head_count=None,
    head_size="head_dim",
    head_width=None,
    token_types=False,
    record=ENCODER_RECORD,
    headless=HeadlessAttention,
    finish=finish,
    stock_head_size="head_dim",
)
