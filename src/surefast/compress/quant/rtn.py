"""RTN: round-to-nearest group quantization of weights (optionally of activations too).

The baseline every weight-quantization paper compares against (e.g. GPTQ, Frantar et al. 2023,
Table 1 "RTN"; Dettmers et al. 2022 for the per-group variant): ``Q(W)`` rounds each weight to
the nearest point of a per-group integer grid (:mod:`surefast.compress.quant.fake`). No
calibration data. ``act_bits < 16`` adds dynamic per-token activation quantization of every
quantized layer's input (the plain "RTN W4A4" baseline QuaRot improves upon).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, Method, register
from surefast.compress.quant.fake import check_bits, fake_quant_weight, install_act_quant_


@dataclass(frozen=True)
class RTNConfig(CompressionConfig):
    method: ClassVar[str] = "rtn"
    bits: int = 4
    group_size: int = 128  # input channels per scale; -1 = per output channel
    symmetric: bool = True
    clip_search: bool = False  # per-group clipped ranges (fake.search_qparams) instead of full ranges
    act_bits: int = 16  # 16 = activations stay in floating point

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_bits(self.act_bits, "act_bits", off=16)  # here, not once the model has loaded (and GPTQ run)


def rtn_quantize(weight: torch.Tensor, config: RTNConfig) -> torch.Tensor:
    """Pure core: ``W [out, in]`` -> de-quantized ``Q(W) [out, in]`` (fp32)."""
    return fake_quant_weight(weight, config.bits, config.group_size, config.symmetric, config.clip_search)


@register(RTNConfig)
class RTN(Method):
    config: RTNConfig

    def compress_layer(self, name: str, weight: torch.Tensor, stats: Any) -> torch.Tensor:
        return rtn_quantize(weight, self.config)

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        install_act_quant_(ctx.selected, self.config.act_bits)
        return {}
