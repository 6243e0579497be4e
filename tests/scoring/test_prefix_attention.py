"""The split shared-prefix attention equals softmax attention over the concatenated keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surefast.scoring import ScoringConfig, score_items, score_items_reference
from surefast.scoring import prefix_attention as PA

from .helpers import make_items, make_prompt


def naive_attention(q, k_own, v_own, k_prefix, v_prefix, scale):
    """Float64 softmax over [prefix; own] keys, causal within the own tokens: the textbook form."""
    b, h, n_q, _ = q.shape
    g = h // k_prefix.shape[1]
    k = torch.cat([k_prefix.expand(b, -1, -1, -1), k_own], dim=2).repeat_interleave(g, 1).double()
    v = torch.cat([v_prefix.expand(b, -1, -1, -1), v_own], dim=2).repeat_interleave(g, 1).double()
    p = k_prefix.shape[2]
    keep = torch.cat([torch.ones(n_q, p, dtype=torch.bool), torch.ones(n_q, n_q, dtype=torch.bool).tril()], dim=1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # [B, h, Q, d]


def random_inputs(b, h, kv, n_q, p, d, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (3 * torch.randn(*shape, generator=gen)).to(dtype)  # wide logits: peaked softmax rows

    return rand(b, h, n_q, d), rand(b, kv, n_q, d), rand(b, kv, n_q, d), rand(1, kv, p, d), rand(1, kv, p, d)


@pytest.mark.parametrize(("h", "kv"), [(6, 2), (4, 4), (3, 1)])
@pytest.mark.parametrize("flash", [True, False])
def test_split_attention_equals_naive_reference(h, kv, flash, monkeypatch):
    if not flash:  # the matmul fallback (no CPU flash kernel, or another device)
        monkeypatch.setattr(PA, "_FLASH_CPU", None)
    q, k_own, v_own, k_prefix, v_prefix = random_inputs(3, h, kv, 5, 7, 8)
    out = PA.shared_prefix_attention(q, k_own, v_own, k_prefix, v_prefix, 0.35)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref = naive_attention(q, k_own, v_own, k_prefix, v_prefix, 0.35)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_split_attention_in_bf16_is_close():
    q, k_own, v_own, k_prefix, v_prefix = random_inputs(2, 4, 2, 6, 9, 16, torch.bfloat16)
    out = PA.shared_prefix_attention(q, k_own, v_own, k_prefix, v_prefix, 0.25)
    ref = naive_attention(q, k_own, v_own, k_prefix, v_prefix, 0.25)
    assert out.dtype == torch.bfloat16 and (out.double() - ref).abs().max() < 0.05


def test_lse_is_the_log_of_the_softmax_denominator():
    q, k, v, _, _ = random_inputs(2, 2, 2, 4, 1, 8)
    for causal in (False, True):
        _, lse = PA.attention_with_lse(q, k, v, causal, 0.5)
        scores = q.double() @ k.double().transpose(-1, -2) * 0.5
        if causal:
            scores = scores.masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf"))
        assert torch.allclose(lse.double(), torch.logsumexp(scores, -1), atol=1e-5)


def _count_calls(monkeypatch):
    calls = []
    real = PA.shared_prefix_attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(PA, "shared_prefix_attention", counted)
    return calls


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "qwen3_moe", "llava_onevision"])
def test_scoring_uses_the_split_attention_and_equals_the_full_forward(arch, tiny, tiny_tok, monkeypatch):
    calls = _count_calls(monkeypatch)
    model, prompt, items = tiny(arch), make_prompt(), make_items(9)
    before = model.config._attn_implementation
    fast = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(batch_tokens=300))
    assert calls, "the split attention should serve this architecture"
    assert model.config._attn_implementation == before  # restored after scoring
    plain = _plain(model, tiny_tok, prompt, items, monkeypatch)
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert np.abs(fast.logits - ref.logits).max() < 1e-4
    assert np.abs(fast.logits - plain.logits).max() < 1e-4


def _plain(model, tok, prompt, items, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr("surefast.scoring.engine.split_attention_reason", lambda body, device: "off")
        return score_items(model, tok, prompt, items, config=ScoringConfig(batch_tokens=300))


@pytest.mark.parametrize("arch", ["gemma3", "qwen2_5_vl"])
def test_other_architectures_keep_the_plain_path(arch, tiny, tiny_tok, monkeypatch):
    calls = _count_calls(monkeypatch)
    model = tiny(arch)
    fast = score_items(model, tiny_tok, make_prompt(), make_items(4))
    assert fast.prefix_cache and not calls


def test_a_chosen_attention_implementation_is_kept(tiny, tiny_tok, monkeypatch):
    calls = _count_calls(monkeypatch)
    model = tiny("llama")
    model.set_attn_implementation("eager")
    score_items(model, tiny_tok, make_prompt(), make_items(4))
    assert not calls and model.config._attn_implementation == "eager"


def test_the_config_is_restored_when_the_forward_fails(tiny, tiny_tok, monkeypatch):
    model = tiny("llama")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(PA, "shared_prefix_attention", boom)
    with pytest.raises(RuntimeError, match="boom"):
        score_items(model, tiny_tok, make_prompt(), make_items(3))
    assert model.config._attn_implementation == "sdpa"
