"""Every kernel == a naive de-quantize + fp32 matmul, within the rounding of the dtype it works in,
on random shapes including odd sizes, one-token and multi-token inputs, bf16 and fp32 activations.

The naive reference de-quantizes group by group in a plain loop (not through the code under
test); :func:`error_bound` is the tolerance, and a test checks it is tight enough to catch a
layout mistake (two channels swapped). CUDA kernels run where a GPU is present.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from surefast.compress.lowbit import KERNELS, ActQuant, PackedLinear, PackedSpec, QuantizedWeight
from surefast.compress.lowbit.int4 import kernel_group, pack_int4, tinygemm_bytes, torch_scale_zero, unsigned_codes
from surefast.compress.lowbit.kernels import error_bound
from surefast.compress.quant.fake import fake_quant_tokens, fake_quant_weight

from .conftest import quantized

CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Case:
    format: str
    out: int
    inn: int
    bits: int
    group: int  # <= 0: per output channel
    symmetric: bool
    act: ActQuant | None = None

    def __str__(self) -> str:
        act = f"-a{self.act.bits}{'s' if self.act.symmetric else 'a'}" if self.act else ""
        return f"{self.format}-b{self.bits}{'s' if self.symmetric else 'a'}-g{self.group}-{self.out}x{self.inn}{act}"


CASES = [
    Case("int4", 16, 64, 4, 32, True),
    Case("int4", 40, 576, 4, 128, False),  # SmolLM2's 576: a partial last group; 40 rows pad to 48
    Case("int4", 24, 96, 4, -1, False),  # per channel, 96 = 3 kernel groups of 32
    Case("int4", 16, 33, 3, 32, True),  # 3-bit codes, an odd in: last group of one channel
    Case("int4", 7, 100, 4, 128, True),  # group = in = 100: no int4 kernel group fits
    Case("int4", 16, 64, 4, 64, True, ActQuant(8)),  # W4A8 (QuaRot-style): weight-only kernels on int8 x
    Case("int8", 17, 33, 8, -1, True),  # odd everything
    Case("int8", 16, 64, 8, 32, True),  # per group: the per-channel kernels refuse it
    Case("int8", 9, 40, 7, -1, False),
    Case("w8a8", 17, 100, 8, -1, True),
    Case("w8a8", 32, 64, 8, -1, True, ActQuant(8, symmetric=False)),
    Case("w8a8", 8, 48, 8, 16, True, ActQuant(6, clip=0.9)),  # grouped weights: fake-quant x, dense kernels
]
DTYPES = [torch.bfloat16, torch.float32]
CPU_KERNELS = [name for name in KERNELS if name not in ("compiled", "tinygemm")]


def naive_weight(qw: QuantizedWeight) -> torch.Tensor:
    """De-quantize with a plain loop over groups: ``(q - z) * s`` for each group's columns."""
    out, inn = qw.shape
    w = torch.empty(out, inn)
    for gi, start in enumerate(range(0, inn, qw.group_size)):
        cols = slice(start, min(start + qw.group_size, inn))
        z = 0.0 if qw.zeros is None else qw.zeros[:, gi : gi + 1]
        w[:, cols] = (qw.codes[:, cols].float() - z) * qw.scales[:, gi : gi + 1]
    return w


def build(case: Case, seed: int = 0) -> tuple[PackedLinear, QuantizedWeight, torch.Tensor, torch.Tensor]:
    qw, w = quantized(case.out, case.inn, case.bits, case.group, case.symmetric, seed)
    bias = torch.randn(case.out, generator=torch.Generator().manual_seed(seed + 1))
    layer = PackedLinear.from_quantized(qw, bias, format=case.format, act=case.act)
    return layer, qw, w, bias


def reference(case: Case, layer: PackedLinear, qw: QuantizedWeight, x: torch.Tensor, bias: torch.Tensor):
    xr = x.float()
    act = layer.spec.act
    if act is not None:
        xr = fake_quant_tokens(xr, act.bits, act.symmetric, act.clip)
    w = naive_weight(qw)
    scale = qw.scales[:, torch.arange(case.inn) // qw.group_size]
    ref = xr @ w.t() + bias
    return ref, error_bound(xr, w, scale, ref, x.dtype)


def spec_of(case: Case) -> PackedSpec:
    group = case.inn if case.group <= 0 else case.group
    return PackedSpec(case.format, case.inn, case.out, case.bits, group, case.symmetric, True, case.act)


# every (kernel, case, dtype) the kernel says it can run on this CPU; the rest is tested by
# test_kernels_say_why_not and test_cpu_kernels_run_their_formats
RUNNABLE = [
    pytest.param(k, c, d, id=f"{k}-{c}-{str(d).removeprefix('torch.')}")
    for k in CPU_KERNELS
    for c in CASES
    for d in DTYPES
    if KERNELS.get(k).why_not(spec_of(c), torch.device("cpu"), d) is None
]


@pytest.mark.parametrize(("kernel", "case", "dtype"), RUNNABLE)
@pytest.mark.parametrize("m", [1, 5])
def test_kernel_equals_naive_reference(kernel: str, case: Case, dtype: torch.dtype, m: int) -> None:
    layer, qw, _, bias = build(case)
    assert layer.spec == spec_of(case)
    x = torch.randn(m, case.inn, generator=torch.Generator().manual_seed(m)).to(dtype)
    y = layer.run_kernel(KERNELS.get(kernel), x)
    assert y.dtype == dtype and tuple(y.shape) == (m, case.out)
    ref, bound = reference(case, layer, qw, x, bias)
    err = (y.float() - ref).abs()
    assert bool((err <= bound).all()), f"worst error {float((err / bound).max()):.3g}x the bound"


MUST_RUN = [
    *[("int4-cpu", CASES[i]) for i in (0, 1, 2, 3, 5)],
    *[("int8-cpu", CASES[i]) for i in (6, 9)],
    *[("int-mm", CASES[i]) for i in (9, 10)],
]


@pytest.mark.parametrize(("kernel", "case"), MUST_RUN, ids=lambda v: v if isinstance(v, str) else str(v))
def test_cpu_kernels_run_their_formats(kernel: str, case: Case) -> None:
    """The matrix above skips what a kernel cannot run; these must run, or it tested nothing."""
    layer, *_ = build(case)
    for dtype in DTYPES:
        assert KERNELS.get(kernel).why_not(layer.spec, torch.device("cpu"), dtype) is None


@pytest.mark.parametrize(("kernel", "case"), [("int4-cpu", CASES[4]), ("int8-cpu", CASES[7]), ("int-mm", CASES[6])])
def test_kernels_say_why_not(kernel: str, case: Case) -> None:
    layer, *_ = build(case)
    reason = KERNELS.get(kernel).why_not(layer.spec, torch.device("cpu"), torch.bfloat16)
    assert reason in (
        "group size 100 is not a multiple of 32",
        "it takes one scale per output channel, not groups of 32",
        "it needs an activation grid (format 'w8a8')",
    )


@pytest.mark.parametrize("kernel", ["dequant-matmul", "dense"])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[9]], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_dequant_kernels_are_the_fake_quant_layer_bit_for_bit(kernel: str, case: Case, dtype: torch.dtype) -> None:
    layer, _, w, bias = build(case)
    x = torch.randn(3, 4, case.inn).to(dtype)
    fq = fake_quant_weight(w, case.bits, case.group, case.symmetric).to(dtype)  # the fake-quant model's weight
    xq = x
    if layer.spec.act is not None:
        a = layer.spec.act
        xq = fake_quant_tokens(x, a.bits, a.symmetric, a.clip)
    expect = F.linear(xq, fq, bias.to(dtype))
    y = layer.run_kernel(KERNELS.get(kernel), x.reshape(-1, case.inn)).reshape(3, 4, case.out)
    assert torch.equal(y, expect)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[6]], ids=str)
def test_the_bound_catches_two_swapped_channels(case: Case) -> None:
    """The tolerance is not vacuous: a layout slip (channels 0 and 1 swapped) falls far outside it."""
    layer, qw, _, bias = build(case)
    x = torch.randn(4, case.inn).bfloat16()
    ref, bound = reference(case, layer, qw, x, bias)
    w = naive_weight(qw)
    w[:, [0, 1]] = w[:, [1, 0]]
    wrong = x.float() @ w.t() + bias
    assert bool(((wrong - ref).abs() > bound).any())


def test_torch_scale_zero_by_loops() -> None:
    """torch's ``w = (u - 8) * scale + zero`` per kernel group: ``zero = (8 - z) * s``, padded rows 0."""
    qw, _ = quantized(5, 96, 4, 64, False)  # a partial group of 32, kernel group 32
    assert qw.zeros is not None
    sz = torch_scale_zero(qw.scales, qw.zeros, 64, 32, 96, 16)
    assert tuple(sz.shape) == (3, 16, 2)
    for j in range(3):
        for n in range(16):
            if n >= 5:
                assert sz[j, n].tolist() == [0.0, 0.0]
                continue
            g = j * 32 // 64
            s, z = float(qw.scales[n, g]), float(qw.zeros[n, g])
            assert sz[j, n, 0].item() == pytest.approx(s, rel=0, abs=0)
            assert sz[j, n, 1].item() == pytest.approx((8 - z) * s, rel=1e-6)
            u = qw.codes[n, j * 32].item()  # asymmetric: the stored nibble is the code
            w = (u - 8) * sz[j, n, 0] + sz[j, n, 1]
            assert float(w) == pytest.approx((u - z) * s, rel=1e-5, abs=1e-6)


def test_tinygemm_bytes_by_loops() -> None:
    """CUDA's int4 packer takes the even channel in the high nibble (the opposite of our storage)."""
    codes = torch.randint(-8, 8, (3, 10), generator=torch.Generator().manual_seed(3)).to(torch.int8)
    u = unsigned_codes(pack_int4(codes, True), 10)
    got = tinygemm_bytes(u).tolist()
    rows = (codes.int() + 8).tolist()
    assert got == [[(r[2 * j] << 4) | r[2 * j + 1] for j in range(5)] for r in rows]


def test_int4_kernel_group() -> None:
    assert [kernel_group(g) for g in (96, 128, 576, 512, 16, 100)] == [32, 128, 64, 256, None, None]


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[1], CASES[6]], ids=str)
def test_compiled_kernel_equals_naive_reference(case: Case) -> None:
    """torch.compile needs a C++ compiler and tens of seconds: slow, and skipped where it fails."""
    layer, qw, _, bias = build(case)
    kernel = KERNELS.get("compiled")
    x = torch.randn(3, case.inn).bfloat16()
    try:
        y = layer.run_kernel(kernel, x)
    except Exception as exc:
        pytest.skip(f"torch.compile does not work here: {type(exc).__name__}")
    ref, bound = reference(case, layer, qw, x, bias)
    assert bool(((y.float() - ref).abs() <= bound).all())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[3], CASES[9], CASES[10]], ids=str)
@pytest.mark.parametrize("m", [1, 5, 33])
def test_cuda_kernels_equal_naive_reference(case: Case, m: int) -> None:
    layer, qw, _, bias = build(case)
    layer = layer.cuda()
    x = torch.randn(m, case.inn).bfloat16()
    ref, bound = reference(case, layer, qw, x, bias)
    ran = 0
    for name in ("tinygemm", "int-mm", "dequant-matmul", "dense"):
        kernel = KERNELS.get(name)
        if kernel.why_not(layer.spec, torch.device("cuda"), torch.bfloat16) is not None:
            continue
        y = layer.run_kernel(kernel, x.cuda()).float().cpu()
        assert bool(((y - ref).abs() <= bound).all()), name
        ran += 1
    assert ran >= 3  # dequant-matmul, dense and the format's GPU kernel


def test_int8_cpu_runs_weights_that_are_not_64_byte_aligned(make_qw) -> None:  # type: ignore[no-untyped-def]
    """safetensors' memory-mapped tensors sit 8 bytes off; torch's int8 kernel crashed on them (SIGSEGV)."""
    from surefast.compress.lowbit import PackedLinear

    qw, _ = make_qw(576, 576, bits=8, group_size=0)
    layer = PackedLinear.from_quantized(qw, None, format="int8", kernel="int8-cpu")
    raw = torch.empty(layer.qweight.numel() + 8, dtype=torch.int8)
    off = raw[8:].view_as(layer.qweight)  # 8 bytes past an aligned start
    off.copy_(layer.qweight)
    layer.qweight = off
    assert layer.qweight.data_ptr() % 64 == 8
    x = torch.randn(8, 576).bfloat16()
    y = layer(x).float()
    ref = x.float() @ qw.dequantize().t()
    assert (y - ref).abs().max() <= 0.02 * ref.abs().max()
