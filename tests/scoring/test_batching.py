"""Tokenization split (prefix once, items apart), boundary check, length batching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surefast.scoring import ScoringConfig, score_items, score_items_reference
from surefast.scoring.batching import (
    common_token_prefix,
    encode_full,
    encode_item,
    encode_prefix,
    leading_special_ids,
    plan_batches,
    split_mismatch,
)

from .helpers import CHAT_HEAD, DEMO, StandInPrompt, make_items, make_prompt, real_tokenizer


def test_prefix_ids_plus_rest_ids_equal_full_ids(tiny_tok):
    prompt = make_prompt()
    prefix_ids = encode_prefix(tiny_tok, prompt.prefix)
    for item in make_items(10):
        enc = encode_item(tiny_tok, prompt, item, len(prefix_ids), 10_000)
        assert prefix_ids + enc.rest_ids == encode_full(tiny_tok, prompt.prefix + prompt.render(item))
    encoded = [encode_item(tiny_tok, prompt, i, 0, 10_000) for i in make_items(3)]
    assert split_mismatch(tiny_tok, prompt.prefix, prefix_ids, encoded) is None


@pytest.mark.usefixtures("real_home")
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"])
def test_real_tokenizers_split_cleanly_after_a_newline(name):
    tok = real_tokenizer(name)
    items = make_items(6)
    for separator, clean in (("\n", True), ("\n\n", name != "smollm2-135m-instruct")):
        prompt = StandInPrompt(CHAT_HEAD + DEMO.replace("\n\n", separator) * 3)
        prefix_ids = encode_prefix(tok, prompt.prefix)
        encoded = [encode_item(tok, prompt, item, len(prefix_ids), 10**6) for item in items]
        # SmolLM2's GPT-2 pre-tokenizer: a trailing "\n\n" is one token alone, "\n" + "\n" before a word
        assert (split_mismatch(tok, prompt.prefix, prefix_ids, encoded) is None) == clean, separator
        shared, fixed = common_token_prefix(tok, prompt.prefix, prefix_ids, encoded)
        assert shared == len(prefix_ids) - (0 if clean else 1)
        for enc in fixed:
            assert prefix_ids[:shared] + enc.rest_ids == encode_full(tok, prompt.prefix + enc.text)


class LetterFirst(StandInPrompt):
    """Items start with "A"/"B": after a prefix ending in a space, " A" is one token of the whole prompt."""

    def render(self, item, context=None):
        return f"{'AB'[int(item.uid.rsplit('-', 1)[1]) % 2]} question {item.question}\nAnswer:"


def test_unclean_boundary_is_found_and_repaired(tiny, tiny_tok):
    prompt = LetterFirst(prefix=make_prompt().prefix + "Next one, ")  # ends in a space: unclean
    items = make_items(6)
    prefix_ids = encode_prefix(tiny_tok, prompt.prefix)
    encoded = [encode_item(tiny_tok, prompt, i, len(prefix_ids), 10_000) for i in items]
    assert split_mismatch(tiny_tok, prompt.prefix, prefix_ids, encoded) == items[0].uid
    shared, fixed = common_token_prefix(tiny_tok, prompt.prefix, prefix_ids, encoded)
    assert shared == len(prefix_ids) - 1  # the trailing space moved into every item
    for enc in fixed:
        assert prefix_ids[:shared] + enc.rest_ids == encode_full(tiny_tok, prompt.prefix + enc.text)

    model = tiny("llama")
    with pytest.warns(UserWarning, match="clean token boundary"):
        fast = score_items(model, tiny_tok, prompt, items)
    ref = score_items_reference(model, tiny_tok, prompt, items)
    assert fast.boundary_repaired and fast.prefix_cache
    assert np.abs(fast.logits - ref.logits).max() < 1e-3
    trusted = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(boundary="trust"))
    assert not trusted.boundary_repaired and np.abs(trusted.logits - ref.logits).max() > 1e-3  # what the check prevents


def test_full_tokenization_mode_on_a_clean_prompt(tiny, tiny_tok):
    model, prompt, items = tiny("qwen3"), make_prompt(), make_items(5)
    full = score_items(model, tiny_tok, prompt, items, config=ScoringConfig(boundary="full"))
    split = score_items(model, tiny_tok, prompt, items)
    assert not full.boundary_repaired and not split.boundary_repaired
    assert full.tokens_scored == split.tokens_scored
    assert np.abs(full.logits - split.logits).max() < 1e-5


def test_leading_specials():
    class Tok:
        """A tokenizer that adds a BOS (id 1) by default, like Gemma's."""

        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) + 10 for c in text]
            return {"input_ids": ([1] if add_special_tokens else []) + ids}

    tok = Tok()
    assert leading_special_ids(tok) == [1]
    assert encode_prefix(tok, "ab") == [1, 107, 108]
    assert encode_prefix(tok, "") == [1]


def test_no_leading_specials_for_tiny(tiny_tok):
    assert leading_special_ids(tiny_tok) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=60), st.integers(1, 2000), st.integers(1, 16))
def test_plan_batches_covers_each_item_once_within_budget(lengths, budget, max_rows):
    batches = plan_batches(lengths, budget, max_rows)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_rows
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # similar lengths together, longest first


def test_default_token_budget_is_per_device():
    import torch

    from surefast.scoring.types import CPU_BATCH_TOKENS, DEVICE_BATCH_TOKENS, ScoringConfig

    assert ScoringConfig().tokens_per_batch(torch.device("cpu")) == CPU_BATCH_TOKENS == 512
    assert ScoringConfig().tokens_per_batch(torch.device("meta")) == DEVICE_BATCH_TOKENS  # any accelerator
    assert ScoringConfig(batch_tokens=100).tokens_per_batch(torch.device("cpu")) == 100
