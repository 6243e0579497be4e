"""Helpers for the packed-format tests: QuantizedWeights from the real fake-quant grids."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from surefast.compress.lowbit import QuantizedWeight
from surefast.compress.lowbit.choice import clear_choices
from surefast.compress.quant.fake import fake_quant_weight, weight_qparams


def quantized(
    out: int, inn: int, bits: int = 4, group_size: int = 64, symmetric: bool = True, seed: int = 0
) -> tuple[QuantizedWeight, torch.Tensor]:
    """A random ``W [out, in]`` rounded by fake.py's grid, its codes recorded: ``(qw, W)``.

    ``group_size <= 0``: per output channel. The recorded weight de-quantizes to exactly the
    fake-quant weight (checked here, so every test starts from the contract).
    """
    w = torch.randn(out, inn, generator=torch.Generator().manual_seed(seed))
    scale, zero = weight_qparams(w, bits, group_size, symmetric)  # [out, n_groups, 1]
    g = inn if group_size <= 0 or group_size >= inn else group_size
    col = torch.arange(inn) // g
    s, z = scale[..., 0], zero[..., 0]  # [out, n_groups]
    if symmetric:
        q = torch.clamp(torch.round(w / s[:, col]), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    else:
        q = torch.clamp(torch.round(w / s[:, col]) + z[:, col], 0, 2**bits - 1)
    qw = QuantizedWeight(q.to(torch.int8), s.contiguous(), None if symmetric else z.contiguous(), bits, g)
    assert torch.equal(qw.dequantize(), fake_quant_weight(w, bits, group_size, symmetric))
    return qw, w


@pytest.fixture
def make_qw() -> Callable[..., tuple[QuantizedWeight, torch.Tensor]]:
    return quantized


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No kernel choice leaks between tests (each also has its own SUREFAST_HOME), none is forced."""
    monkeypatch.delenv("SUREFAST_LOWBIT_KERNEL", raising=False)
    clear_choices()
    yield
    clear_choices()
