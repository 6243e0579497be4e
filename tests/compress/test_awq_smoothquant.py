"""AWQ and SmoothQuant: rescaling is exact before quantization; after it, beats RTN on outliers."""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_
from surefast.compress.quant.awq import AWQConfig, awq_search
from surefast.compress.quant.fake import fake_quant_tokens, fake_quant_weight
from surefast.compress.quant.rtn import RTNConfig
from surefast.compress.quant.smoothquant import SmoothQuantConfig, smooth_scales
from surefast.models.arch import decoder_layers
from surefast.models.tiny import TEXT_ARCHITECTURES


def _outlier_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 128, generator=gen)
    x[:, [3, 40, 77, 100]] *= 30  # a few outlier channels, as in LLM activations
    w = torch.randn(64, 128, generator=gen) * 0.05
    return w, x


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
@pytest.mark.parametrize("config", [AWQConfig(group_size=32, quantize=False), SmoothQuantConfig(quantize=False)])
def test_rescaled_model_is_the_same_function(tiny, calib_ids, probe_ids, arch, config) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    _outliers_(model)
    ref = model(probe_ids).logits
    compress_(model, config, calib_ids)
    assert (model(probe_ids).logits - ref).abs().max() < 1e-4
    # the scales really moved something
    assert any(
        not torch.allclose(b.input_layernorm.weight, tiny(arch).model.layers[i].input_layernorm.weight)
        for i, b in enumerate(decoder_layers(model))
    )


def test_awq_core_beats_rtn_on_outliers() -> None:
    w, x = _outlier_layer()
    cfg = AWQConfig(bits=3, group_size=32)
    s, alpha = awq_search([w], x, cfg)
    q_awq = fake_quant_weight(w * s, 3, 32, False)
    err_awq = ((x / s) @ q_awq.T - x @ w.T).norm()
    err_rtn = (x @ fake_quant_weight(w, 3, 32, False).T - x @ w.T).norm()
    assert alpha > 0 and err_awq < 0.9 * err_rtn


def test_smoothquant_core_beats_plain_w8a8_on_outliers() -> None:
    w, x = _outlier_layer(1)
    s = smooth_scales(x.abs().amax(0), w.abs().amax(0), 0.5)
    plain = fake_quant_tokens(x, 4) @ fake_quant_weight(w, 8, -1).T
    smooth = fake_quant_tokens(x / s, 4) @ fake_quant_weight(w * s, 8, -1).T
    ref = x @ w.T
    assert (smooth - ref).norm() < 0.5 * (plain - ref).norm()


def _outliers_(model: torch.nn.Module) -> None:
    """Give the norms a few huge channels, so the block inputs have outlier channels."""
    with torch.no_grad():
        for block in decoder_layers(model):
            for norm in (
                block.input_layernorm,
                getattr(block, "pre_feedforward_layernorm", None) or block.post_attention_layernorm,
            ):
                norm.weight[[1, 7, 30]] *= 25


def _logit_err(model, ref, ids) -> float:  # type: ignore[no-untyped-def]
    return (model(ids).logits - ref).pow(2).mean().item()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_model_level_error_below_rtn(tiny, calib_ids, probe_ids, arch) -> None:  # type: ignore[no-untyped-def]
    def fresh():  # type: ignore[no-untyped-def]
        m = tiny(arch)
        _outliers_(m)
        return m

    ref = fresh()(probe_ids).logits
    errs = {}
    for name, cfg in {
        "rtn-w3": RTNConfig(bits=3, group_size=32, symmetric=False),
        "awq-w3": AWQConfig(bits=3, group_size=32),
        "rtn-w8a6": RTNConfig(bits=8, group_size=-1, act_bits=6),
        "sq-w8a6": SmoothQuantConfig(bits=8, act_bits=6),
    }.items():
        m = fresh()
        compress_(m, cfg, calib_ids)
        errs[name] = _logit_err(m, ref, probe_ids)
    assert errs["awq-w3"] < errs["rtn-w3"]
    assert errs["sq-w8a6"] < errs["rtn-w8a6"]
