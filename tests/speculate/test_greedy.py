"""Greedy speculative decoding == the target's own greedy decoding, token for token."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from surefast.models.tiny import TEXT_ARCHITECTURES, tiny_model
from surefast.speculate import ChainConfig, DynamicTreeConfig, SageConfig, SpeculativeDecoder, StaticTreeConfig

POLICIES = {
    "sage": SageConfig(),
    "sage-small": SageConfig(budget=6, max_depth=4, max_width=3),
    "chain": ChainConfig(depth=3),
    "dynamic": DynamicTreeConfig(depth=3, width=3, budget=8),
    "static-tree": StaticTreeConfig(),
    "static-small": StaticTreeConfig(paths=((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))),
}


@torch.no_grad()
def plain_greedy(model, prompt: torch.Tensor, n: int, eos: bool = True) -> list[int]:
    kwargs = {} if eos else {"eos_token_id": None}
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
        **kwargs,
    )
    return out[0, prompt.shape[1] :].tolist()


def prompt_of(length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 250, (1, length), generator=torch.Generator().manual_seed(seed))


@functools.cache
def cached_tiny(arch: str, seed: int):
    return tiny_model(arch, seed)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_greedy_matches_generate(arch, policy, tiny, perturbed):
    target = tiny(arch, seed=0)
    draft = perturbed(target, scale=0.05, seed=1)
    prompt = prompt_of(9, seed=3)
    out = SpeculativeDecoder(target, draft, POLICIES[policy]).generate(prompt, 24, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 24, eos=False)


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_unrelated_draft_still_exact(arch, tiny):
    target, draft = tiny(arch, seed=0), tiny(arch, seed=1)
    prompt = prompt_of(5, seed=4)
    out = SpeculativeDecoder(target, draft, "sage").generate(prompt, 20, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 20, eos=False)
    assert out.stats.tokens_per_forward >= 1.0


@pytest.mark.parametrize("policy", list(POLICIES))
def test_identical_draft_accepts_every_level(policy, tiny):
    target = tiny("llama", seed=0)
    out = SpeculativeDecoder(target, target, POLICIES[policy]).generate(prompt_of(6, 5), 30, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt_of(6, 5), 30, eos=False)
    for step in out.stats.steps:
        assert step.accepted == step.depth  # the draft's own first choices are the target's
    assert out.stats.tokens_per_forward > 1.5


def test_perturbed_draft_gives_nontrivial_acceptance(tiny, perturbed):
    target = tiny("qwen3", seed=0)
    draft = perturbed(target, scale=0.05, seed=2)
    out = SpeculativeDecoder(target, draft, DynamicTreeConfig(depth=4, width=2, budget=8)).generate(
        prompt_of(8, 6), 40, eos_token_id=None
    )
    accepted = out.stats.accepted_lengths
    assert 0 < sum(accepted) < 4 * len(accepted)
    assert any(a == 0 for a in accepted) or any(a < 4 for a in accepted)


def test_stops_at_eos_like_generate(tiny, perturbed):
    target = tiny("qwen2", seed=0)
    eos = plain_greedy(target, prompt_of(7, 8), 12, eos=False)[5]  # pretend the 6th token is EOS
    out = SpeculativeDecoder(target, perturbed(target, 0.05, 3), "sage").generate(prompt_of(7, 8), 12, eos_token_id=eos)
    ref = plain_greedy(target, prompt_of(7, 8), 12, eos=False)
    assert out.tokens == ref[: ref.index(eos) + 1]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arch=st.sampled_from(["llama", "qwen2"]),
    draft_seed=st.integers(0, 3),
    noise=st.sampled_from([0.0, 0.03, 0.1, 1.0]),
    prompt_len=st.integers(1, 24),
    prompt_seed=st.integers(0, 10_000),
    policy=st.sampled_from(list(POLICIES)),
    new_tokens=st.integers(1, 20),
)
def test_greedy_property(arch, draft_seed, noise, prompt_len, prompt_seed, policy, new_tokens, perturbed):
    target = cached_tiny(arch, 0)
    draft = perturbed(target, noise, draft_seed) if noise < 1.0 else cached_tiny(arch, draft_seed + 1)
    prompt = prompt_of(prompt_len, prompt_seed)
    out = SpeculativeDecoder(target, draft, POLICIES[policy]).generate(prompt, new_tokens, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, new_tokens, eos=False)
    assert out.stats.new_tokens == new_tokens == len(out.tokens)


def _plain_cache(model, ids: torch.Tensor) -> DynamicCache:
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    return cache


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_caches_after_many_steps_equal_plain_decoding(arch, tiny, perturbed):
    target = tiny(arch, seed=0)
    draft = perturbed(target, 0.05, 4)
    prompt = prompt_of(10, 9)
    dec = SpeculativeDecoder(target, draft, SageConfig(budget=8, max_width=3))
    out = dec.generate(prompt, 40, eos_token_id=None)
    assert len(out.stats.steps) > 5
    committed = torch.cat([prompt[0], torch.tensor(out.tokens[:-1])])[None]  # the last token is the pending root
    assert len(dec.target_cache) == committed.shape[1]
    for model, cache in ((target, dec.target_cache), (draft, dec.draft_cache)):
        ref = _plain_cache(model, committed[:, : len(cache)])
        # the draft lags by at most an accepted leaf and the last root (a final no-draft step when one token is left)
        assert len(cache) >= committed.shape[1] - 2
        assert cache.positions.tolist() == list(range(len(cache)))
        for (k, v), layer in zip(cache.layers(), ref.layers, strict=True):
            assert (k - layer.keys).abs().max() < 1e-4 and (v - layer.values).abs().max() < 1e-4
