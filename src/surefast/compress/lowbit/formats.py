"""Packed weight formats by name: how a :class:`~.codes.QuantizedWeight`'s codes are stored.

A format stores three things as tensors (the buffers of a
:class:`~surefast.compress.lowbit.linear.PackedLinear`, so ``state_dict``/safetensors save them):
the packed codes (``qweight``, the format's own layout), the fp32 scales ``[out, n_groups]`` and,
for asymmetric grids, the fp32 zero points ``[out, n_groups]``, exactly as the quantizer chose
them. The pure pack/unpack functions live in one file per format (``int4.py``, ``int8.py``,
``w8a8.py``), each ending with its registration in :data:`FORMATS`; the kernels that run a
format live in ``kernels.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from surefast.compress.lowbit.codes import QuantizedWeight, dequantize_codes
from surefast.errors import SurefastError
from surefast.registry import Registry, dashed


@dataclass(frozen=True)
class PackedFormat:
    """One storage format. ``pack(codes [out, in] int8, symmetric) -> qweight`` and
    ``unpack(qweight, in_features, symmetric) -> codes [out, in] int8`` are exact inverses;
    ``packed_shape(out, in)`` and ``packed_dtype`` let a loader allocate ``qweight`` before
    reading it (a packed folder loads without ever building a dense weight)."""

    name: str
    max_bits: int  # the widest code this format stores (a 3-bit code fits an int4 nibble)
    pack: Callable[[torch.Tensor, bool], torch.Tensor]
    unpack: Callable[[torch.Tensor, int, bool], torch.Tensor]
    packed_shape: Callable[[int, int], tuple[int, int]]
    packed_dtype: torch.dtype
    quantizes_activations: bool = False  # W8A8: int8 activations per token at run time
    description: str = ""

    def check(self, qw: QuantizedWeight) -> None:
        """Refuse a weight this format cannot hold, naming what to use instead."""
        if qw.bits > self.max_bits:
            raise SurefastError(
                f"packed format {self.name!r} holds codes of at most {self.max_bits} bits; this weight has {qw.bits}",
                "use format 'int8'" if qw.bits <= 8 else "integer formats hold 2 to 8 bits",
            )
        lo, hi = code_range(qw.bits, qw.symmetric)
        if qw.codes.numel() and (int(qw.codes.min()) < lo or int(qw.codes.max()) > hi):
            raise SurefastError(
                f"internal: {qw.bits}-bit {'symmetric' if qw.symmetric else 'asymmetric'} codes lie outside "
                f"[{lo}, {hi}] (min {int(qw.codes.min())}, max {int(qw.codes.max())})"
            )


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer grid of :mod:`surefast.compress.quant.fake`: ``[-2^(b-1), 2^(b-1)-1]`` or ``[0, 2^b-1]``."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


FORMATS: Registry[PackedFormat] = Registry("packed format", normalize=dashed)


def dequantize_packed(
    format: str,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    in_features: int,
    bits: int,
    group_size: int,
) -> torch.Tensor:
    """``W_hat [out, in]`` fp32 from stored buffers: bit for bit :meth:`QuantizedWeight.dequantize`."""
    codes = FORMATS.get(format).unpack(qweight, in_features, zeros is None)  # int8 [out, in]
    return dequantize_codes(codes, scales, zeros, group_size)


def get_format(name: str) -> PackedFormat:
    """The format registered as ``name`` (``"int4"``, ``"int8"``, ``"w8a8"``); unknown: did-you-mean."""
    return FORMATS.get(name)
