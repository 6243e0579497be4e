"""The shared prefix's KV cache: computed once, reused read-only by every batch of items.

How transformers 5.x caches work (checked against 5.23 ``cache_utils.py``): a ``DynamicCache``
is a list of per-layer objects. A full-attention ``DynamicLayer`` holds ``keys``/``values`` of
shape ``[B, kv_heads, S, head_dim]`` and its ``update`` concatenates the new K/V and stores the
result. A ``DynamicSlidingWindowLayer`` (gemma3's local layers) keeps only the last
``sliding_window - 1`` tokens, counts every token seen in ``cumulative_length``, and reports
``get_mask_sizes(q) = (kv_length, kv_offset)`` so the sliding mask is built over absolute
positions: the window-limited keys it kept are exactly the ones later queries may see. Reusing a
prefix longer than the window is therefore exact, and the test compares it with the full forward.

Per batch we build :class:`SharedPrefixCache`: one layer object per model layer holding the
prefix K/V *expanded* (a stride-0 view, no copy) to the batch size, whose ``update`` returns
``cat(prefix, new)`` without storing it. The stored prefix is never mutated, and the
concatenated K/V of a layer is freed as soon as that layer's attention is done (a stored cache
would hold all layers' ``[B, kv_heads, P + Q, head_dim]`` copies until the forward ends).

Layer kinds we cannot share this way (linear-attention/SSM states, KV-sharing dummies, indexed
or quantized caches) make :func:`unsupported_reason` return a reason, and scoring falls back to
full prefix + item forwards for that model.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from surefast.models.arch import cache_kwarg
from surefast.scoring.prefix_attention import PrefixKV


class SharedPrefixLayer(DynamicLayer):
    """Full attention: prefix K/V broadcast over the batch, read-only."""

    def __init__(self, keys: Any, values: Any, batch: int) -> None:
        super().__init__()
        self.keys = keys.expand(batch, -1, -1, -1)  # [B, kv_heads, P, head_dim], no copy
        self.values = values.expand(batch, -1, -1, -1)
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        assert self.keys is not None and self.values is not None
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class SharedSlidingPrefixLayer(DynamicSlidingWindowLayer):
    """Sliding window: the last ``window - 1`` prefix K/V and the prefix length, read-only.

    Returns ``cat(kept prefix, new)`` exactly as ``DynamicSlidingWindowLayer.update`` returns its
    "full states"; ``get_mask_sizes``/``get_seq_length`` are inherited and read
    ``cumulative_length`` (the prefix length), so the mask's offsets match.
    """

    def __init__(self, source: Any, batch: int) -> None:
        super().__init__(sliding_window=source.sliding_window)
        self.keys = source.keys.expand(batch, -1, -1, -1)
        self.values = source.values.expand(batch, -1, -1, -1)
        self.dtype, self.device = source.keys.dtype, source.keys.device
        self.cumulative_length = source.cumulative_length
        self._sliding_window_tensor = source._sliding_window_tensor
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        assert self.keys is not None and self.values is not None
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class SharedPrefixCache(DynamicCache):
    """A DynamicCache whose layers are the shared-prefix layers above (models type-check DynamicCache)."""

    def __init__(self, layers: list[Any]) -> None:
        Cache.__init__(self, layers=layers)


def unsupported_reason(cache: Cache) -> str | None:
    """Why the prefix cache of this model cannot be shared across a batch (None: it can)."""
    layer: Any
    for i, layer in enumerate(cache.layers):
        kind = type(layer)
        if kind is DynamicSlidingWindowLayer:
            if layer.record_past:
                return f"layer {i}: sliding-window layer records its past"
        elif kind is not DynamicLayer:
            return f"layer {i}: cache layer {kind.__name__} is not a plain full or sliding attention layer"
        if layer.keys is None or layer.keys.shape[0] != 1:
            return f"layer {i}: cache layer holds no keys for the prefix"
    return None


class PrefixState:
    """The prefix's K/V for one (model, prefix ids), computed by one forward of the decoder body."""

    def __init__(self, body: Any, prefix_ids: list[int], device: torch.device) -> None:
        self.length = len(prefix_ids)
        ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)  # [1, P]
        cache = DynamicCache(config=body.config)
        body(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(self.length, device=device)[None],
            use_cache=True,
            **{cache_kwarg(body): cache},
        )
        self.cache = cache
        self.reason = unsupported_reason(cache)

    @property
    def supported(self) -> bool:
        return self.reason is None

    def kv(self) -> PrefixKV:
        """The prefix K/V of every layer, ``[1, kv_heads, P, head_dim]`` each (full-attention layers only)."""
        layers: list[Any] = list(self.cache.layers)
        return PrefixKV(keys=[layer.keys for layer in layers], values=[layer.values for layer in layers])

    def batch_cache(self, batch: int) -> SharedPrefixCache:
        """A fresh cache for ``batch`` rows that continues after the prefix; the stored one stays untouched."""
        layers: list[Any] = []
        layer: Any
        for layer in self.cache.layers:
            if type(layer) is DynamicSlidingWindowLayer:
                layers.append(SharedSlidingPrefixLayer(layer, batch))
            else:
                layers.append(SharedPrefixLayer(layer.keys, layer.values, batch))
        return SharedPrefixCache(layers)
