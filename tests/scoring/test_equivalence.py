"""The fast path (shared-prefix KV, batching, six-row head) equals the plain full-prompt forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from surefast.models.arch import decoder_body
from surefast.models.tiny import TEXT_ARCHITECTURES, TINY_ARCHITECTURES, VLM_ARCHITECTURES, tiny_config
from surefast.scoring import ScoringConfig, score_items, score_items_reference
from surefast.scoring.arch import LetterHead
from surefast.scoring.batching import encode_prefix, plan_batches

from .helpers import make_items, make_prompt

TOL = 1e-3


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_prefix_cached_scoring_equals_full_forward(arch, tiny, tiny_tok):
    model, prompt, items = tiny(arch), make_prompt(), make_items(12)
    prefix_len = len(encode_prefix(tiny_tok, prompt.prefix))
    config = ScoringConfig(batch_tokens=400)  # several batches, each mixing lengths
    lengths = [len(tiny_tok(prompt.render(i), add_special_tokens=False)["input_ids"]) for i in items]
    batches = plan_batches(lengths, config.batch_tokens, config.max_batch_size)
    assert len(batches) > 1 and any(len({lengths[j] for j in b}) > 1 for b in batches)  # padding is exercised

    fast = score_items(model, tiny_tok, prompt, items, config=config)
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert fast.prefix_cache, "the prefix KV cache should be used for every supported architecture"
    assert fast.uids == ref.uids == tuple(i.uid for i in items)
    assert fast.logits.dtype == np.float32 and fast.logits.shape == (12, 6)
    assert np.array_equal(fast.labels, ref.labels)
    assert np.abs(fast.logits - ref.logits).max() < TOL
    assert fast.tokens_scored == prefix_len + sum(lengths)  # the prefix ran once
    assert ref.tokens_scored == 12 * prefix_len + sum(lengths)


def test_gemma3_prefix_longer_than_sliding_window(tiny, tiny_tok):
    model = tiny("gemma3")
    window = model.config.sliding_window
    prompt, items = make_prompt(demos=2), make_items(6, words=6)
    prefix_len = len(encode_prefix(tiny_tok, prompt.prefix))
    rest_min = min(len(tiny_tok(prompt.render(i), add_special_tokens=False)["input_ids"]) for i in items)
    assert prefix_len > 10 * window and rest_min > window  # both the prefix and every item overflow the window
    assert "sliding_attention" in model.config.layer_types
    fast = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(batch_tokens=10_000))
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert fast.prefix_cache
    assert np.abs(fast.logits - ref.logits).max() < TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2_5_vl"])
def test_full_prompt_batched_path_equals_reference(arch, tiny, tiny_tok):
    model, prompt, items = tiny(arch), make_prompt(), make_items(7)
    fast = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(use_prefix_cache=False, batch_tokens=2000))
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert not fast.prefix_cache
    assert np.abs(fast.logits - ref.logits).max() < TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_eager_attention_equals_reference(arch, tiny, tiny_tok):
    model = tiny(arch)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    prompt, items = make_prompt(), make_items(6)
    fast = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(batch_tokens=600))
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert fast.prefix_cache and np.abs(fast.logits - ref.logits).max() < TOL


def test_batch_size_does_not_change_results(tiny, tiny_tok):
    model, prompt, items = tiny("qwen3"), make_prompt(), make_items(10)
    one = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(max_batch_size=1))
    many = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(batch_tokens=100_000))
    assert np.abs(one.logits - many.logits).max() < TOL


def test_stored_prefix_cache_is_not_mutated(tiny, tiny_tok):
    from surefast.scoring.prefix import PrefixState

    model = tiny("gemma3")
    ids = encode_prefix(tiny_tok, make_prompt().prefix)
    state = PrefixState(decoder_body(model), ids, torch.device("cpu"))
    before = [
        (layer.keys.clone(), layer.values.clone(), getattr(layer, "cumulative_length", None))
        for layer in state.cache.layers
    ]
    with torch.inference_mode():
        for batch in (3, 2):
            cache = state.batch_cache(batch)
            new = torch.randint(0, 200, (batch, 5))
            pos = (state.length + torch.arange(5))[None].expand(batch, -1)
            decoder_body(model)(input_ids=new, position_ids=pos, past_key_values=cache, use_cache=True)
    for layer, (k, v, n) in zip(state.cache.layers, before, strict=True):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
        assert getattr(layer, "cumulative_length", None) == n


def _gemma_with_softcap() -> torch.nn.Module:
    config = tiny_config("gemma3")
    config.final_logit_softcapping = 2.0  # small: the cap visibly bends these logits
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("arch", [*TEXT_ARCHITECTURES, *VLM_ARCHITECTURES, "gemma3+softcap"])
def test_six_row_head_equals_full_logits(arch, tiny, tiny_tok):
    model = _gemma_with_softcap() if arch == "gemma3+softcap" else tiny(arch)
    ids = torch.tensor([tiny_tok(make_prompt(1).prefix + "Answer:", add_special_tokens=False)["input_ids"]])
    letter_ids = (5, 17, 100, 263, 200, 7)
    with torch.inference_mode():
        full = model(input_ids=ids).logits[:, -1, list(letter_ids)]  # [1, 6]
        hidden = decoder_body(model)(input_ids=ids).last_hidden_state[:, -1]  # [1, H]
        six = LetterHead(model, letter_ids)(hidden)
    assert six.dtype == torch.float32
    assert torch.allclose(six, full.float(), atol=1e-5, rtol=1e-5)
    if arch == "gemma3+softcap":
        assert six.abs().max() < 2.0


def test_non_linear_head_module_is_called_not_sliced(tiny, tiny_tok):
    model = tiny("llama")
    linear = model.lm_head

    class Wrapped(torch.nn.Module):  # what a quantized head might look like: no plain weight to slice
        def __init__(self) -> None:
            super().__init__()
            self.inner = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2.0

    model.lm_head = Wrapped()
    head = LetterHead(model, (1, 2, 3, 4, 5, 6))
    assert head.rows is None
    hidden = torch.randn(3, model.config.hidden_size)
    assert torch.allclose(head(hidden), (linear(hidden) * 2.0)[:, 1:7], atol=1e-6)


def test_bf16_model_is_scored_in_its_dtype(tiny, tiny_tok):
    model, prompt, items = tiny("llama", dtype=torch.bfloat16), make_prompt(), make_items(6)
    fast = score_items(model, tiny_tok, prompt, items)
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert fast.logits.dtype == np.float32
    assert np.array_equal(fast.predictions, ref.predictions)
    assert np.abs(fast.logits - ref.logits).max() < 0.1  # bf16 rounding, different kernels


def test_empty_item_list(tiny, tiny_tok):
    result = score_items(tiny("llama"), tiny_tok, make_prompt(), [])
    assert result.logits.shape == (0, 6) and result.uids == ()
