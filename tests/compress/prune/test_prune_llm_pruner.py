"""LLM-Pruner: budget arithmetic, importance sums, surgery == masking, shrink + save + reload."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from surefast.compress.prune.llm_pruner import (
    LLMPrunerConfig,
    channel_scores,
    head_scores,
    llm_prune_,
    plan,
    prune_attention_,
    prune_mlp_,
)
from surefast.compress.prune.structured import block_param_count, experts_of, lowest_per_group
from surefast.errors import SurefastError
from surefast.models.arch import arch_facts, decoder_layers
from surefast.models.tiny import TEXT_ARCHITECTURES

IDS = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(0))


def _grads(model: torch.nn.Module) -> None:
    model.zero_grad()
    with torch.enable_grad():
        model(input_ids=IDS, labels=IDS).loss.backward()


def test_plan_arithmetic() -> None:
    # 14 heads / 2 KV groups (Qwen2.5-0.5B-like): floor(0.2 * 7) = 1 head per group, MLP takes the rest
    p = plan(
        LLMPrunerConfig(ratio=0.2), 14, 2, 64, 896, 24, 4864, 1, 24 * (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864)
    )
    head_params = 2 * 1 * 2 * 896 * 64 * 24
    assert p.heads_per_group == 1
    assert p.channels == round((p.target_params - head_params) / (3 * 896 * 24))
    assert abs(p.planned_params - p.target_params) <= 3 * 896 * 24 / 2  # half a channel per block
    assert plan(LLMPrunerConfig(ratio=0.2, prune_heads=False), 14, 2, 64, 896, 24, 4864, 1, 10**8).heads_per_group == 0
    assert plan(LLMPrunerConfig(ratio=0.0), 4, 2, 16, 64, 2, 128, 1, 1000).channels == 0


def test_lowest_per_group_stable() -> None:
    s = torch.tensor([[3.0, 1.0, 2.0, 1.0], [0.0, 5.0, 5.0, 4.0]])
    assert lowest_per_group(s, 2).tolist() == [[0, 2], [1, 2]]


def test_importance_is_sum_of_taylor_terms(tiny) -> None:
    model = tiny("qwen2")  # q_proj has a bias
    _grads(model)
    facts = arch_facts(model)
    attn, mlp = decoder_layers(model)[0].self_attn, decoder_layers(model)[0].mlp
    hs = head_scores(attn, facts, 4, 2, 16)
    t = lambda p: (p.detach() * p.grad).abs()  # noqa: E731
    for h in range(4):
        rows = slice(h * 16, (h + 1) * 16)
        ref = t(attn.q_proj.weight)[rows].sum() + t(attn.q_proj.bias)[rows].sum() + t(attn.o_proj.weight)[:, rows].sum()
        torch.testing.assert_close(hs[h], ref)
    cs = channel_scores(mlp, facts)
    j = 7
    ref = t(mlp.gate_proj.weight)[j].sum() + t(mlp.up_proj.weight)[j].sum() + t(mlp.down_proj.weight)[:, j].sum()
    torch.testing.assert_close(cs[j], ref)


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_surgery_equals_masking(tiny, arch: str) -> None:
    """Removing heads/channels gives the same logits as zeroing their o_proj / down_proj columns."""
    model = tiny(arch)
    masked = copy.deepcopy(model)
    facts = arch_facts(model)
    layer, mlayer = decoder_layers(model)[0], decoder_layers(masked)[0]
    keep_heads = torch.tensor([1, 3])  # one query head from each KV group (GQA: 4 heads, 2 KV)
    prune_attention_(layer.self_attn, facts, keep_heads, n_kv=2, head_dim=16, with_kv=False)
    for h in (0, 2):
        mlayer.self_attn.o_proj.weight.data[:, h * 16 : (h + 1) * 16] = 0
    experts = experts_of(mlayer.mlp)
    if experts is None:
        keep = torch.arange(0, 128, 2)
        prune_mlp_(layer.mlp, facts, keep)
        mlayer.mlp.down_proj.weight.data[:, 1::2] = 0
    else:
        keep = torch.stack([torch.arange(e % 2, 32, 2) for e in range(4)])  # [E, 16], different per expert
        prune_mlp_(layer.mlp, facts, keep)
        for e in range(4):
            experts.down_proj.data[e][:, (e + 1) % 2 :: 2] = 0
    model.config.num_attention_heads = 2
    torch.testing.assert_close(model(IDS).logits, masked(IDS).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_prune_shrinks_saves_and_reloads(tiny, tmp_path, arch: str, ratio: float) -> None:
    model = tiny(arch)
    facts = arch_facts(model)
    before = block_param_count(model, facts)
    stats = llm_prune_(model, IDS, LLMPrunerConfig(ratio=ratio))
    after = block_param_count(model, facts)
    assert stats["block_params_after"] == after < before
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    moe = arch == "qwen3_moe"
    group = 3 * hidden * (4 * 8 if moe else 1)  # one channel; experts keep multiples of 8 channels
    assert abs((before - after) - ratio * before) <= layers * group / 2 + 1
    assert stats["params_after"] < stats["params_before"] and stats["bytes_after"] < stats["bytes_before"]
    logits = model(IDS).logits
    assert torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(IDS).logits, logits)
    assert sum(p.numel() for p in reloaded.parameters()) == stats["params_after"]


def test_ratio_zero_is_identity_and_config_errors(tiny) -> None:
    model = tiny("llama")
    ref = model(IDS).logits
    llm_prune_(model, IDS, LLMPrunerConfig(ratio=0.0))
    torch.testing.assert_close(model(IDS).logits, ref)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(SurefastError):
        LLMPrunerConfig(ratio=0.95)


def test_multi_head_attention_prunes_kv_with_query(tmp_path) -> None:
    """Without GQA every query head owns its K/V head: they are removed together."""
    import transformers

    from surefast.models.tiny import tiny_config

    config = tiny_config("llama")
    config.num_key_value_heads = 4
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    stats = llm_prune_(model, IDS, LLMPrunerConfig(ratio=0.5))
    assert stats["num_attention_heads"] == 2 and model.config.num_key_value_heads == 2
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == attn.v_proj.out_features == attn.q_proj.out_features == 32
    out = model(IDS).logits
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path).eval()(IDS).logits, out)
