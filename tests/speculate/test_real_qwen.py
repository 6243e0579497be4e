"""Real models (slow): the Qwen2.5-Coder pair, 0.5B drafting for 1.5B, fp32 greedy == the target alone."""

from __future__ import annotations

import pytest
import torch

from surefast.models import load_model
from surefast.models.chat import encode_chat
from surefast.speculate import SpeculativeDecoder


@pytest.mark.slow
@pytest.mark.usefixtures("real_home")
def test_qwen_pair_sage_equals_target_greedy():
    target = load_model("qwen2.5-coder-1.5b-instruct", dtype="fp32", device="cpu")
    draft = load_model("qwen2.5-coder-0.5b-instruct", dtype="fp32", device="cpu")
    ids = encode_chat(target.tokenizer, "Write a Python function that returns the square of a number.")
    with torch.inference_mode():
        ref = target.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=32,
            do_sample=False,
            pad_token_id=target.tokenizer.pad_token_id,
        )
    out = SpeculativeDecoder(target.model, draft.model, "sage").generate(ids, 32)
    assert out.tokens == ref[0, ids.shape[1] :].tolist()
    assert out.stats.tokens_per_forward > 1.5  # the pair agrees on most of a short code answer
