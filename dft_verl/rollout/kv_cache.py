"""A KV cache whose memory is reserved once per batch: appending a decoding step writes one position in place.

transformers' ``DynamicLayer`` appends with ``torch.cat``: every decoding step copies each layer's whole cache,
``2 x B x G x L x d`` values (SmolLM2-135M, B=64, L~100, bf16: 30 layers x 4.9 MB per step, ~7% of a step on
2 cores). ``ReservedLayer`` holds keys and values in buffers of ``capacity`` positions (a batch's prompt width +
its largest ``max_tokens``: the sampler knows it before the prefill) and exposes the filled prefix:

    update(k, v)      buffer[:, :, L : L + t] = k;  L += t;  keys = buffer[:, :, :L]   (a view, no copy)
    reorder_cache(i)  a new buffer whose first L positions are buffer[i, :, :L]        (rows leave / repeat)

The views are strided in the head dimension (``capacity x d`` apart); the prefill's SDPA and the decode matmuls of
``dft_verl.attention`` read them as they are. The values are the ones ``DynamicLayer`` would hold, so attention
computes the same numbers (tests/test_rollout_server.py: tokens and log-probs equal to the dynamic cache's).

transformers seam: ``DynamicCache(config=...)`` builds one ``DynamicLayer`` per full-attention layer, and the model
calls each layer's ``update``, ``get_seq_length`` and ``get_mask_sizes``; a layer's ``keys`` / ``values`` /
``is_initialized`` attributes are ``CacheLayerMixin``'s (transformers 5.x). ``reserve`` swaps those layers for
``ReservedLayer``s and leaves any other kind (sliding windows, linear attention) as transformers made it.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values, ``[B, G, L, d]`` views of buffers ``[B, G, capacity, d]``."""

    def __init__(self, capacity: int):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.length = 0
        self._key_buffer = self._value_buffer = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, dim = key_states.shape
        self._key_buffer = key_states.new_empty(batch, heads, self.capacity, dim)
        self._value_buffer = value_states.new_empty(batch, value_states.shape[1], self.capacity, value_states.shape[3])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions asked of a cache reserved for {self.capacity}")
        self._key_buffer[:, :, self.length:end].copy_(key_states)
        self._value_buffer[:, :, self.length:end].copy_(value_states)
        self.length = end
        self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self.length:
            return
        index = beam_idx.to(self.device)
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = old.new_empty(len(index), *old.shape[1:])
            torch.index_select(old[:, :, :self.length], 0, index, out=new[:, :, :self.length])
            setattr(self, name, new)
        self.keys, self.values = (b[:, :, :self.length] for b in (self._key_buffer, self._value_buffer))

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("ReservedLayer is the hf sampler's cache: crop / batch_repeat_interleave / "
                                  "batch_select_indices are not used there")

    crop = batch_repeat_interleave = batch_select_indices = _unsupported


def reserve(cache: DynamicCache, capacity: int) -> DynamicCache:
    """``cache`` (empty, built with the model's config) with each plain ``DynamicLayer`` replaced by a
    ``ReservedLayer`` of ``capacity`` positions; returns it."""
    if cache.get_seq_length():
        raise ValueError("reserve() takes an empty cache")
    cache.layers = [ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
