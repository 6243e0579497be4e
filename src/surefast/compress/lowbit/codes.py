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
        return dequantize_codes(self.codes, self.scales, self.zeros, self.group_size)

    def matches(self, weight: torch.Tensor) -> bool:
        """Whether these codes are exactly ``weight`` ``[out, in]`` (de-quantized, cast to its dtype):
        false for a weight changed after quantization (pruned, rotated, edited)."""
        if tuple(weight.shape) != self.shape:
            return False
        return torch.equal(self.dequantize().to(weight.device, weight.dtype), weight.detach())


def dequantize_codes(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int
) -> torch.Tensor:
    """``W_hat [out, in]`` fp32 from int8 ``codes [out, in]`` and ``scales``/``zeros [out, n_groups]``.

    ``q * s`` or ``(q - z) * s`` in fp32, broadcast over ``[out, n_groups, g]`` (a partial last
    group is padded, then the padding dropped): the operations of
    :func:`surefast.compress.quant.fake.quant_dequant`, so the fake-quant weight bit for bit.
    """
    out, inn = codes.shape
    groups = scales.shape[1]
    q = torch.nn.functional.pad(codes, (0, groups * group_size - inn)).float().view(out, groups, group_size)
    if zeros is not None:
        q = q - zeros.unsqueeze(-1)
    return (q * scales.unsqueeze(-1)).view(out, -1)[:, :inn]
