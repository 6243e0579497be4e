"""int8: one code per byte, per output channel (``group_size == in``) or per group.

Layout of ``qweight``: int8 ``[out, in]``, the codes themselves (``[-128, 127]`` symmetric; an
asymmetric code of at most 7 bits, ``[0, 127]``, also fits). Nothing is padded, so every ``in``
is held as it is. An asymmetric 8-bit grid (codes ``[0, 255]``) cannot be recorded in the
:class:`~surefast.compress.lowbit.codes.QuantizedWeight` contract's int8 codes at all, so it
never reaches this format.
"""

from __future__ import annotations

import torch

from surefast.compress.lowbit.formats import FORMATS, PackedFormat


def pack_int8(codes: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """``codes`` int8 ``[out, in]`` -> int8 ``[out, in]``: a contiguous copy (the format is the codes)."""
    return codes.to(torch.int8).contiguous().clone()


def unpack_int8(packed: torch.Tensor, in_features: int, symmetric: bool) -> torch.Tensor:
    """Inverse of :func:`pack_int8`."""
    return packed[:, :in_features].to(torch.int8).clone()


def _packed_shape(out: int, inn: int) -> tuple[int, int]:
    return (out, inn)


INT8 = FORMATS.register(
    "int8",
    PackedFormat(
        name="int8",
        max_bits=8,
        pack=pack_int8,
        unpack=unpack_int8,
        packed_shape=_packed_shape,
        packed_dtype=torch.int8,
        description="8-bit codes, one per byte, fp32 scales per output channel or per group",
    ),
)
