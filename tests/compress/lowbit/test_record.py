"""Quantizers record the codes they chose: each layer's QuantizedWeight de-quantizes to its weight, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from surefast.compress import compress_, make_config
from surefast.compress.lowbit import QuantizedWeight
from surefast.compress.quant.fake import codes_of, fake_quant_weight
from surefast.compress.quant.gptq import GPTQConfig, gptq_quantize

# method -> (config options, the grid every layer must have recorded: bits, group size, symmetric)
METHODS = {
    "rtn": (dict(bits=4, group_size=32), (4, 32, True)),
    "rtn-asym-3bit": (dict(bits=3, group_size=32, symmetric=False), (3, 32, False)),
    "gptq": (dict(bits=4, group_size=32), (4, 32, True)),  # act-order, static groups, clip search
    "gptq-plain-asym": (dict(bits=4, group_size=32, act_order=False, symmetric=False), (4, 32, False)),
    "awq": (dict(bits=4, group_size=32), (4, 32, False)),
    "smoothquant": (dict(), (8, None, True)),  # per output channel
    "quarot-gptq": (dict(bits=4, act_bits=8), (4, None, True)),
    "quarot-rtn": (dict(bits=4, act_bits=16, weight_method="rtn"), (4, None, True)),
    "spinquant": (dict(bits=4, act_bits=8, weight_method="rtn", steps=1), (4, None, True)),
}


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}"}


@pytest.mark.parametrize("case", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_quantized_linear_records_the_grid_of_its_weight(tiny, calib_ids, case, dtype) -> None:  # type: ignore[no-untyped-def]
    options, (bits, group, symmetric) = METHODS[case]
    model = tiny("llama", dtype=dtype)
    compress_(model, make_config(case.split("-")[0], **options), calib_ids)
    linears = _linears(model)
    assert len(linears) == 14  # 2 blocks x (q, k, v, o, gate, up, down)
    for name, lin in linears.items():
        codes = codes_of(lin)
        assert isinstance(codes, QuantizedWeight), (name, codes)
        assert (codes.bits, codes.group_size, codes.symmetric) == (bits, group or lin.in_features, symmetric)
        assert torch.equal(codes.dequantize().to(dtype), lin.weight.detach()), name  # the very weight, bit for bit


def test_moe_experts_record_their_codes(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("qwen3_moe")
    compress_(model, make_config("gptq", bits=4, group_size=32), calib_ids)
    experts = {n: m for n, m in model.named_modules() if ".experts." in n and isinstance(m, nn.Linear)}
    assert len(experts) == 16  # 2 blocks x 4 experts x (gate_up, down)
    for lin in experts.values():
        codes = codes_of(lin)
        assert isinstance(codes, QuantizedWeight) and torch.equal(codes.dequantize(), lin.weight)


@pytest.mark.parametrize(
    ("cols", "group_size", "recorded"), [(576, 128, 128), (64, 128, 64), (48, -1, 48), (40, 16, 16)]
)
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quant_weight_carries_its_codes(cols, group_size, recorded, symmetric) -> None:  # type: ignore[no-untyped-def]
    w = torch.randn(8, cols, generator=torch.Generator().manual_seed(cols))
    q = fake_quant_weight(w, 4, group_size, symmetric)
    codes = codes_of(q)
    assert isinstance(codes, QuantizedWeight) and codes.group_size == recorded  # 576 = 4 x 128 + a partial 64
    assert torch.equal(codes.dequantize(), q)
    lo, hi = (-8, 7) if symmetric else (0, 15)
    assert int(codes.codes.min()) >= lo and int(codes.codes.max()) <= hi


def test_an_8_bit_asymmetric_grid_records_why_it_cannot_be_packed() -> None:
    codes = codes_of(fake_quant_weight(torch.randn(4, 32), 8, 16, symmetric=False))
    assert isinstance(codes, str) and "do not fit int8" in codes


def _hessian(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(256, n, generator=torch.Generator().manual_seed(seed))
    x[:, :3] *= 6
    return 2 * x.T @ x / len(x)


@pytest.mark.parametrize(
    "options",
    [
        dict(act_order=True, static_groups=True),
        dict(act_order=False),
        dict(act_order=False, symmetric=False, clip_search=False),
        dict(act_order=True, symmetric=False, group_size=-1),
        dict(act_order=False, group_size=48),  # a partial last group, across lazy-update blocks
    ],
)
def test_gptq_records_each_column_as_it_quantizes_it(options) -> None:  # type: ignore[no-untyped-def]
    w = torch.randn(24, 80, generator=torch.Generator().manual_seed(3)) * 0.1
    cfg = GPTQConfig(**{"bits": 4, "group_size": 32, "block_size": 32, **options})
    q, _ = gptq_quantize(w, _hessian(80, 4), cfg)
    codes = codes_of(q)
    assert isinstance(codes, QuantizedWeight)
    assert torch.equal(codes.dequantize(), q)  # the error-updated grid GPTQ chose, not re-derived


def test_gptq_dynamic_act_order_groups_record_why_not() -> None:
    q, _ = gptq_quantize(torch.randn(8, 64), _hessian(64, 5), GPTQConfig(group_size=16, static_groups=False))
    reason = codes_of(q)
    assert isinstance(reason, str) and "static_groups=True" in reason


def test_a_weight_written_without_codes_forgets_the_old_ones(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    compress_(model, make_config("rtn", bits=4, group_size=32))
    assert all(isinstance(codes_of(lin), QuantizedWeight) for lin in _linears(model).values())
    compress_(model, make_config("magnitude", sparsity=0.5))  # pruning rewrites every weight
    assert all(codes_of(lin) is None for lin in _linears(model).values())


def test_rotations_alone_record_nothing(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    compress_(model, make_config("quarot", quantize=False), calib_ids)
    assert all(codes_of(lin) is None for lin in _linears(model).values())
