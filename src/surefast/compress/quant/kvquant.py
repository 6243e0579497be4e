"""Simulated KV-cache quantization (QuaRot Sec. 4, stage 1c "keys and values").

Keys and values are quantized per token and per head (asymmetric, one scale and zero point over
``head_dim``, ``kv_bits`` bits) where attention reads them. Keys are first rotated with a
Hadamard matrix over ``head_dim`` together with the queries (``(q H)(k H)^T = q k^T``: exact
before quantization), as QuaRot does after RoPE; values are already rotated per head offline
(:func:`~surefast.compress.quant.rotation.rotate_heads_`). Quantizing every cached position
at each read equals storing quantized entries, because the quantizer acts per token.

Mechanism: a registered transformers attention function (``"surefast_kv"``) that does the
above and then calls the SDPA kernel; the model's ``_attn_implementation`` is switched to it.
"""

from __future__ import annotations

from typing import Any

import torch

from surefast.compress.quant.fake import fake_quant_tokens
from surefast.compress.quant.hadamard import HadamardTransform

NAME = "surefast_kv"
BITS_ATTR = "_surefast_kv_bits"


def kv_quant_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bits = getattr(module, BITS_ATTR, 16)
    if bits < 16:
        had = HadamardTransform(query.shape[-1])
        query, key = had(query), had(key)  # [B, heads, S, hd], [B, kv_heads, S, hd]
        key = fake_quant_tokens(key, bits, symmetric=False)
        value = fake_quant_tokens(value, bits, symmetric=False)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, kv_quant_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def install_kv_quant_(model: Any, bits: int) -> None:
    """Quantize keys and values to ``bits`` in every attention module of ``model``."""
    from surefast.models.arch import arch_facts, decoder_layers, get

    _register()
    arch = arch_facts(model)
    for block in decoder_layers(model):
        setattr(get(block, arch.attn), BITS_ATTR, int(bits))
    for cfg in {
        id(c): c
        for c in (
            model.config,
            getattr(model.config, "text_config", None),
            *(getattr(m, "config", None) for m in model.modules()),
        )
        if c is not None
    }.values():
        cfg._attn_implementation = NAME
