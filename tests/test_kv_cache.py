"""The sampler's KV cache (``dft_verl.rollout.kv_cache``: positions reserved once, appended in place) against
transformers' own ``DynamicCache``: the same model, the same left-padded batch, the same steps; the logits must be
equal bit for bit, for both attentions the sampler runs and both grouped-query layouts (SmolLM2's, Qwen2.5's)."""

import pytest
import torch
from test_attention import padded_batch, tiny_gqa

from dft_verl.rollout.kv_cache import ReservedLayer, reserve
from dft_verl.rollout.sampler import prefill


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "gqa_sdpa"])
@torch.no_grad()
def test_reserved_cache_gives_the_dynamic_caches_logits(kind, attention):
    """A shared prefill (each prompt twice), decoding steps, rows leaving (a reorder that drops rows) and repeating
    (one that repeats a row): equal logits at every step, equal lengths; a step past the reserved capacity fails
    instead of writing out of bounds."""
    model = tiny_gqa(kind, attention)
    ids, mask = padded_batch()
    ids, mask = ids.repeat_interleave(2, dim=0), mask.repeat_interleave(2, dim=0)
    steps, capacity = 6, ids.shape[1] + 6
    (dynamic, logits), (reserved, logits_r) = (prefill(model, ids, mask, share=True, capacity=c)
                                                for c in (None, capacity))
    assert all(isinstance(layer, ReservedLayer) for layer in reserved.layers)
    assert torch.equal(logits, logits_r)
    positions = mask.sum(-1, keepdim=True) - 1
    for step in range(steps):
        if step in (2, 4):  # 2: rows 1 and 4 leave; 4: row 0 is repeated
            keep = torch.tensor([0, 2, 3, 5, 6, 7, 8, 9] if step == 2 else [0, 0, 1, 3, 4])
            for cache in (dynamic, reserved):
                cache.reorder_cache(keep)
            logits, mask, positions = logits[keep], mask[keep], positions[keep]
        drawn = logits.argmax(-1, keepdim=True)
        mask, positions = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1), positions + 1
        logits, logits_r = (model(input_ids=drawn, attention_mask=mask, position_ids=positions, past_key_values=cache,
                                  use_cache=True).logits[:, -1] for cache in (dynamic, reserved))
        assert torch.equal(logits, logits_r), (step, (logits - logits_r).abs().max())
    assert reserved.get_seq_length() == dynamic.get_seq_length() == capacity
    with pytest.raises(RuntimeError, match="KV cache full"):
        model(input_ids=drawn, attention_mask=torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1),
              position_ids=positions + 1, past_key_values=reserved, use_cache=True)


def test_reserve_takes_only_an_empty_cache():
    from transformers import DynamicCache

    model = tiny_gqa("llama", "sdpa")
    ids, mask = padded_batch()
    cache, _ = prefill(model, ids, mask)
    with pytest.raises(ValueError, match="empty cache"):
        reserve(cache, 64)
    assert all(type(layer) is ReservedLayer for layer in reserve(DynamicCache(config=model.config), 64).layers)
