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


@pytest.mark.usefixtures("real_home")
def test_smollm2_self_drafts_equal_target_greedy():
    """Default suite: SmolLM2-135M drafting for itself (packed int4 copy, first layers, n-grams), fp32, planner on."""
    from surefast.speculate.drafts import first_layers, packed_copy
    from surefast.speculate.ngram import NgramConfig
    from surefast.speculate.planner import PlanConfig

    target = load_model("smollm2-135m-instruct", dtype="fp32", device="cpu")
    ids = encode_chat(target.tokenizer, "Repeat after me: the quick brown fox jumps over the lazy dog. Again!")
    with torch.inference_mode():
        ref = target.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0
        )[0, ids.shape[1] :].tolist()
    for draft in (packed_copy(target.model, "int4"), first_layers(target.model, 10), None):
        dec = SpeculativeDecoder(target.model, draft, "sage", ngram=NgramConfig(), plan=PlanConfig())
        assert dec.generate(ids, 24).tokens == ref


@pytest.mark.slow
@pytest.mark.usefixtures("real_home")
def test_qwen_pair_every_draft_kind_equals_target_greedy():
    """fp32: the 1.5B with the 0.5B packed to int4 (+ n-grams, planner), its first 8 layers, n-grams alone."""
    from surefast.speculate.drafts import first_layers, packed_copy
    from surefast.speculate.ngram import NgramConfig
    from surefast.speculate.planner import PlanConfig

    target = load_model("qwen2.5-coder-1.5b-instruct", dtype="fp32", device="cpu")
    draft = packed_copy(load_model("qwen2.5-coder-0.5b-instruct", dtype="fp32", device="cpu").model, "int4")
    ids = encode_chat(target.tokenizer, "Write a Python function that returns the square of a number.")
    with torch.inference_mode():
        ref = target.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False, pad_token_id=0
        )[0, ids.shape[1] :].tolist()
    for d, policy in ((draft, "conformal"), (first_layers(target.model, 8), "sage"), (None, "sage")):
        dec = SpeculativeDecoder(target.model, d, policy, ngram=NgramConfig(), plan=PlanConfig())
        assert dec.generate(ids, 32).tokens == ref
