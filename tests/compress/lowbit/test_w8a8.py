"""W8A8: per-token activation codes are exactly the fake-quant grid's, the int8 x int8 product is
exact, and the packed layer equals the fake-quant W8A8 layer (SmoothQuant's weight + input hook)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from surefast.compress.lowbit import ActQuant, PackedLinear
from surefast.compress.lowbit.kernels import error_bound
from surefast.compress.lowbit.w8a8 import int8_matmul_reference, quantize_tokens, w8a8_product
from surefast.compress.quant.fake import fake_quant_tokens, fake_quant_weight, install_act_quant_, qparams

from .conftest import quantized


@pytest.mark.parametrize("act", [ActQuant(8), ActQuant(8, False), ActQuant(4), ActQuant(6, False, 0.9)], ids=str)
def test_token_codes_are_the_fake_quant_grid(act: ActQuant) -> None:
    x = torch.randn(7, 50, generator=torch.Generator().manual_seed(act.bits))
    x[2, 3] = 40.0  # an outlier token
    x[4] = 0.0  # an all-zero token: the scale's floor, no division by zero
    q, s, z = quantize_tokens(x, act)
    assert q.dtype == torch.int8 and tuple(s.shape) == (7, 1)
    shift = 0 if act.symmetric else 2 ** (act.bits - 1)
    lo, hi = (-(2 ** (act.bits - 1)), 2 ** (act.bits - 1) - 1) if act.symmetric else (0, 2**act.bits - 1)
    assert int(q.min()) + shift >= lo and int(q.max()) + shift <= hi
    x_hat = q.float() * s if z is None else (q.float() - z) * s
    assert torch.equal(x_hat, fake_quant_tokens(x, act.bits, act.symmetric, act.clip))


@pytest.mark.parametrize("act", [ActQuant(8), ActQuant(8, False)], ids=["sym", "asym"])
def test_token_codes_on_rounding_ties(act: ActQuant) -> None:
    """Values within an ulp of k + 1/2 steps: only the very same arithmetic (``round(x / s)``,
    not ``x * (1 / s)``) rounds them all the way the fake-quant grid does."""
    rows = []
    for top in (1.0, 0.3, 7.7, 0.011):
        ends = torch.tensor([[top, -top]])  # the row's range, so its scale is known in advance
        s = qparams(ends, act.bits, act.symmetric)[0][0]
        ties = (torch.arange(-127, 127, dtype=torch.float32) + 0.5) * s  # [254], inside [-top, top]
        rows.append(torch.cat([ends[0], ties, ties.nextafter(ties + 1), ties.nextafter(ties - 1)]))
    x = torch.stack(rows)  # [4, 764]
    q, s, z = quantize_tokens(x, act)
    x_hat = q.float() * s if z is None else (q.float() - z) * s
    assert torch.equal(x_hat, fake_quant_tokens(x, act.bits, act.symmetric, act.clip))


def test_token_codes_of_bf16_input_match_too() -> None:
    x = torch.randn(5, 64).bfloat16()
    q, s, _ = quantize_tokens(x, ActQuant(8))
    assert torch.equal((q.float() * s).bfloat16(), fake_quant_tokens(x, 8))


def test_int8_product_by_loops_and_int_mm() -> None:
    gen = torch.Generator().manual_seed(0)
    qx = torch.randint(-128, 128, (3, 11), generator=gen).to(torch.int8)
    qw = torch.randint(-128, 128, (5, 11), generator=gen).to(torch.int8)
    acc = int8_matmul_reference(qx, qw)
    loops = [[sum(int(qx[m, k]) * int(qw[n, k]) for k in range(11)) for n in range(5)] for m in range(3)]
    assert acc.tolist() == loops
    assert torch.equal(torch._int_mm(qx, qw.t()), acc)


def test_asymmetric_product_is_exact_on_exact_scales() -> None:
    """With power-of-two scales nothing rounds: the zero-point correction must be exactly right."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 24, generator=gen) + 0.7  # a skewed range: the zero point is not mid-grid
    q, s, z = quantize_tokens(x, ActQuant(8, symmetric=False))
    s = torch.full_like(s, 0.125)
    qw = torch.randint(-128, 128, (6, 24), generator=gen).to(torch.int8)
    sw = torch.full((6,), 0.5)
    y = w8a8_product(int8_matmul_reference(q, qw), s, z, sw, qw.int().sum(1))
    assert z is not None
    expect = ((q.double() - z.double()) * 0.125) @ (qw.double() * 0.5).t()
    assert torch.equal(y.double(), expect)


@pytest.mark.parametrize("act", [ActQuant(8), ActQuant(8, symmetric=False)], ids=["sym", "asym"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_packed_w8a8_equals_the_fake_quant_layer(act: ActQuant, dtype: torch.dtype) -> None:
    qw, w = quantized(24, 96, 8, -1, True)
    bias = torch.randn(24)
    fake = nn.Linear(96, 24).to(dtype)
    with torch.no_grad():
        fake.weight.copy_(fake_quant_weight(w, 8, -1, True))  # what SmoothQuant leaves in the model
        fake.bias.copy_(bias)
    install_act_quant_({"lin": fake}, act.bits, act.symmetric, act.clip)
    x = torch.randn(2, 3, 96).to(dtype)
    with torch.no_grad():
        expect = fake(x)
        exact = PackedLinear.from_quantized(qw, bias.to(dtype), format="w8a8", act=act, kernel="dequant-matmul")
        assert torch.equal(exact(x), expect)  # same weight, same activation grid, same F.linear
        packed = PackedLinear.from_quantized(qw, bias.to(dtype), format="w8a8", act=act, kernel="int-mm")
        y = packed(x)
    assert y.dtype == dtype
    xr = fake_quant_tokens(x.float(), act.bits, act.symmetric, act.clip).reshape(6, 96)
    ref = xr @ qw.dequantize().t() + bias.to(dtype).float()
    scale = qw.scales.expand(-1, 96)
    bound = error_bound(xr, qw.dequantize(), scale, ref, dtype)
    assert bool(((y.reshape(6, 24).float() - ref).abs() <= bound).all())
    assert bool(((expect.reshape(6, 24).float() - ref).abs() <= bound).all())


def test_act_quant_from_an_input_transform_spec() -> None:
    assert ActQuant.from_spec({"hadamard": True}) is None
    assert ActQuant.from_spec({"act_bits": 16}) is None
    act = ActQuant.from_spec({"act_bits": 8, "act_sym": False, "act_clip": 0.9})
    assert act == ActQuant(8, False, 0.9) and ActQuant.from_spec(act.spec()) == act
