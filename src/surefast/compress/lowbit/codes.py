"""The integer codes and scales a quantizer chose for one weight: the contract between quantizers and packing.

For ``W [out, in]`` quantized in groups of ``group_size`` consecutive input channels (the last
group may be partial; ``group_size == in`` is per output channel), a :class:`QuantizedWeight`
holds exactly what :func:`surefast.compress.quant.fake.quant_dequant` rounded to:

* symmetric: ``W_hat = q * s`` with ``q`` in ``[-2^(b-1), 2^(b-1) - 1]``;
* asymmetric: ``W_hat = (q - z) * s`` with ``q`` in ``[0, 2^b - 1]`` and ``z`` an integer-valued
  float (the zero point, as the fake quantizer computes it).

Recorded at quantization time, never re-derived from the de-quantized floats, which can round
differently. :meth:`QuantizedWeight.dequantize` must reproduce the fake-quant weight bit for bit
(in fp32, before the cast to the model's dtype).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surefast.errors import SurefastError


@dataclass(frozen=True)
class QuantizedWeight:
    codes: torch.Tensor  # int8 [out, in]: the grid points, unpacked
    scales: torch.Tensor  # fp32 [out, n_groups]
    zeros: torch.Tensor | None  # fp32 [out, n_groups] (integer-valued) for asymmetric grids, else None
    bits: int
    group_size: int  # input channels per group; equal to ``in`` for one group per row

    def __post_init__(self) -> None:
        out, inn = self.codes.shape
        groups = -(-inn // self.group_size)
        if self.codes.dtype != torch.int8 or tuple(self.scales.shape) != (out, groups):
            raise SurefastError(
                f"internal: codes {tuple(self.codes.shape)} {self.codes.dtype} do not match scales "
                f"{tuple(self.scales.shape)} for group_size {self.group_size}"
            )
        if self.zeros is not None and tuple(self.zeros.shape) != (out, groups):
            raise SurefastError(f"internal: zeros {tuple(self.zeros.shape)} do not match scales {groups} groups")

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), int(self.codes.shape[1]))

    def dequantize(self) -> torch.Tensor:
        """``W_hat [out, in]`` in fp32: ``q * s`` or ``(q - z) * s``, group by group."""
        index = torch.arange(self.shape[1]) // self.group_size  # [in]: the group of each input channel
        scale = self.scales[:, index]  # [out, in]
        q = self.codes.float()
        if self.zeros is None:
            return q * scale
        return (q - self.zeros[:, index]) * scale
