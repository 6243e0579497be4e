"""PackedLinear: exact round trips (codes, scales, zeros), buffers that save and load without a
dense weight, fp32 scales through dtype casts, shapes, bytes, autograd, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from surefast.compress.lowbit import ActQuant, PackedLinear, PackedSpec, QuantizedWeight
from surefast.errors import SurefastError

from .conftest import quantized


@pytest.mark.parametrize(
    ("format", "bits", "group", "symmetric", "inn"),
    [("int4", 4, 128, True, 576), ("int4", 3, 32, False, 33), ("int8", 8, -1, True, 100), ("w8a8", 8, -1, True, 64)],
)
def test_round_trip_is_exact(format: str, bits: int, group: int, symmetric: bool, inn: int) -> None:
    qw, _ = quantized(12, inn, bits, group, symmetric)
    layer = PackedLinear.from_quantized(qw, torch.randn(12), format=format)
    back = layer.to_quantized()
    assert torch.equal(back.codes, qw.codes) and torch.equal(back.scales, qw.scales)
    assert (back.zeros is None) == symmetric
    if back.zeros is not None and qw.zeros is not None:
        assert torch.equal(back.zeros, qw.zeros)
    assert (back.bits, back.group_size) == (qw.bits, qw.group_size)
    assert torch.equal(layer.dequantize(), qw.dequantize())  # bit for bit: the fake-quant weight


def test_state_dict_loads_into_an_empty_layer_and_through_safetensors(tmp_path: Path) -> None:
    qw, _ = quantized(20, 576, 4, 128, False)
    layer = PackedLinear.from_quantized(qw, torch.randn(20).bfloat16(), format="int4", kernel="dequant-matmul")
    sd = layer.state_dict()
    assert set(sd) == {"qweight", "scales", "zeros", "bias"}
    assert (sd["qweight"].dtype, tuple(sd["qweight"].shape)) == (torch.uint8, (20, 288))
    assert sd["scales"].dtype == torch.float32 and tuple(sd["scales"].shape) == (20, 5)
    save_file(sd, str(tmp_path / "layer.safetensors"))
    spec = PackedSpec.from_dict(layer.spec.to_dict())
    assert spec == layer.spec
    empty = PackedLinear(spec, bias_dtype=torch.bfloat16, kernel="dequant-matmul")
    empty.load_state_dict(load_file(str(tmp_path / "layer.safetensors")))
    x = torch.randn(2, 3, 576).bfloat16()
    assert torch.equal(empty(x), layer(x))
    assert torch.equal(empty.to_quantized().codes, qw.codes)


def test_symmetric_layer_has_no_zeros_and_no_bias_buffers() -> None:
    qw, _ = quantized(8, 64, 4, 32, True)
    layer = PackedLinear.from_quantized(qw, None, format="int4")
    assert set(layer.state_dict()) == {"qweight", "scales"}
    assert layer.zeros is None and layer.bias is None


def test_scales_stay_fp32_when_the_model_is_cast() -> None:
    """model.to(bf16) casts the bias like nn.Linear's, never the scales the codes are relative to."""
    qw, _ = quantized(8, 64, 4, 32, False)
    model = nn.Sequential(PackedLinear.from_quantized(qw, torch.randn(8), format="int4"))
    model.to(torch.bfloat16)
    layer = model[0]
    assert isinstance(layer, PackedLinear)
    assert layer.scales.dtype == torch.float32 and layer.zeros is not None and layer.zeros.dtype == torch.float32
    assert layer.bias is not None and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.dequantize(), qw.dequantize())
    model.half()
    assert layer.scales.dtype == torch.float32 and torch.equal(layer.scales, qw.scales)


def test_forward_shapes_and_empty_batch() -> None:
    qw, _ = quantized(10, 48, 8, -1, True)
    layer = PackedLinear.from_quantized(qw, torch.randn(10), format="int8")
    assert tuple(layer(torch.randn(2, 3, 48)).shape) == (2, 3, 10)
    assert tuple(layer(torch.randn(48)).shape) == (10,)
    assert tuple(layer(torch.randn(0, 48)).shape) == (0, 10)
    assert (layer.in_features, layer.out_features) == (48, 10)


def test_weight_bytes() -> None:
    qw, _ = quantized(16, 576, 4, 128, False)  # 5 groups per row
    layer = PackedLinear.from_quantized(qw, None, format="int4")
    assert layer.weight_bytes() == 16 * 288 + 2 * 16 * 5 * 4  # nibbles + fp32 scales and zeros
    qw, _ = quantized(16, 100, 8, -1, True)
    assert PackedLinear.from_quantized(qw, None, format="int8").weight_bytes() == 16 * 100 + 16 * 4


def test_dense_copy_is_counted_and_released() -> None:
    qw, _ = quantized(16, 64, 4, 32, True)
    layer = PackedLinear.from_quantized(qw, None, format="int4", kernel="dense")
    assert layer.prepared_bytes() == 0
    layer(torch.randn(1, 64))
    assert layer.prepared_bytes() == 16 * 64 * 4  # an fp32 activation: an fp32 copy
    layer.release(set())
    assert layer.prepared_bytes() == 0


def test_gradients_flow_to_the_input() -> None:
    qw, _ = quantized(6, 32, 4, 32, True)
    layer = PackedLinear.from_quantized(qw, None, format="int4", kernel="int4-cpu")
    x = torch.randn(3, 32, requires_grad=True)
    layer(x).sum().backward()  # the forced int4 kernel has no backward: dequant-matmul runs
    assert x.grad is not None
    assert torch.allclose(x.grad, qw.dequantize().sum(0).expand(3, -1))


def test_repr_names_format_grid_and_kernel() -> None:
    qw, _ = quantized(6, 40, 8, -1, True)
    layer = PackedLinear.from_quantized(qw, torch.randn(6), format="w8a8", act=ActQuant(8))
    text = repr(layer)
    assert "w8a8 8-bit sym per channel [6 x 40], act int8" in text and "kernel=auto" in text


def test_w8a8_gets_an_activation_grid_by_default() -> None:
    qw, _ = quantized(6, 40, 8, -1, True)
    assert PackedLinear.from_quantized(qw, None, format="w8a8").act == ActQuant(8, True, 1.0)
    assert PackedLinear.from_quantized(qw, None, format="int8").act is None


def test_int4_refuses_8_bit_weights() -> None:
    qw, _ = quantized(4, 32, 8, -1, True)
    with pytest.raises(SurefastError, match="at most 4 bits"):
        PackedLinear.from_quantized(qw, None, format="int4")


def test_spec_from_dict_names_the_bad_key() -> None:
    qw, _ = quantized(4, 32, 4, 32, True)
    d = PackedLinear.from_quantized(qw, None).spec.to_dict()
    with pytest.raises(SurefastError) as err:
        PackedSpec.from_dict({**d, "group_sise": 32}, where="model.layers.0.mlp.up_proj")
    assert err.value.message == "model.layers.0.mlp.up_proj: unknown key 'group_sise'"
    assert err.value.hint == "did you mean 'group_size'?"
    d.pop("bits")
    with pytest.raises(SurefastError, match="missing key 'bits'"):
        PackedSpec.from_dict(d)


def test_group_size_beyond_in_is_per_channel() -> None:
    qw = QuantizedWeight(torch.zeros(2, 10, dtype=torch.int8), torch.ones(2, 1), None, 4, 1000)
    assert PackedLinear.from_quantized(qw, None).spec.group_size == 10


# --- one copy of the codes: int4-cpu's layout stands in for qweight -----------------------------

AVX512 = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


def int4_cpu_layer(out: int = 128, inn: int = 200, symmetric: bool = True) -> tuple[PackedLinear, QuantizedWeight]:
    qw, _ = quantized(out, inn, 4, 64, symmetric)
    return PackedLinear.from_quantized(qw, torch.randn(out), format="int4", kernel="int4-cpu"), qw


@pytest.mark.parametrize(("symmetric", "inn"), [(True, 200), (False, 200), (True, 201), (False, 201)])
def test_an_int4_cpu_layer_holds_its_codes_once_and_reads_them_back_exactly(symmetric: bool, inn: int) -> None:
    layer, qw = int4_cpu_layer(inn=inn, symmetric=symmetric)  # an odd row ends in a padding nibble
    stored = layer.qweight.clone()
    keys = list(layer.state_dict())
    x = torch.randn(3, inn).bfloat16()
    y = layer(x)
    if not AVX512:  # another tile order: both copies are kept, nothing else changes
        assert not layer.codes_dropped and torch.equal(layer.qweight, stored)
        return
    assert layer.codes_dropped and layer._buffers["qweight"] is None
    assert torch.equal(layer.qweight, stored)  # rebuilt from the kernel layout, exactly
    assert list(layer.state_dict()) == keys and torch.equal(layer.state_dict()["qweight"], stored)
    back = layer.to_quantized()
    assert torch.equal(back.codes, qw.codes) and torch.equal(layer.dequantize(), qw.dequantize())
    assert torch.equal(layer(x), y)
    codes_bytes = 128 * ((inn + 1) // 2)
    assert layer.resident_bytes() < layer.weight_bytes() + codes_bytes  # not codes twice


def test_a_dropped_layer_moves_loads_and_runs_other_kernels_with_its_codes() -> None:
    layer, qw = int4_cpu_layer()
    stored = layer.qweight.clone()
    x = torch.randn(2, 200)
    layer(x.bfloat16())
    layer.float()  # a move restores the codes first
    assert torch.equal(layer.qweight, stored) and layer._buffers["qweight"] is not None
    y = layer(x)  # fp32 activations: int4-cpu again, dropped again (on AVX512)
    assert layer.codes_dropped == AVX512
    twin, _ = int4_cpu_layer()
    twin(x)
    twin.load_state_dict(layer.state_dict())
    assert torch.equal(twin.qweight, stored) and torch.allclose(twin(x), y)
    layer.kernel = "dequant-matmul"  # a kernel that reads qweight: the codes are stored again
    assert torch.allclose(layer(x), x @ qw.dequantize().t() + layer.bias.float(), atol=1e-4)
    assert not layer.codes_dropped and torch.equal(layer.qweight, stored)


def test_codes_are_kept_when_the_kernel_layout_cannot_rebuild_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import surefast.compress.lowbit.linear as linear_mod

    odd, _ = int4_cpu_layer(out=48)  # N' = 48: a partial 64-row block, another tile order
    odd(torch.randn(1, 200).bfloat16())
    assert not odd.codes_dropped and odd._buffers["qweight"] is not None

    wrong = lambda state, inn, sym: torch.zeros(128, 100, dtype=torch.uint8)  # noqa: E731
    monkeypatch.setattr(linear_mod, "int4_cpu_stored", wrong)
    layer, _ = int4_cpu_layer()
    stored = layer.qweight.clone()
    layer(torch.randn(1, 200).bfloat16())
    assert not layer.codes_dropped and torch.equal(layer.qweight, stored)  # checked before dropping
