"""W8A8: int8 weights per output channel, int8 activations quantized per token at run time.

The weights are stored exactly as :mod:`.int8` stores them; what this format adds is the
activation grid, :class:`ActQuant`, which every kernel applies the way the fake-quant model does
(:func:`surefast.compress.quant.fake.fake_quant_tokens`, installed by SmoothQuant and QuaRot as an
input transform). :func:`quantize_tokens` returns the integer codes of that grid, so that an
int8 x int8 matmul (``torch._int_mm``, exact int32 accumulation) followed by the two scales gives
the fake-quant product up to the final rounding:

    y[m, n] = s_x[m] * s_w[n] * sum_k (q_x[m, k] - z_x[m]) * q_w[n, k]

For an asymmetric activation grid (``[0, 2^b - 1]``, which at 8 bits does not fit int8) the codes
are returned shifted by ``2^(b-1)``, zero point with them: ``q - z`` is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from surefast.compress.lowbit.formats import FORMATS, PackedFormat
from surefast.compress.lowbit.int8 import pack_int8, unpack_int8
from surefast.compress.quant.fake import check_bits, qparams


@dataclass(frozen=True)
class ActQuant:
    """Dynamic per-token activation grid: the ``act_bits``/``act_sym``/``act_clip`` of an input-transform spec."""

    bits: int = 8
    symmetric: bool = True
    clip: float = 1.0

    def __post_init__(self) -> None:
        check_bits(self.bits, "act_bits")

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ActQuant | None:
        """From :class:`~surefast.compress.quant.fake.InputTransform`'s spec; None when ``act_bits`` is 16 (off)."""
        bits = int(spec.get("act_bits", 16))
        if bits >= 16:
            return None
        return cls(bits, bool(spec.get("act_sym", True)), float(spec.get("act_clip", 1.0)))

    def spec(self) -> dict[str, Any]:
        return {"act_bits": self.bits, "act_sym": self.symmetric, "act_clip": self.clip}


def quantize_tokens(x: torch.Tensor, act: ActQuant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Codes of ``x [M, K]`` on ``act``'s per-token grid: int8 ``[M, K]``, scale and zero fp32 ``[M, 1]``
    (zero None on a symmetric grid).

    The same operations as ``fake_quant_tokens`` (fp32, ``round(x / s)``, the same clamp), so
    ``(q - z) * s`` is exactly the fake-quant activation before its cast back to ``x.dtype``.
    """
    xf = x.float()
    scale, zero = qparams(xf, act.bits, act.symmetric, act.clip)  # [M, 1] each
    if act.symmetric:
        q = torch.clamp(torch.round(xf / scale), -(2 ** (act.bits - 1)), 2 ** (act.bits - 1) - 1)
        return q.to(torch.int8), scale, None
    q = torch.clamp(torch.round(xf / scale) + zero, 0, 2**act.bits - 1)
    shift = 2 ** (act.bits - 1)  # [0, 2^b - 1] -> [-2^(b-1), 2^(b-1) - 1]: int8 even at 8 bits
    return (q - shift).to(torch.int8), scale, zero - shift


def int8_matmul_reference(qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
    """``qx [M, K] int8 @ qw [N, K]^T`` in exact int32 (the plain-loop equal of ``torch._int_mm``)."""
    return (qx.to(torch.int64) @ qw.to(torch.int64).t()).to(torch.int32)  # |sum| < K * 2^14 < 2^31


def w8a8_product(
    acc: torch.Tensor,
    x_scale: torch.Tensor,
    x_zero: torch.Tensor | None,
    w_scale: torch.Tensor,
    w_rowsum: torch.Tensor,
) -> torch.Tensor:
    """``s_x s_w (acc - z_x sum_k q_w)`` in fp32 ``[M, N]``; the zero term is integer arithmetic (exact)."""
    if x_zero is not None:
        acc = acc - x_zero.to(torch.int32) * w_rowsum.view(1, -1)  # [M, N] int32; |z| <= 128
    return acc.float() * x_scale * w_scale.view(1, -1)


W8A8 = FORMATS.register(
    "w8a8",
    PackedFormat(
        name="w8a8",
        max_bits=8,
        pack=pack_int8,
        unpack=unpack_int8,
        packed_shape=lambda out, inn: (out, inn),
        packed_dtype=torch.int8,
        quantizes_activations=True,
        description="int8 weights per output channel; activations quantized to int8 per token at run time",
    ),
)
