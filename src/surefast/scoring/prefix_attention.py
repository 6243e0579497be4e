"""Attention of a batch of items over one shared prefix, with the prefix K/V read once, not per row.

Every item of a batch continues the same prefix (``P`` tokens) with its own ``Q`` tokens. The
plain way (:class:`surefast.scoring.prefix.SharedPrefixLayer`) concatenates the prefix K/V in
front of each row's own K/V and runs masked attention over ``P + Q`` keys: per layer a
``[B, kv_heads, P + Q, head_dim]`` copy, GQA's repeat of it to every query head, and an explicit
mask the CPU kernel has to read block by block. Here the softmax over ``[prefix; own tokens]`` is
split in two and merged exactly by the log-sum-exp of each part (as flash attention merges blocks):

* prefix part: no mask (every item token sees the whole prefix), and the prefix is the same for
  every row, so all ``B * Q`` queries of one K/V head group are one long query sequence against
  ``[1, kv_heads, P, head_dim]``: ``o_p, lse_p``;
* own part: plain causal attention within the row: ``o_s, lse_s``. Rows are right-padded, and
  with causal attention no real token sees a pad, so no padding mask is needed (pads' outputs
  are never read);
* ``lse = logaddexp(lse_p, lse_s)``, ``out = o_p * exp(lse_p - lse) + o_s * exp(lse_s - lse)``.

This equals softmax attention over the concatenated keys up to float rounding
(tests/scoring/test_prefix_attention.py holds it to a naive reference and to the full forward).
It runs as a registered transformers attention implementation (:data:`NAME`); the decoder body
gets the prefix K/V as the keyword ``shared_prefix`` and no cache, so transformers builds no mask.
Used only where :func:`unsupported_reason` finds nothing against it (CPU, full attention in every
layer, a model family whose attention has no extra terms, transformers' default ``sdpa`` kernel).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

NAME = "surefast_shared_prefix"
# Families whose attention is plain scaled softmax attention (no soft-capping, sinks or windows),
# each checked against the full forward in the tests.
MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "qwen3_moe"})
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass(frozen=True)
class PrefixKV:
    """Per layer the prefix's keys and values, ``[1, kv_heads, P, head_dim]`` each."""

    keys: Sequence[torch.Tensor]
    values: Sequence[torch.Tensor]


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp: ``q [B, h, L, d]``, ``k, v [B, h, S, d]`` ->
    ``out [B, h, L, d]`` (q's dtype) and ``lse [B, h, L]`` (float32). ``causal`` aligns the
    last query with the last key (only ``L == S`` is used here)."""
    if _FLASH_CPU is not None and q.device.type == "cpu":
        out, lse = _FLASH_CPU(q, k, v, 0.0, causal, scale=scale)
        return out, lse.float()
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # [B, h, L, S]
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - q.shape[-2])
        scores = scores.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    return ((scores - lse[..., None]).exp() @ v.float()).to(q.dtype), lse


def shared_prefix_attention(
    q: torch.Tensor,
    k_own: torch.Tensor,
    v_own: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Attention of ``q [B, h, Q, d]`` over ``[prefix; own]`` keys: ``[B, h, Q, d]`` in q's dtype.

    ``k_own, v_own [B, kv, Q, d]`` (causal within the row), ``k_prefix, v_prefix [1, kv, P, d]``
    (seen by every query); ``h`` a multiple of ``kv`` (grouped-query attention).
    """
    b, h, n_q, d = q.shape
    kv = k_prefix.shape[1]
    g = h // kv
    # prefix part: query head (kv, j) of every row and position as one sequence per kv head
    q_flat = q.reshape(b, kv, g, n_q, d).transpose(0, 1).reshape(1, kv, b * g * n_q, d)  # [1, kv, B g Q, d]
    o_p, lse_p = attention_with_lse(q_flat, k_prefix, v_prefix, False, scale)
    o_p = o_p.reshape(kv, b, g, n_q, d).transpose(0, 1).reshape(b, h, n_q, d)
    lse_p = lse_p.reshape(kv, b, g, n_q).transpose(0, 1).reshape(b, h, n_q)
    # own part: causal over the row's own tokens, each kv head repeated for its g query heads
    o_s, lse_s = attention_with_lse(q, k_own.repeat_interleave(g, 1), v_own.repeat_interleave(g, 1), True, scale)
    lse = torch.logaddexp(lse_p, lse_s)  # [B, h, Q]
    out = o_p.float() * (lse_p - lse).exp()[..., None] + o_s.float() * (lse_s - lse).exp()[..., None]
    return out.to(q.dtype)


def attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The transformers attention-interface form: ``[B, Q, h, d]`` out (no weights), prefix from kwargs."""
    prefix: PrefixKV | None = kwargs.get("shared_prefix")
    if prefix is None:
        raise RuntimeError(f"attention {NAME!r} needs the prefix K/V as the keyword shared_prefix")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    i = module.layer_idx
    out = shared_prefix_attention(query, key, value, prefix.keys[i], prefix.values[i], scale)
    return out.transpose(1, 2).contiguous(), None


def unsupported_reason(body: Any, device: torch.device) -> str | None:
    """Why the split attention cannot serve this decoder body (None: it can)."""
    config = body.config
    if device.type != "cpu":
        return f"device {device.type}: the split attention is for the CPU kernel"
    if config.model_type not in MODEL_TYPES:
        return f"model type {config.model_type!r} is not one checked for it"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "a layer uses sliding-window attention"
    if config._attn_implementation != "sdpa":  # a kernel the user chose (eager, flex, ...) is kept
        return f"attention implementation {config._attn_implementation!r} was chosen for this model"
    return None


@contextmanager
def active(body: Any) -> Iterator[None]:
    """Within the block, ``body``'s attention layers run :func:`attention` (restored after)."""
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, attention)
    config = body.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
