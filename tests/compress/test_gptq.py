"""GPTQ: lower output error than RTN on the same calibration input, at equal bits."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.quant.gptq import GPTQConfig, gptq_quantize
from surefast.compress.quant.rtn import RTNConfig, rtn_quantize


def _layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 128, generator=gen) * 0.05
    # correlated inputs with a few strong channels, like real activations
    x = torch.randn(1024, 128, generator=gen) @ (torch.eye(128) + 0.3 * torch.randn(128, 128, generator=gen))
    x[:, :4] *= 8
    return w, x


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize(("act_order", "static_groups"), [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("group_size", [32, -1])
@pytest.mark.parametrize("clip_search", [False, True])
def test_gptq_beats_rtn(bits: int, act_order: bool, static_groups: bool, group_size: int, clip_search: bool) -> None:
    w, x = _layer()
    h = 2 * x.T @ x / x.shape[0]
    cfg = GPTQConfig(
        bits=bits,
        group_size=group_size,
        act_order=act_order,
        static_groups=static_groups,
        clip_search=clip_search,
        block_size=32,
    )
    q, info = gptq_quantize(w, h, cfg)
    r = rtn_quantize(w, RTNConfig(bits=bits, group_size=group_size))
    err_gptq = (x @ (w - q).T).norm()
    err_rtn = (x @ (w - r).T).norm()
    assert err_gptq < 0.8 * err_rtn
    assert info["gptq_loss"] > 0


def test_gptq_values_on_rtn_grid_with_static_groups() -> None:
    """With act-order, scales are the static per-group ones: every value lies on RTN's grid."""
    from surefast.compress.quant.fake import weight_qparams

    w, x = _layer(1)
    q, _ = gptq_quantize(w, 2 * x.T @ x / len(x), GPTQConfig(bits=4, group_size=32, act_order=True, clip_search=False))
    scale, _ = weight_qparams(w, 4, 32, True)
    steps = q.reshape(48, 4, 32) / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    # with the clip search the static scales are the searched ones
    q, _ = gptq_quantize(w, 2 * x.T @ x / len(x), GPTQConfig(bits=4, group_size=32, act_order=True, clip_search=True))
    scale, _ = weight_qparams(w, 4, 32, True, clip_search=True)
    steps = q.reshape(48, 4, 32) / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)


def test_dead_inputs_get_zero_weight() -> None:
    w, x = _layer(2)
    x[:, 5] = 0
    q, _ = gptq_quantize(w, 2 * x.T @ x / len(x), GPTQConfig(bits=4, group_size=32))
    assert (q[:, 5] == 0).all()
    assert torch.isfinite(q).all()


def test_unreached_moe_expert_falls_back_to_rtn(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    """An expert that no calibration token reached keeps RTN weights instead of zeros."""
    from surefast.compress import compress_

    model = tiny("qwen3_moe")

    def never_expert_3(module, args, out):  # type: ignore[no-untyped-def]
        logits, scores, idx = out  # idx [T, 2] of 4 experts: send expert 3's tokens elsewhere
        other = torch.where(idx[:, :1] == 0, 1, 0).expand_as(idx)
        spare = torch.where((idx == other).any(-1, keepdim=True), 2, other)
        return logits, scores, torch.where(idx == 3, spare, idx)

    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(never_expert_3)
    result = compress_(model, GPTQConfig(bits=4, group_size=32), calib_ids)
    name = "model.layers.0.mlp.experts.gate_up.3"
    assert result.layers[name]["fallback"] == "rtn"
    assert result.layers[name]["sparsity"] < 0.5  # not zeroed
    assert "fallback" not in result.layers["model.layers.0.mlp.experts.gate_up.0"]
