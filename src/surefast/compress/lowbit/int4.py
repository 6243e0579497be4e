"""int4: two 4-bit codes per byte, groups of any size (32/64/128 are what kernels run fastest).

Layout of ``qweight``: uint8 ``[out, ceil(in / 2)]``; byte ``j`` of a row holds input channel
``2j`` in its low nibble and ``2j + 1`` in its high nibble. Nibbles are unsigned: a symmetric
code ``q`` in ``[-8, 7]`` is stored as ``q + 8`` (so the nibble is the code of the grid shifted
to ``[0, 15]``, the "offset binary" that GPTQ, compressed-tensors and torch's int4 kernels use);
an asymmetric code in ``[0, 15]`` is stored as it is, its zero point kept beside it in fp32. An
odd ``in`` is padded with one nibble (``8`` or ``0``, i.e. the code 0 / the grid's bottom) that
:func:`unpack_int4` drops. Read as little-endian int32 words, rows whose ``in`` is a multiple of
8 are exactly compressed-tensors' "pack-quantized" int4 words (eight nibbles, lowest first).
Codes of fewer bits (int3, int2) fit a nibble too.

torch's int4 kernels (CPU ``_weight_int4pack_mm_for_cpu``, CUDA tinygemm ``_weight_int4pack_mm``)
take the same unsigned nibbles, in their own order, with a ``[K/kg, N, 2]`` scale-and-zero tensor
of their own convention; :func:`padded_nibbles`, :func:`torch_scale_zero` and
:func:`tinygemm_bytes` convert ours exactly (the kernels themselves are in ``kernels.py``).
"""

from __future__ import annotations

import torch

from surefast.compress.lowbit.formats import FORMATS, PackedFormat

OFFSET = 8  # a symmetric int4 code q is stored as the unsigned nibble q + 8
KERNEL_GROUPS = (256, 128, 64, 32)  # what torch's int4 kernels accept, largest (fewest scales) first


def pack_int4(codes: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """``codes`` int8 ``[out, in]`` -> uint8 ``[out, ceil(in / 2)]`` (low nibble = even channel)."""
    u = codes.to(torch.int16) + (OFFSET if symmetric else 0)  # [out, in] in [0, 15]
    if u.shape[1] % 2:
        # an odd row gets one padding nibble: the stored value of code 0 / the grid bottom
        u = torch.nn.functional.pad(u, (0, 1), value=OFFSET if symmetric else 0)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).to(torch.uint8)  # [out, ceil(in/2)]


def unpack_int4(packed: torch.Tensor, in_features: int, symmetric: bool) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[out, ceil(in / 2)]`` -> int8 codes ``[out, in]``."""
    return (nibbles(packed, in_features).to(torch.int16) - (OFFSET if symmetric else 0)).to(torch.int8)


def nibbles(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The stored nibbles, uint8 ``[out, in]`` in ``[0, 15]`` (low nibble first, the padding one dropped)."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)[:, :in_features]


def unsigned_codes(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The stored nibbles as int32 ``[out, in]`` (what torch's int4 kernels take)."""
    return nibbles(packed, in_features).to(torch.int32)


def kernel_group(group_size: int) -> int | None:
    """The torch kernel group for our ``group_size``: the largest of 256/128/64/32 dividing it
    (a kernel group then never straddles two of ours; each repeats its group's scale), or None."""
    return next((g for g in KERNEL_GROUPS if group_size % g == 0), None)


def padded_nibbles(packed: torch.Tensor, in_features: int, k_padded: int, n_padded: int) -> torch.Tensor:
    """The stored nibbles as int32 ``[N', K']``; padding holds 8 (its rows have scale 0, its columns meet x = 0)."""
    # in uint8 until the end (4x fewer bytes moved than int32 throughout: a layer's first use waits on this)
    u = nibbles(packed, in_features)  # [N, K]
    n, k = u.shape
    return torch.nn.functional.pad(u, (0, k_padded - k, 0, n_padded - n), value=OFFSET).to(torch.int32)


def torch_scale_zero(
    scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int, kernel_group: int, k_padded: int, n_padded: int
) -> torch.Tensor:
    """torch's ``qScaleAndZeros`` fp32 ``[K'/kg, N', 2]`` for our grid.

    torch's int4 kernels compute ``w = (u - 8) * scale + zero`` from the unsigned nibble ``u``.
    Ours is ``q * s`` with ``u = q + 8`` (symmetric) or ``(u - z) * s`` (asymmetric), so
    ``scale = s`` and ``zero = 0`` or ``(8 - z) * s``. Padded rows get ``scale = zero = 0``.
    """
    n, n_groups = scales.shape
    index = (torch.arange(k_padded // kernel_group) * kernel_group // group_size).clamp(max=n_groups - 1)
    s = scales.float()[:, index]  # [N, K'/kg]
    z = torch.zeros_like(s) if zeros is None else (OFFSET - zeros.float()[:, index]) * s
    sz = torch.stack([s, z], dim=-1)  # [N, K'/kg, 2]
    sz = torch.nn.functional.pad(sz, (0, 0, 0, 0, 0, n_padded - n))  # [N', K'/kg, 2]
    return sz.transpose(0, 1).contiguous()  # [K'/kg, N', 2]


def tinygemm_bytes(unsigned: torch.Tensor) -> torch.Tensor:
    """int32 nibbles ``[N, K]`` -> uint8 ``[N, K/2]`` with the *even* channel in the high nibble:
    the input CUDA's ``aten._convert_weight_to_int4pack`` expects (the opposite of our storage)."""
    return ((unsigned[:, 0::2] << 4) | unsigned[:, 1::2]).to(torch.uint8)


def _packed_shape(out: int, inn: int) -> tuple[int, int]:
    return (out, (inn + 1) // 2)


INT4 = FORMATS.register(
    "int4",
    PackedFormat(
        name="int4",
        max_bits=4,
        pack=pack_int4,
        unpack=unpack_int4,
        packed_shape=_packed_shape,
        packed_dtype=torch.uint8,
        description="4-bit codes, two per byte, fp32 scales (and zero points) per group",
    ),
)
