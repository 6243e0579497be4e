"""QuaRot: rotations alone keep the function (every architecture); quantized, beats plain RTN."""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_
from surefast.compress.quant.quarot import QuaRotConfig
from surefast.compress.quant.rtn import RTNConfig
from surefast.models.arch import decoder_layers
from surefast.models.tiny import TEXT_ARCHITECTURES


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_rotated_model_gives_same_logits(tiny, calib_ids, probe_ids, arch) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    ref = model(probe_ids).logits
    compress_(model, QuaRotConfig(quantize=False), calib_ids)
    assert (model(probe_ids).logits - ref).abs().max() < 1e-3
    # the weights really were rotated, and o/down have online Hadamards
    block = decoder_layers(model)[0]
    if arch == "gemma3":  # sandwich norms: residual unrotated, pre-norm outputs rotated online
        assert torch.equal(model.get_input_embeddings().weight, tiny(arch).get_input_embeddings().weight)
        assert hasattr(block.input_layernorm, "_surefast_norm_rotation")
        assert not hasattr(block.post_attention_layernorm, "_surefast_norm_rotation")
    else:
        assert not torch.allclose(model.get_input_embeddings().weight, tiny(arch).get_input_embeddings().weight)
    assert not torch.allclose(block.self_attn.q_proj.weight, decoder_layers(tiny(arch))[0].self_attn.q_proj.weight)
    assert hasattr(block.self_attn.o_proj, "_surefast_input_transform")


@pytest.mark.parametrize("keep", [0.0, 0.5, 1.0])
def test_sandwich_norm_split_keeps_the_function(tiny, probe_ids, keep) -> None:  # type: ignore[no-untyped-def]
    """Gemma3: any split of a pre-norm's scale between the norm and its readers is exact."""
    model = tiny("gemma3")
    with torch.no_grad():  # Gemma-3-270M's pre-norm scales span about -0.3 to 233
        for block in decoder_layers(model):
            block.input_layernorm.weight.copy_(torch.linspace(-1.3, 40, block.input_layernorm.weight.numel()))
    ref = model(probe_ids).logits
    compress_(model, QuaRotConfig(quantize=False, norm_keep=keep))
    assert (model(probe_ids).logits - ref).abs().max() < 1e-3 * ref.abs().max()
    kept = decoder_layers(model)[0].input_layernorm.weight + 1  # Gemma norms scale by 1 + w
    expect = torch.linspace(-1.3, 40, kept.numel()) + 1
    assert torch.allclose(kept, expect.abs().clamp_min(1e-12) ** keep if keep else torch.ones_like(kept), rtol=1e-4)


def test_tied_embeddings_are_untied(tiny, probe_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    model.lm_head.weight = model.model.embed_tokens.weight  # tie, as SmolLM2 and Gemma3 do
    model.config.tie_word_embeddings = True
    ref = model(probe_ids).logits
    compress_(model, QuaRotConfig(quantize=False))
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert not model.config.tie_word_embeddings
    assert (model(probe_ids).logits - ref).abs().max() < 1e-3


def _outliers_(model: torch.nn.Module) -> None:
    """Outlier channels in the residual stream (as LLMs have), made larger still by the norms."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, [1, 7, 30]] *= 30
        for block in decoder_layers(model):
            block.input_layernorm.weight[[1, 7, 30]] *= 6


@pytest.mark.parametrize("weight_method", ["rtn", "gptq"])
def test_quarot_w4a4_beats_rtn_w4a4(tiny, calib_ids, probe_ids, weight_method) -> None:  # type: ignore[no-untyped-def]
    def fresh():  # type: ignore[no-untyped-def]
        m = tiny("llama")
        _outliers_(m)
        return m

    ref = fresh()(probe_ids).logits
    rtn = fresh()
    compress_(rtn, RTNConfig(bits=4, group_size=-1, act_bits=4))
    rot = fresh()
    compress_(rot, QuaRotConfig(bits=4, act_bits=4, weight_method=weight_method), calib_ids)
    err = lambda m: (m(probe_ids).logits - ref).pow(2).mean().item()  # noqa: E731
    assert err(rot) < 0.5 * err(rtn)


def test_kv_quantization_is_applied(tiny, calib_ids, probe_ids) -> None:  # type: ignore[no-untyped-def]
    a, b = tiny("qwen3"), tiny("qwen3")
    compress_(a, QuaRotConfig(bits=8, act_bits=8, weight_method="rtn"), calib_ids)
    compress_(b, QuaRotConfig(bits=8, act_bits=8, weight_method="rtn", kv_bits=4), calib_ids)
    assert b.config._attn_implementation == "surefast_kv"
    assert not torch.allclose(a(probe_ids).logits, b(probe_ids).logits)


def test_gemma_large_norm_scales_stay_in_the_norm(tiny, calib_ids, probe_ids) -> None:  # type: ignore[no-untyped-def]
    """Gemma-3-270M's pre-norms scale a few channels by up to 234 where the normalised activations
    are small. Folded into the rotated weights (``norm_keep=0``) those channels dominate every
    row's rounding error; left in the norm (the default) they do not."""

    def fresh():  # type: ignore[no-untyped-def]
        m = tiny("gemma3")
        with torch.no_grad():
            m.model.embed_tokens.weight[:, [1, 7, 30]] *= 1e-3
            for block in decoder_layers(m):
                block.input_layernorm.weight[[1, 7, 30]] = 233.0
                block.pre_feedforward_layernorm.weight[[1, 7, 30]] = 233.0
        return m

    ref = fresh()(probe_ids).logits
    err = {}
    for keep in (0.0, 1.0):
        m = fresh()
        compress_(m, QuaRotConfig(bits=8, act_bits=16, weight_method="rtn", norm_keep=keep), calib_ids)
        err[keep] = (m(probe_ids).logits - ref).pow(2).mean().item()
    assert err[1.0] < 0.2 * err[0.0]
    assert QuaRotConfig().norm_keep == 1.0
