"""RTN: de-quantized values lie on the grid; per-group error bound; bits validated."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.quant.fake import fake_quant_tokens, fake_quant_weight, weight_qparams
from surefast.compress.quant.rtn import RTNConfig, rtn_quantize
from surefast.errors import SurefastError


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_values_on_grid_and_error_bound(bits: int, symmetric: bool) -> None:
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(bits)) * 0.1
    q = rtn_quantize(w, RTNConfig(bits=bits, group_size=16, symmetric=symmetric))
    scale, zero = weight_qparams(w, bits, 16, symmetric)  # [16, 4, 1]
    grid = q.reshape(16, 4, 16) / scale + (zero if not symmetric else 0)  # integers on the grid
    assert torch.allclose(grid, grid.round(), atol=1e-4)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    assert grid.round().min() >= lo and grid.round().max() <= hi
    # round-to-nearest inside the range: every error is at most half a step of its group
    err = (q - w).abs().reshape(16, 4, 16)
    assert (err <= scale / 2 + 1e-6).all()
    # at most 2^bits distinct values per group
    assert max(len(torch.unique(g)) for g in q.reshape(-1, 16)) <= 2**bits


def test_per_channel_and_zero_exact() -> None:
    w = torch.randn(8, 32)
    w[:, 3] = 0
    q = fake_quant_weight(w, 4, group_size=-1, symmetric=False)
    assert (q[:, 3] == 0).all()  # zero is on every asymmetric grid
    assert q.shape == w.shape


def test_more_bits_less_error() -> None:
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(0))
    errs = [(fake_quant_weight(w, b, 32) - w).norm().item() for b in (2, 3, 4, 6, 8)]
    assert errs == sorted(errs, reverse=True)


def test_tokens_quantized_per_row() -> None:
    x = torch.randn(3, 5, 16)
    x[0, 0] *= 100  # an outlier token does not change the other tokens' scales
    q = fake_quant_tokens(x, 8)
    assert torch.allclose(q[1], fake_quant_tokens(x[1], 8))
    assert (q - x).abs().max() <= x.abs().amax(-1, keepdim=True).max() / 127


def test_bits_out_of_range() -> None:
    with pytest.raises(SurefastError):
        RTNConfig(bits=1)


def test_partial_last_group() -> None:
    """576 input channels in groups of 128 (SmolLM2): the last group has 64 channels."""
    w = torch.randn(8, 576)
    q = fake_quant_weight(w, 4, group_size=128)
    assert q.shape == w.shape
    assert torch.allclose(q[:, 512:], fake_quant_weight(w[:, 512:], 4, group_size=-1))
    assert torch.allclose(q[:, :512], fake_quant_weight(w[:, :512], 4, group_size=128))


def _naive_clip_search(row: list[float], bits: int, symmetric: bool) -> float:
    """Independent reference: the 2.4-norm error of every clip in plain Python; the best clip's scale."""
    best_err, best_scale = None, 0.0
    for i in range(81):
        clip = 1 - i / 100
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            scale = max(max(abs(v) for v in row) * clip / qmax, 1e-10)
            deq = [min(max(round(v / scale), -qmax - 1), qmax) * scale for v in row]
        else:
            lo, hi = min(min(row), 0.0) * clip, max(max(row), 0.0) * clip
            scale = max((hi - lo) / (2**bits - 1), 1e-10)
            zero = round(-lo / scale)
            deq = [(min(max(round(v / scale) + zero, 0), 2**bits - 1) - zero) * scale for v in row]
        err = sum(abs(d - v) ** 2.4 for d, v in zip(deq, row, strict=True))
        if best_err is None or err < best_err * (1 - 1e-6):  # strictly better, beyond fp32 rounding
            best_err, best_scale = err, scale
    return best_scale


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_clip_search_matches_naive_reference(bits: int, symmetric: bool) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 32, generator=gen)
    w[:, 0] *= 6  # one outlier per group: clipping it pays off
    scale, _ = weight_qparams(w, bits, 16, symmetric, clip_search=True)  # [6, 2, 1]
    for r in range(6):
        for gi in range(2):
            expect = _naive_clip_search(w[r, gi * 16 : (gi + 1) * 16].tolist(), bits, symmetric)
            assert scale[r, gi, 0].item() == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_clip_search_never_worse_and_on_grid(symmetric: bool) -> None:
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    w[torch.rand(32, 256, generator=torch.Generator().manual_seed(1)) < 0.01] *= 10  # sparse outliers
    plain = fake_quant_weight(w, 4, 64, symmetric)
    clipped = fake_quant_weight(w, 4, 64, symmetric, clip_search=True)
    per_group = lambda q: (q - w).abs().pow(2.4).reshape(32, 4, 64).sum(-1)  # noqa: E731
    assert (per_group(clipped) <= per_group(plain) + 1e-12).all()
    assert per_group(clipped).sum() < 0.97 * per_group(plain).sum()
    scale, zero = weight_qparams(w, 4, 64, symmetric, clip_search=True)
    steps = clipped.reshape(32, 4, 64) / scale + (zero if not symmetric else 0)
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert torch.equal(
        rtn_quantize(w, RTNConfig(bits=4, group_size=64, symmetric=symmetric, clip_search=True)), clipped
    )
