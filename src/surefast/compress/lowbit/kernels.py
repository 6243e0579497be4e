"""The kernels that run a packed layer, by name: each says which layers it can run and why not.

Every kernel computes ``y [M, N] = x [M, K] @ W_hat^T + b`` for the layer's de-quantized weight
``W_hat`` (exactly :meth:`QuantizedWeight.dequantize`), up to the rounding of the dtype it works
in; the tests hold each one to a naive fp32 de-quantize + matmul (:func:`error_bound`). Which
one runs is chosen per machine and shape by :mod:`.choice`, or forced by name
(``SUREFAST_LOWBIT_KERNEL``). A kernel is three functions: ``why_not(spec, device, dtype)`` (None
when it can run the layer, else the reason, shown when it is forced), ``prepare(layer, dtype)``
(its own layout, derived from the stored codes, never from floats) and ``run(state, x, bias)``.

========================  ===========================================================================
``dequant-matmul``        de-quantize in fp32, cast to ``x.dtype``, ``F.linear`` (the always-correct
                          fallback; bit for bit the fake-quant layer when the dtype matches)
``dense``                 the same weight kept de-quantized: bf16 speed at bf16 memory cost, so the
                          automatic choice is never slower than the unpacked model
``int4-cpu``              ``aten._weight_int4pack_mm_for_cpu`` (groups of 32/64/128/256, or any group
                          that is a multiple of 32, by repeating its scale)
``int8-cpu``              ``aten._weight_int8pack_mm`` (symmetric, per output channel)
``int-mm``                W8A8: per-token int8 activations, ``torch._int_mm`` (exact int32), two scales
``compiled``              ``torch.compile`` of the de-quantize + matmul (forced only: see ``auto``)
``tinygemm``              CUDA int4 ``aten._weight_int4pack_mm`` (bf16, sm80+)
========================  ===========================================================================

The CUDA halves (``tinygemm``, ``int-mm`` on CUDA) share their layout functions with the CPU
kernels, which the CPU tests check; the kernels themselves are tested where a GPU is present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from surefast.compress.lowbit.formats import dequantize_packed
from surefast.compress.lowbit.int4 import (
    OFFSET,
    kernel_group,
    padded_nibbles,
    tinygemm_bytes,
    torch_scale_zero,
    unpack_int4,
)
from surefast.compress.lowbit.w8a8 import quantize_tokens, w8a8_product
from surefast.registry import Registry, dashed

if TYPE_CHECKING:
    from surefast.compress.lowbit.linear import PackedLinear, PackedSpec

FLOATS = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class Kernel:
    """One way to run a packed layer (see the module docstring). ``auto``: measured by the
    automatic choice; ``quantizes_activations``: it applies the layer's activation grid itself
    (int x int), where every other kernel gets the fake-quantized activations."""

    name: str
    why_not: Callable[[PackedSpec, torch.device, torch.dtype], str | None]
    prepare: Callable[[PackedLinear, torch.dtype], Any]
    run: Callable[[Any, torch.Tensor, torch.Tensor | None], torch.Tensor]
    description: str
    auto: bool = True
    quantizes_activations: bool = False


KERNELS: Registry[Kernel] = Registry("low-bit kernel", normalize=dashed)


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


def _pad_cols(x: torch.Tensor, cols: int, value: float = 0.0) -> torch.Tensor:
    """Right-pad the last dim of ``x [M, K]`` to ``cols`` (zero activations add nothing)."""
    return x if x.shape[-1] == cols else F.pad(x, (0, cols - x.shape[-1]), value=value)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _aligned(t: torch.Tensor, alignment: int = 64) -> torch.Tensor:
    """``t`` itself when its data starts on an ``alignment``-byte boundary, else an aligned copy.
    torch 2.13's ``_weight_int8pack_mm`` crashed (SIGSEGV) on int8 weights 8 bytes off (how
    safetensors' memory-mapped tensors come); a fresh allocation is 64-byte aligned."""
    return t if t.data_ptr() % alignment == 0 else t.clone()


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y + bias.to(y.dtype)


# --- dequant-matmul and dense: the reference and the bf16-speed fallback --------------------


def _any_layer(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    return None if dtype in FLOATS else f"activations must be floating point, got {dtype}"


@dataclass(frozen=True)
class _Dequant:
    qweight: torch.Tensor  # the stored buffers (not the module: no reference cycle)
    scales: torch.Tensor
    zeros: torch.Tensor | None
    spec: Any


def _prepare_dequant(layer: PackedLinear, dtype: torch.dtype) -> _Dequant:
    return _Dequant(layer.qweight, layer.scales, layer.zeros, layer.spec)


def _run_dequant(state: _Dequant, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    s = state.spec
    w = dequantize_packed(s.format, state.qweight, state.scales, state.zeros, s.in_features, s.bits, s.group_size)
    # fp32 W_hat, then the cast: the same two steps that made the fake-quant model's weight
    return F.linear(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))


def _prepare_dense(layer: PackedLinear, dtype: torch.dtype) -> torch.Tensor:
    return layer.dequantize().to(dtype).contiguous()  # [N, K]


def _run_dense(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, None if bias is None else bias.to(x.dtype))


# --- int4 (torch's CPU kernel and CUDA tinygemm share the scale-and-zero convention) ---------


@dataclass(frozen=True)
class _Int4:
    packed: torch.Tensor  # the kernel's own layout
    scale_zero: torch.Tensor  # [K'/kg, N', 2] in the activation dtype
    group: int
    k_padded: int
    n: int


def _int4_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype, op: str) -> str | None:
    if spec.format != "int4":
        return f"it runs the int4 format, not {spec.format}"
    if not _has_op(op):
        return f"this torch ({torch.__version__}) has no aten.{op}"
    if kernel_group(spec.group_size) is None:
        return f"group size {spec.group_size} is not a multiple of 32"
    return None


def _int4_cpu_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return "it runs on the CPU"
    if dtype not in FLOATS:
        return f"activations must be bf16, fp16 or fp32, got {dtype}"
    return _int4_why_not(spec, device, dtype, "_weight_int4pack_mm_for_cpu")


def _int4_layout(
    layer: PackedLinear, dtype: torch.dtype, n_multiple: int
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    spec = layer.spec
    group = kernel_group(spec.group_size)
    assert group is not None  # why_not refused it otherwise
    k_padded = _round_up(spec.in_features, group)
    n_padded = _round_up(spec.out_features, n_multiple)
    u = padded_nibbles(layer.qweight, spec.in_features, k_padded, n_padded)
    sz = torch_scale_zero(layer.scales, layer.zeros, spec.group_size, group, k_padded, n_padded).to(dtype)
    return u, sz, group, k_padded


def _prepare_int4_cpu(layer: PackedLinear, dtype: torch.dtype) -> _Int4:
    u, sz, group, k_padded = _int4_layout(layer, dtype, 16)  # the CPU kernel wants N % 16 == 0
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.contiguous(), 2)  # innerKTiles: unused on CPU
    return _Int4(packed, sz, group, k_padded, layer.spec.out_features)


def int4_cpu_stored(state: _Int4, in_features: int, symmetric: bool) -> torch.Tensor | None:
    """Our stored ``qweight`` (uint8 ``[N, ceil(K/2)]``) rebuilt from ``int4-cpu``'s own layout, or
    None where that layout is not the one this inverse knows.

    torch's CPU int4 packing (``weight_to_int4pack_kernel`` in ATen's ``int4mm_kernel.cpp``) is a
    pure reordering of the nibbles, and with AVX512 it stores each block of 64 output rows as
    ``[K, 32]`` bytes whose low nibble is row ``j`` and high nibble row ``j + 32``. AVX2 builds use
    blocks of 32, and partial blocks another order: there (``N'`` not a multiple of 64, or a CPU
    without AVX512) this returns None, and the caller keeps its stored codes. The caller checks
    the result against the stored codes before relying on it.
    """
    packed = state.packed  # uint8 [N', K'/2]
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return None
    n_padded, half = packed.shape
    if n_padded % 64 or packed.dtype != torch.uint8 or not packed.is_contiguous():
        return None
    blocks = packed.view(n_padded // 64, 2 * half, 32)  # [N'/64, K', 32]
    u = torch.cat([blocks & 0x0F, blocks >> 4], dim=2)  # [N'/64, K', 64]: rows j and j + 32 of each block
    u = u.permute(0, 2, 1).reshape(n_padded, 2 * half)[: state.n]  # uint8 [N, K'] stored nibbles, as ours
    k = in_features
    if k % 2:  # our odd row ends in one padding nibble: code 0 / the grid bottom (the kernel padded with 8)
        u = u[:, : k + 1].clone()
        u[:, k] = OFFSET if symmetric else 0
    else:
        u = u[:, :k]
    return u[:, 0::2] | (u[:, 1::2] << 4)  # [N, ceil(K/2)]: low nibble = even channel (int4.py)


def _run_int4_cpu(state: _Int4, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    xp = _pad_cols(x, state.k_padded).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(xp, state.packed, state.group, state.scale_zero)
    return _add_bias(y[:, : state.n], bias)


def _tinygemm_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return "it runs on CUDA"
    if dtype != torch.bfloat16:
        return f"tinygemm takes bf16 activations only, got {dtype}"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "tinygemm needs compute capability 8.0 or newer"
    return _int4_why_not(spec, device, dtype, "_weight_int4pack_mm")


def _prepare_tinygemm(layer: PackedLinear, dtype: torch.dtype) -> _Int4:
    u, sz, group, k_padded = _int4_layout(layer, dtype, 8)  # tinygemm: N % 8 == 0, K % (16 * tiles) == 0
    inner_k_tiles = 8 if k_padded % 128 == 0 else 4 if k_padded % 64 == 0 else 2  # k_padded % 32 == 0 always
    packed = torch.ops.aten._convert_weight_to_int4pack(tinygemm_bytes(u).contiguous(), inner_k_tiles)
    return _Int4(packed, sz, group, k_padded, layer.spec.out_features)


def _run_tinygemm(state: _Int4, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    xp = _pad_cols(x, state.k_padded).contiguous()
    y = torch.ops.aten._weight_int4pack_mm(xp, state.packed, state.group, state.scale_zero)
    return _add_bias(y[:, : state.n], bias)


# --- int8 weight-only and W8A8 -----------------------------------------------------------------


def _int8_per_channel(spec: PackedSpec) -> str | None:
    if spec.format not in ("int8", "w8a8"):
        return f"it runs int8 codes, not {spec.format}"
    if not spec.symmetric:
        return "it takes symmetric codes (no zero points)"
    if spec.group_size < spec.in_features:
        return f"it takes one scale per output channel, not groups of {spec.group_size}"
    return None


def _int8_cpu_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return "it runs on the CPU"
    if dtype not in FLOATS:
        return f"activations must be bf16, fp16 or fp32, got {dtype}"
    if not _has_op("_weight_int8pack_mm"):
        return f"this torch ({torch.__version__}) has no aten._weight_int8pack_mm"
    return _int8_per_channel(spec)


@dataclass(frozen=True)
class _Int8:
    codes: torch.Tensor  # int8 [N, K'], K' a multiple of 32
    scales: torch.Tensor  # [N] in the activation dtype


def _prepare_int8_cpu(layer: PackedLinear, dtype: torch.dtype) -> _Int8:
    # torch 2.13's bf16 path reads past the row end when K % 32 != 0 (it crashed on K = 33 and
    # 100 here): zero-padded codes and activations keep it in bounds and add nothing
    k_padded = _round_up(layer.spec.in_features, 32)
    codes = _aligned(_pad_cols(layer.qweight, k_padded).contiguous())
    return _Int8(codes, _aligned(layer.scales[:, 0].to(dtype).contiguous()))


def _run_int8_cpu(state: _Int8, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    xp = _pad_cols(x, state.codes.shape[1]).contiguous()
    return _add_bias(torch.ops.aten._weight_int8pack_mm(xp, state.codes, state.scales), bias)


def _int_mm_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    if spec.act is None:
        return "it needs an activation grid (format 'w8a8')"
    if device.type not in ("cpu", "cuda"):
        return f"torch._int_mm runs on the CPU and CUDA, not {device.type}"
    if dtype not in FLOATS:
        return f"activations must be bf16, fp16 or fp32, got {dtype}"
    return _int8_per_channel(spec)


@dataclass(frozen=True)
class _IntMM:
    codes_t: torch.Tensor  # int8 [K', N'] (a transposed view: the column-major operand cuBLAS wants)
    scales: torch.Tensor  # fp32 [N]
    rowsum: torch.Tensor  # int32 [N]: sum_k q_w, for an asymmetric activation grid
    act: Any
    n: int
    pad_to: int  # CUDA's _int_mm wants K, N multiples of 8 and M > 16; the CPU takes any size


def _prepare_int_mm(layer: PackedLinear, dtype: torch.dtype) -> _IntMM:
    q = layer.qweight  # int8 [N, K]
    pad_to = 8 if q.is_cuda else 1
    n, k = q.shape
    # no copy where no padding is needed (the CPU): the stored codes are the operand
    qp = q if pad_to == 1 else F.pad(q, (0, _round_up(k, pad_to) - k, 0, _round_up(n, pad_to) - n))
    rowsum = q.to(torch.int32).sum(1)  # [N]
    return _IntMM(qp.t(), layer.scales[:, 0].float(), rowsum, layer.spec.act, n, pad_to)


def _run_int_mm(state: _IntMM, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    qx, sx, zx = quantize_tokens(x, state.act)  # int8 [M, K], fp32 [M, 1]
    m = qx.shape[0]
    if state.pad_to > 1:
        rows = max(17, _round_up(m, state.pad_to))
        qx = F.pad(qx, (0, state.codes_t.shape[0] - qx.shape[1], 0, rows - m))
    acc = torch._int_mm(qx, state.codes_t)[:m, : state.n]  # int32 [M, N], exact
    y = w8a8_product(acc, sx, zx, state.scales, state.rowsum)
    return (y if bias is None else y + bias.float()).to(x.dtype)


# --- torch.compile of the de-quantize + matmul -------------------------------------------------


def _dequant_linear(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group: int, four: bool
) -> torch.Tensor:
    if four:  # uint8 [N, ceil(K/2)] -> int8 codes [N, K]
        codes = unpack_int4(codes, x.shape[-1], zeros is None)
    q = codes.float()  # [N, K]
    # a gather, not dequantize_codes' pad + view nor repeat_interleave(...)[:, :K]: torch 2.13's
    # inductor miscompiled both (garbage values) on a partial last group when a pointwise op followed
    index = torch.arange(x.shape[-1], device=x.device) // group  # [K]: the group of each channel
    s = scales[:, index]  # [N, K]
    w = q * s if zeros is None else (q - zeros[:, index]) * s
    return F.linear(x, w.to(x.dtype))


_COMPILED: dict[str, Any] = {}


def _compiled_why_not(spec: PackedSpec, device: torch.device, dtype: torch.dtype) -> str | None:
    if dtype not in FLOATS:
        return f"activations must be floating point, got {dtype}"
    return _COMPILED.get("failed")


@dataclass(frozen=True)
class _Compiled:
    fn: Any
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group: int
    four: bool


def _prepare_compiled(layer: PackedLinear, dtype: torch.dtype) -> _Compiled:
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_dequant_linear)  # one code object: layers of one shape share it
    spec = layer.spec
    return _Compiled(_COMPILED["fn"], layer.qweight, layer.scales, layer.zeros, spec.group_size, spec.format == "int4")


def _run_compiled(state: _Compiled, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    try:
        y = state.fn(x, state.codes, state.scales, state.zeros, state.group, state.four)
    except Exception as exc:  # no compiler, an inductor bug: record it, so why_not says it from now on
        _COMPILED["failed"] = f"torch.compile failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise
    return _add_bias(y, bias)


for _kernel in (
    Kernel("dequant-matmul", _any_layer, _prepare_dequant, _run_dequant, "de-quantize every call, F.linear"),
    Kernel("dense", _any_layer, _prepare_dense, _run_dense, "keep the de-quantized weight (dense memory, dense speed)"),
    Kernel("int4-cpu", _int4_cpu_why_not, _prepare_int4_cpu, _run_int4_cpu, "aten._weight_int4pack_mm_for_cpu"),
    Kernel("int8-cpu", _int8_cpu_why_not, _prepare_int8_cpu, _run_int8_cpu, "aten._weight_int8pack_mm"),
    Kernel("int-mm", _int_mm_why_not, _prepare_int_mm, _run_int_mm, "int8 x int8 torch._int_mm", True, True),
    # not measured automatically: compiling takes tens of seconds per shape on a 2-core machine,
    # and in a first check it ran no faster than the dense weight
    Kernel("compiled", _compiled_why_not, _prepare_compiled, _run_compiled, "torch.compile'd de-quantize", False),
    Kernel("tinygemm", _tinygemm_why_not, _prepare_tinygemm, _run_tinygemm, "CUDA aten._weight_int4pack_mm"),
):
    KERNELS.register(_kernel.name, _kernel)


def error_bound(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """How far a kernel working in ``dtype`` may be from the fp32 ``reference = x @ W_hat^T``.

    ``x [M, K]``, ``weight`` = ``W_hat`` and ``scale`` = each weight's scale, fp32 ``[N, K]``.
    A kernel rounds each weight (its scale, zero offset or value: at most ``|w| + 8 s``) and the
    output to ``dtype``; those errors add up like independent draws, hence the root of a sum of
    squares; the fp32 accumulation adds a worst-case term that is negligible except in fp32.
    A wrong layout or scale misses by about ``|y|`` itself, far outside this bound.
    """
    eps = torch.finfo(dtype).eps
    xf = x.float()
    w = weight.abs() + 8 * scale.abs()  # [N, K]
    spread = (xf.square() @ w.square().t()).sqrt()  # [M, N]
    worst = xf.abs() @ w.t()  # [M, N]
    return 4 * eps * (reference.abs() + spread) + 4 * torch.finfo(torch.float32).eps * worst + 1e-30
