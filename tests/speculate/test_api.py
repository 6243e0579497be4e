"""The one-harness API: every method, the same output and statistics; streaming; vocabularies; errors."""

from __future__ import annotations

import math

import pytest
import torch

from surefast.errors import SurefastError
from surefast.speculate import DynamicTreeConfig, SageConfig, SpeculativeDecoder
from surefast.speculate.api import METHODS, speculative_generate, stream_text


@pytest.fixture(scope="module")
def pair(perturbed):
    from surefast.models.tiny import tiny_model

    target = tiny_model("qwen2", 0)
    return target, perturbed(target, 0.05, 1)


PROMPT = torch.tensor([[5, 6, 7, 8, 9, 10]])


def test_every_method_gives_the_target_greedy_output(pair):
    target, draft = pair
    outputs = {
        m: speculative_generate(target, draft, PROMPT, method=m, max_new_tokens=20, eos_token_id=None) for m in METHODS
    }
    reference = outputs["ar"].tokens
    assert len(reference) == 20
    for method, out in outputs.items():
        assert out.tokens == reference, method
        s = out.stats
        assert s.method == method and s.new_tokens == 20 and s.prompt_tokens == PROMPT.shape[1]
        assert s.total_s >= s.prefill_s > 0 and s.tokens_per_s > 0 and s.e2e_tokens_per_s > 0
        assert s.tokens_per_forward >= 1.0
        assert 1 <= s.first_tokens <= s.new_tokens
    assert outputs["ar"].stats.target_forwards == 20 and outputs["ar"].stats.tokens_per_forward == 1.0
    assert outputs["hf-assisted"].stats.draft_forwards > 0
    sage = outputs["sage"].stats
    assert len(sage.steps) == sage.target_forwards - 1
    assert sage.new_tokens == 1 + sum(s.emitted for s in sage.steps)
    assert math.isclose(sage.tokens_per_forward, sum(s.emitted for s in sage.steps) / len(sage.steps))
    assert sage.draft_s + sage.verify_s + sage.overhead_s <= sage.decode_s + 1e-6
    # A step in which no draft ran records NaN entropy (engine: no draft distribution to measure).
    assert all(0.0 <= h <= 1.0 for h in sage.entropy_trace if not math.isnan(h))
    summary = sage.to_dict()
    assert summary["steps"] == len(sage.steps) and len(summary["step_records"]) == len(sage.steps)


def test_stream_yields_accepted_chunks(pair):
    target, draft = pair
    dec = SpeculativeDecoder(target, draft, DynamicTreeConfig(depth=3, width=2, budget=6))
    chunks = list(dec.stream(PROMPT, 25, eos_token_id=None))
    assert len(chunks[0]) == 1  # the prefill's token comes first, on its own
    assert [len(c) for c in chunks[1:]] == [s.emitted for s in dec.stats.steps]
    assert [t for c in chunks for t in c] == SpeculativeDecoder(target, draft, "chain").generate(
        PROMPT, 25, eos_token_id=None
    ).tokens


def test_stream_text_matches_decode(tiny_tok, pair):
    target, draft = pair
    prompt = torch.tensor([tiny_tok("hello wörld")["input_ids"]])
    dec = SpeculativeDecoder(target, draft, "sage")
    tokens = dec.generate(prompt, 30, eos_token_id=None).tokens
    text = "".join(stream_text(tiny_tok, dec.stream(prompt, 30, eos_token_id=None)))
    assert text == tiny_tok.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")


def test_auto_eos_comes_from_the_target(pair):
    target, draft = pair
    out = speculative_generate(target, draft, PROMPT, method="sage", max_new_tokens=40)
    ref = speculative_generate(target, draft, PROMPT, method="ar", max_new_tokens=40)
    assert out.tokens == ref.tokens
    eos = target.generation_config.eos_token_id
    assert out.tokens[-1] == eos or len(out.tokens) == 40


def test_zero_and_one_new_tokens(pair):
    target, draft = pair
    assert SpeculativeDecoder(target, draft).generate(PROMPT, 0).tokens == []
    one = SpeculativeDecoder(target, draft).generate(PROMPT, 1, eos_token_id=None)
    assert len(one.tokens) == 1 and one.stats.steps == [] and one.stats.draft_forwards == 1


def test_draft_with_a_larger_vocabulary(tiny):
    """Padded vocabularies differ in size: the draft's extra logits are never proposed."""
    target = tiny("llama", seed=0)
    draft = tiny("llama", seed=0)
    draft.resize_token_embeddings(target.config.vocab_size + 16)
    out = SpeculativeDecoder(target, draft, SageConfig(budget=8)).generate(PROMPT, 16, eos_token_id=None)
    ref = speculative_generate(target, None, PROMPT, method="ar", max_new_tokens=16, eos_token_id=None)
    assert out.tokens == ref.tokens


def test_draft_with_a_smaller_vocabulary_fails_clearly(tiny):
    target = tiny("llama", seed=0)
    draft = tiny("llama", seed=0)
    draft.resize_token_embeddings(8)
    with pytest.raises(SurefastError, match="outside the draft model's vocabulary"):
        SpeculativeDecoder(target, draft).generate(PROMPT, 16, eos_token_id=None)


def test_errors(pair):
    target, draft = pair
    with pytest.raises(SurefastError, match="did you mean 'hf-assisted'"):
        speculative_generate(target, draft, PROMPT, method="hf-asisted")
    with pytest.raises(SurefastError, match="does not belong"):
        speculative_generate(target, draft, PROMPT, method="chain", policy=SageConfig())
    with pytest.raises(ValueError):
        from surefast.speculate import SamplingConfig

        SamplingConfig(temperature=-1.0)


def test_unsupported_layer_types_are_refused():
    from types import SimpleNamespace

    from surefast.speculate.model import HFCausalLM

    config = SimpleNamespace(
        layer_types=["full_attention", "linear_attention"],
        model_type="qwen3_next",
        sliding_window=None,
        eos_token_id=None,
    )
    fake = SimpleNamespace(config=config, get_output_embeddings=lambda: SimpleNamespace(weight=torch.zeros(4, 2)))
    with pytest.raises(SurefastError, match="cannot roll back"):
        HFCausalLM(fake)


def test_load_pair_checks_tokenizers(monkeypatch):
    from types import SimpleNamespace

    from surefast.speculate.api import load_pair

    target, draft = load_pair("tiny:qwen2@0", "tiny:llama@1", dtype="fp32", device="cpu")
    assert target.model.config.model_type == "qwen2" and draft.model.config.model_type == "llama"

    def fake_load(spec, **_):
        vocab = {"a": 0} if spec == "t" else {"b": 0}
        return SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: vocab))

    monkeypatch.setattr("surefast.models.load_model", fake_load)
    with pytest.raises(SurefastError, match="does not share"):
        load_pair("t", "d")


def test_empty_prompt_is_refused(pair):
    with pytest.raises(SurefastError, match="non-empty prompt"):
        SpeculativeDecoder(*pair).generate([], 4)
