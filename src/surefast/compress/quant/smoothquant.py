"""SmoothQuant: migrate activation outliers into the weights, then W8A8.

Xiao, Lin, Seznec, Wu, Demouth, Han, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models" (ICML 2023), eq. 4: per input channel ``j``
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (alpha = 0.5 by default); ``X diag(s)^-1`` is
folded into the preceding norm and ``diag(s) W`` into the consumers (q/k/v after the attention
norm, gate/up after the MLP norm: the paper's "layer-norm" smoothing; o and down stay unsmoothed,
as in the paper). Then weights are quantized per output channel (symmetric, ``bits``) and every
selected linear's input per token, dynamically (the paper's "O2"-style per-token dynamic
activation scheme; their "O3" static per-tensor scheme is not simulated).

Choices: ``max|X_j|`` is taken over all calibration tokens of the block input *after* the
previous blocks were quantized (the pipeline is sequential); ``s`` is clamped to ``[1e-5, 1e5]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, Method, register
from surefast.compress.quant.fake import check_bits, fake_quant_weight, install_act_quant_
from surefast.compress.quant.mappings import consumer_weight_absmax, group_stats, scale_group_, scale_groups


@dataclass(frozen=True)
class SmoothQuantConfig(CompressionConfig):
    method: ClassVar[str] = "smoothquant"
    alpha: float = 0.5  # migration strength: 0 = all difficulty on activations, 1 = on weights
    bits: int = 8  # weights, per output channel
    act_bits: int = 8  # activations, per token, dynamic; 16 = off
    group_size: int = -1
    quantize: bool = True  # False: only migrate the scales (an exact transform; used by tests)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_bits(self.act_bits, "act_bits", off=16)  # here, not once the model has loaded (and GPTQ run)


def smooth_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pure core, eq. 4: ``s_j = max|X_j|^a / max|W_j|^(1-a)`` for ``[in]`` vectors."""
    s = act_absmax.clamp_min(1e-5).pow(alpha) / weight_absmax.clamp_min(1e-5).pow(1 - alpha)
    return s.clamp(1e-5, 1e5)


@register(SmoothQuantConfig, needs=("absmax",))
class SmoothQuant(Method):
    config: SmoothQuantConfig

    def compress_block(self, block: Any) -> None:
        cfg = self.config
        for group in scale_groups(block.block, block.arch, inner=False):
            st = group_stats(block.stats, block.name, group.names)
            if st is None:
                continue
            s = smooth_scales(st.absmax, consumer_weight_absmax(group), cfg.alpha)
            scale_group_(group, s, block.arch.norm_offset)
        if cfg.quantize:
            for name, lin in block.linears.items():
                q = fake_quant_weight(lin.weight.detach().float(), cfg.bits, cfg.group_size)
                block.set_weight(name, q)

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        if self.config.quantize:
            install_act_quant_(ctx.selected, self.config.act_bits)
        return {}
