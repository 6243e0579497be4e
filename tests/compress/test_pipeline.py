"""The shared pipeline: generic discovery, the per-architecture table, exact statistics, registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from surefast.compress import CompressionConfig, Method, compress_, make_config, register
from surefast.compress.arch import fuse_experts_, unfuse_experts_
from surefast.errors import SurefastError
from surefast.models.arch import ARCH_FACTS, arch_facts, decoder_layers, get
from surefast.models.tiny import TEXT_ARCHITECTURES


@dataclass(frozen=True)
class _RecordConfig(CompressionConfig):
    method: ClassVar[str] = "test-record"


@register(_RecordConfig, needs=("sumsq", "absmax", "hessian", "inputs"))
class _Record(Method):
    """Changes nothing; keeps what the pipeline handed over."""

    seen: ClassVar[list] = []

    def compress_block(self, block) -> None:  # type: ignore[no-untyped-def]
        type(self).seen.append((block.name, [x.clone() for x in block.inputs], dict(block.stats)))


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_arch_table_matches_tiny_models(tiny, arch: str) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    facts = arch_facts(model)
    assert facts.model_type in ARCH_FACTS
    layers = decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    block = layers[0]
    for path in (facts.attn_norm, facts.mlp_norm, *facts.post_norms):
        assert get(block, path) is not None, path
    attn = get(block, facts.attn)
    for proj in (facts.q, facts.k, facts.v, facts.o):
        assert isinstance(get(attn, proj), torch.nn.Linear)
    mlp = get(block, facts.mlp)
    if arch == "qwen3_moe":
        assert get(mlp, "experts") is not None
    else:
        for proj in (facts.gate, facts.up, facts.down):
            assert isinstance(get(mlp, proj), torch.nn.Linear)


def test_unfused_experts_same_function(tiny, probe_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("qwen3_moe")
    ref = model(probe_ids).logits
    names = unfuse_experts_(model)
    assert names and all("experts" in n for n in names)
    assert torch.allclose(model(probe_ids).logits, ref, atol=1e-5)
    assert "model.layers.0.mlp.experts.gate_up.0" in dict(model.named_modules())
    fuse_experts_(model)
    assert torch.allclose(model(probe_ids).logits, ref, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3_moe"])
def test_pipeline_inputs_and_stats_are_exact(tiny, calib_ids, arch: str) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    with torch.no_grad():
        hidden = model(calib_ids, output_hidden_states=True).hidden_states  # [L+1] x [N, S, H]
    _Record.seen.clear()
    result = compress_(model, _RecordConfig(), calib_ids)
    assert [s[0] for s in _Record.seen] == ["model.layers.0", "model.layers.1"]
    for i, (_, inputs, stats) in enumerate(_Record.seen):
        assert torch.allclose(torch.cat(inputs), hidden[i], atol=1e-5)  # unchanged model: same states
        q = stats[f"model.layers.{i}.self_attn.q_proj"]
        norm = get(decoder_layers(model)[i], arch_facts(model).attn_norm)
        x = norm(hidden[i]).reshape(-1, hidden[i].shape[-1])  # [N*S, H] the q_proj inputs
        assert q.n_rows == x.shape[0]
        assert torch.allclose(q.hessian, 2 * x.T @ x / x.shape[0], atol=1e-4, rtol=1e-4)
        assert torch.allclose(q.sumsq, x.pow(2).sum(0), rtol=1e-4)
        assert torch.allclose(q.absmax, x.abs().amax(0))
        assert q.inputs is not None and q.inputs.shape[1] == x.shape[1]
        assert not any("lm_head" in n or "embed" in n for n in stats)
    json.dumps(result.to_json())  # serialisable
    assert result.calibration["source"] == "token-ids"


def test_default_calibration_text_and_filter(tiny, tiny_tok) -> None:  # type: ignore[no-untyped-def]
    from surefast.compress.calibration_data import CalibrationConfig

    model = tiny("llama")
    only_mlp = lambda module, name: "mlp" in name  # noqa: E731
    result = compress_(model, make_config("rtn", bits=4, group_size=32), tokenizer=tiny_tok, filter_fn=only_mlp)
    assert result.layers and all(".mlp." in n for n in result.layers)
    assert result.calibration == {}  # RTN reads no data
    _Record.seen.clear()
    cal = CalibrationConfig(n_samples=2, seq_len=16)
    result = compress_(tiny("llama"), _RecordConfig(), cal, tokenizer=tiny_tok)
    assert result.calibration["fingerprint"] and result.calibration["n_samples"] == 2
    assert _Record.seen[0][1][0].shape[1] == 16


def test_registry_did_you_mean() -> None:
    with pytest.raises(SurefastError, match="gptq"):
        try:
            make_config("gptqq")
        except SurefastError as e:
            assert "did you mean 'gptq'" in str(e)
            raise
    with pytest.raises(SurefastError, match="group_size"):
        try:
            make_config("gptq", group_sise=64)
        except SurefastError as e:
            assert "group_size" in str(e.hint)
            raise
    cfg = make_config("gptq", bits=3, group_size=None)
    assert cfg.bits == 3 and cfg.group_size == 128
