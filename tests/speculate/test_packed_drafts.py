"""Packed low-bit models in speculative decoding: as drafts the output is the target's greedy output
token for token; as targets, the packed target's own (issue 17's cheap drafts start from here)."""

from __future__ import annotations

import copy

import pytest
import torch

from surefast.compress import compress_, make_config
from surefast.compress.lowbit import PackedLinear
from surefast.compress.lowbit.pack import pack_
from surefast.speculate import ChainConfig, SageConfig, SpeculativeDecoder

from .test_greedy import plain_greedy, prompt_of

POLICIES = {"sage": SageConfig(budget=8, max_depth=4, max_width=3), "chain": ChainConfig(depth=3)}
PACKINGS = {"int4": ("rtn", {"bits": 4, "group_size": 32}), "w8a8": ("smoothquant", {})}


@pytest.fixture
def calib_ids() -> torch.Tensor:
    """8 samples of 32 byte tokens (as tests/compress/conftest.py's)."""
    return torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))


def packed_copy(model, packing: str, calib_ids) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    method, options = PACKINGS[packing]
    out = copy.deepcopy(model)
    compress_(out, make_config(method, **options), calib_ids)
    pack_(out)
    assert any(isinstance(m, PackedLinear) for m in out.modules())
    return out.eval()


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("packing", list(PACKINGS))
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_packed_draft_is_lossless(arch, packing, policy, tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    target = tiny(arch, seed=0)
    draft = packed_copy(target, packing, calib_ids)  # the target's own low-bit copy, kernels chosen here
    prompt = prompt_of(9, seed=3)
    out = SpeculativeDecoder(target, draft, POLICIES[policy]).generate(prompt, 24, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 24, eos=False)
    assert out.stats.tokens_per_forward > 1  # a close copy: it predicts the target


def test_a_packed_target_decodes_its_own_greedy_output(tiny, calib_ids, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")  # one kernel for every token count
    target = packed_copy(tiny("llama", seed=0), "int4", calib_ids)
    draft = tiny("llama", seed=0)  # the dense model drafting for its packed self
    prompt = prompt_of(9, seed=4)
    out = SpeculativeDecoder(target, draft, POLICIES["sage"]).generate(prompt, 24, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 24, eos=False)
