"""Every kind of draft keeps the engine lossless: a separate model, packed copies, the target's first layers, n-grams."""

from __future__ import annotations

import pytest
import torch

from surefast.errors import SurefastError
from surefast.models.tiny import TEXT_ARCHITECTURES
from surefast.speculate import ChainConfig, DynamicTreeConfig, SageConfig, SpeculativeDecoder
from surefast.speculate.drafts import first_layers, packed_copy, parse_draft
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PlanConfig
from surefast.speculate.policies import ConformalTreeConfig

from .test_greedy import plain_greedy, prompt_of

POLICIES = {
    "sage": SageConfig(budget=10, max_depth=6, max_width=3),
    "chain": ChainConfig(depth=4),
    "dynamic": DynamicTreeConfig(depth=3, width=3, budget=8),
    "conformal": ConformalTreeConfig(budget=10, max_width=3, max_depth=6),
}


def repetitive_prompt(seed: int) -> torch.Tensor:
    """A prompt that repeats a phrase, so n-gram lookups find continuations."""
    phrase = prompt_of(6, seed)
    return torch.cat([phrase, prompt_of(3, seed + 1), phrase, phrase[:, :3]], dim=1)


def draft_of(kind: str, target, perturbed):
    if kind == "model":
        return perturbed(target, scale=0.05, seed=1)
    if kind == "self:int4":
        return packed_copy(target, "int4")
    if kind == "self:int8":
        return packed_copy(target, "int8")
    if kind == "self:layers=1":
        return first_layers(target, 1)
    return None  # ngram


KINDS = [(kind, ngram) for kind in ("model", "self:int4", "self:int8", "self:layers=1") for ngram in (False, True)]


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize(("kind", "ngram"), [*KINDS, ("ngram", True)])  # no draft model: n-grams only
def test_greedy_equals_target_with_every_draft_kind(kind, ngram, policy, tiny, perturbed):
    target = tiny("qwen2", seed=0)
    prompt = repetitive_prompt(3)
    dec = SpeculativeDecoder(
        target, draft_of(kind, target, perturbed), POLICIES[policy], ngram=NgramConfig() if ngram else None
    )
    out = dec.generate(prompt, 40, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 40, eos=False)
    if ngram:
        assert out.stats.summary()["ngram_proposed"] > 0


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_first_layers_draft_every_architecture(arch, tiny):
    target = tiny(arch, seed=0)
    draft = first_layers(target, 1)
    prompt = prompt_of(9, seed=4)
    out = SpeculativeDecoder(target, draft, "sage", plan=None).generate(prompt, 24, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 24, eos=False)


def test_first_layers_shares_the_targets_weights(tiny):
    target = tiny("llama", seed=0)
    draft = first_layers(target, 1)
    own = {p.data_ptr() for p in target.parameters()}
    assert all(p.data_ptr() in own for p in draft.parameters())
    assert len(draft.model.layers) == 1 and draft.config.num_hidden_layers == 1
    assert target.config.num_hidden_layers == len(target.model.layers) > 1  # the target is untouched
    hidden = draft(torch.tensor([[1, 2, 3]])).logits
    with torch.no_grad():  # the same computation by hand: embed, first layer, norm, head
        ref = target(torch.tensor([[1, 2, 3]]), output_hidden_states=True).hidden_states[1]
        ref = target.lm_head(target.model.norm(ref))
    torch.testing.assert_close(hidden, ref)


def test_first_layers_refuses_bad_k(tiny):
    target = tiny("qwen2", seed=0)
    for k in (0, len(target.model.layers)):
        with pytest.raises(SurefastError, match="decoder layers"):
            first_layers(target, k)


@pytest.mark.parametrize(
    ("text", "compress", "message"),
    [
        ("self:layers=x", None, "whole number"),
        ("self:layers=0", None, "whole number"),
        ("self:int3", None, "unknown self-draft"),
        ("self:int4", "int4", "does not apply"),
        ("ngram", "int4", "draft model"),
        ("some-model", "int2", "unknown"),
        (" ", None, "empty"),
    ],
)
def test_parse_draft_errors(text, compress, message):
    with pytest.raises(SurefastError, match=message):
        parse_draft(text, compress)


def test_parse_draft_kinds():
    assert parse_draft("self:layers=7").layers == 7
    assert parse_draft("self:int4").label == "self:int4"
    assert parse_draft("ngram").kind == "ngram"
    assert parse_draft("qwen2.5-coder-0.5b-instruct", "int4").label == "qwen2.5-coder-0.5b-instruct (int4)"


def test_no_draft_needs_ngrams(tiny):
    with pytest.raises(SurefastError, match="n-gram"):
        SpeculativeDecoder(tiny("qwen2", seed=0), None, "sage")


@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_planned_generation_is_lossless(kind, tiny, perturbed):
    target = tiny("qwen2", seed=0)
    prompt = repetitive_prompt(5)
    ng = NgramConfig() if kind == "ngram" else None
    dec = SpeculativeDecoder(target, draft_of(kind, target, perturbed), "sage", ngram=ng, plan=PlanConfig())
    out = dec.generate(prompt, 40, eos_token_id=None)
    assert out.tokens == plain_greedy(target, prompt, 40, eos=False)
    assert out.stats.plan["steps"] == len(out.stats.steps)
