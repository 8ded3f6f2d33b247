"""``gqa_sdpa``: transformers' SDPA attention for grouped-query models without copying keys and values.

A grouped-query model has ``H`` query heads and ``G`` key/value heads, ``r = H / G`` query heads per key/value
head (SmolLM2-135M: 9 and 3; Qwen2.5-Math-1.5B: 12 and 2). transformers' "sdpa" attention hands torch's
``scaled_dot_product_attention`` one key/value head per query head (``repeat_kv``: a copy of the layer's whole KV
cache, ``r`` times over, on every forward) whenever an attention mask is given, which every left-padded batch
gives: on CPU that copy took ~2/3 of a SmolLM2 decode step at batch 64 (bench/generation_speed.py). Here the ``r``
query heads that read key/value head ``g`` become ``r`` blocks of query rows of that one head:

    q [B, H, T, d] -> [B, G, r*T, d]       (head h = g*r + j -> head g, rows j*T .. j*T + T-1; repeat_kv's order)
    mask [B, 1, T, L] -> [B, 1, r*T, L]    (the same T rows for each j; T = 1 when decoding: no copy at all)
    out [B, G, r*T, d] -> [B, T, H, d]

one SDPA call per layer with the same scores, softmax and values: the outputs equal "sdpa"'s up to float rounding
(tests/test_attention.py). A decoding step (one query row) is two batched matmuls instead (``_decode_attention``),
with or without a mask: transformers drops an all-ones mask, and torch's SDPA kernel on an unpadded batch made a
SmolLM2 step at batch 64 1.7x slower (330 vs 191 ms, bf16, one thread). Every other case (no grouping, a prefill
without a mask, a per-head mask, attention sinks) is "sdpa" itself. Masks are built as for "sdpa".

Registered under ``GQA_SDPA`` with transformers' public ``AttentionInterface`` and ``AttentionMaskInterface``
(``register()``, idempotent); models select it with ``attn_implementation="gqa_sdpa"``. Used by the hf sampler
(``dft_verl.generation``) and the hf rollout server (``dft_verl.rollout.server``), wherever they would use "sdpa".
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GQA_SDPA = "gqa_sdpa"


def gqa_sdpa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                               scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """Attention output ``[B, T, H, d]`` and None, as transformers' ``sdpa_attention_forward`` returns (called for
    every layer at every decoding step: no work here beyond the reshapes)."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, rows, dim = query.shape
    decoding = rows == 1 and dropout == 0 and not module.training
    shared_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
    # no mask (no padding) only when decoding: the one query row then reads every cached position
    if (groups == 1 or not (shared_mask or (attention_mask is None and decoding))
            or kwargs.get("s_aux") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    kv_heads, length = key.shape[1], key.shape[2]
    mask = None if attention_mask is None else attention_mask[..., :length]
    if decoding:
        return _decode_attention(query.view(batch, kv_heads, groups, dim), key, value, mask, scaling, heads), None
    if rows > 1:
        mask = mask.unsqueeze(2).expand(batch, 1, groups, rows, length).reshape(batch, 1, groups * rows, length)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(batch, kv_heads, groups * rows, dim), key, value, attn_mask=mask, dropout_p=dropout,
        scale=scaling)
    return out.view(batch, heads, rows, dim).transpose(1, 2).contiguous(), None


def _decode_attention(query, key, value, mask, scaling, heads):
    """One decoding step, ``[B, 1, H, d]``: per key/value head g, ``softmax(q_g k_g^T * scale + mask) v_g`` as two
    batched matmuls over [B*G] (q_g: its r query heads as rows). torch's CPU flash kernel pays a fixed cost per
    (batch, head) block that dominates at one query row: 1.1 ms against 0.3 ms at B=64, L=120 in bf16 (SmolLM2).
    The scores ``q k^T`` come out of the matmul in the model's dtype (in bf16 rounded to 8 bits of mantissa, ~0.4% of
    each score, where the flash kernel keeps them in float32); the scaling, mask and softmax are float32."""
    batch, kv_heads, groups, dim = query.shape
    length = key.shape[2]
    scale = dim**-0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)).float().mul_(scale)  # [B, G, r, L]
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores.add_(mask)
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # [B, G, r, d]
    return out.view(batch, 1, heads, dim)


def register() -> str:
    """Register ``gqa_sdpa`` with transformers (idempotent); returns its name for ``attn_implementation``."""
    AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention_forward)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    return GQA_SDPA


def for_inference(attn_implementation: str | None = None) -> str:
    """The attention a sampling model loads with: ``gqa_sdpa`` (registered here) where "sdpa", transformers' default
    (None), is asked for; any other implementation as asked."""
    return register() if attn_implementation in (None, "sdpa") else attn_implementation
