"""The one decoding harness: a method next to the target alone, for text and visual prompts."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from surefast.errors import SurefastError
from surefast.models.tiny import tiny_tokenizer
from surefast.speculate import SamplingConfig, SpeculativeDecoder
from surefast.speculate.api import HF_METHODS, METHODS, TextStream, hf_generate, speculative_generate, stream_text
from surefast.speculate.compare import Comparison, compare, decode, judge
from surefast.speculate.divergence import top2
from surefast.speculate.engine import SpecOutput
from surefast.speculate.vlm import PruneConfig, vlm_decoder, vlm_speculative_generate, vlm_target_generate

from .vlm_helpers import QUESTION, draft, inputs, media, reference, target

PROMPT = torch.tensor([[5, 6, 7, 8, 9, 10]])
N = 12


@pytest.fixture(scope="module")
def pair(perturbed):
    from surefast.models.tiny import tiny_model

    model = tiny_model("qwen2", 0)
    return model, perturbed(model, 0.05, 1)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_compared_with_the_target_alone(pair, method):
    t, d = pair
    chunks: list[list[int]] = []
    result = compare(t, d, PROMPT, method, max_new_tokens=N, eos_token_id=None, warm_up=False, on_tokens=chunks.append)
    ar = speculative_generate(t, None, PROMPT, method="ar", max_new_tokens=N, eos_token_id=None)
    assert result.output.tokens == ar.tokens and result.output.stats.method == method
    assert [tok for chunk in chunks for tok in chunk] == result.output.tokens
    if method == "ar":  # the target alone is not run a second time
        assert result.baseline is None and result.identical is None
    else:
        assert result.baseline is not None and result.baseline.tokens == ar.tokens
        assert result.baseline.stats.method == "ar" and result.identical is True and result.divergence is None
    if method in HF_METHODS:  # transformers returns all tokens at the end
        assert len(chunks) == 1
    else:  # the engine streams: the prefill's token first, then one chunk per step
        assert len(chunks[0]) == 1 and len(chunks) == 1 + len(result.output.stats.steps)


def test_stages_are_reported_in_order(pair):
    t, d = pair
    seen: list[str] = []

    @contextmanager
    def stage(name):
        seen.append(name)
        yield
        seen.append(f"/{name}")

    compare(t, d, PROMPT, "chain", max_new_tokens=4, phase=stage)
    assert seen == ["warm-up", "/warm-up", "run", "/run", "baseline", "/baseline"]
    seen.clear()
    compare(t, d, PROMPT, "target", max_new_tokens=4, phase=stage)  # an alias of ar: no baseline
    assert seen == ["warm-up", "/warm-up", "run", "/run"]
    seen.clear()
    compare(t, d, PROMPT, "sage", max_new_tokens=4, warm_up=False, baseline=False, phase=stage)
    assert seen == ["run", "/run"]


@pytest.mark.parametrize("method", ["sage", "hf-assisted"])
def test_sampled_runs_draw_from_the_seed_alone(pair, method):
    """The warm-up has its own generator: the timed runs draw what a run with only the seed would."""
    t, d = pair
    sampling = SamplingConfig(temperature=1.0)
    result = compare(t, d, PROMPT, method, sampling=sampling, max_new_tokens=N, eos_token_id=None, seed=3)
    alone = decode(
        t,
        d,
        PROMPT,
        method,
        sampling=sampling,
        max_new_tokens=N,
        eos_token_id=None,
        generator=torch.Generator().manual_seed(3),
    )
    ar = decode(
        t,
        None,
        PROMPT,
        "ar",
        sampling=sampling,
        max_new_tokens=N,
        eos_token_id=None,
        generator=torch.Generator().manual_seed(3),
    )
    assert result.output.tokens == alone.tokens and result.baseline.tokens == ar.tokens
    assert result.identical is None and result.divergence is None  # sampled outputs agree in law only


def test_a_divergence_is_located_and_measured(pair):
    t, _ = pair
    ref = speculative_generate(t, None, PROMPT, method="ar", max_new_tokens=N, eos_token_id=None)
    wrong = [*ref.tokens[:5], (ref.tokens[5] + 1) % t.config.vocab_size, *ref.tokens[6:]]
    result = judge(t, PROMPT, SpecOutput(wrong), ref)
    assert result.identical is False and result.divergence.position == 5
    best, second = top2(t, PROMPT, ref.tokens, 5)
    assert result.divergence.top2_margin == pytest.approx(best - second)
    assert not result.divergence.is_tie  # fp32: a real gap, far above two rounding steps
    longer = judge(t, PROMPT, SpecOutput([*ref.tokens, 1]), ref)  # the target stopped where the output went on
    assert longer.divergence.position == N and longer.divergence.top2_margin == float("inf")
    assert judge(t, PROMPT, ref, None) == Comparison(ref)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava_onevision"])
def test_a_visual_prompt_goes_through_the_same_harness(arch):
    inp = inputs(arch, "image")
    result = compare(
        target(arch),
        draft(arch),
        inp,
        "sage",
        prune=PruneConfig(0.5),
        max_new_tokens=N,
        eos_token_id=None,
        warm_up=False,
    )
    assert tuple(result.output.tokens) == reference(arch, "image", N) and result.identical is True
    assert result.output.prune.n_dropped == round(0.5 * inp.n_visual) and result.output.n_visual == inp.n_visual
    base = result.baseline.stats  # the VLM's own generate, counted and clocked like the text baselines
    assert base.method == "ar" and base.target_forwards == N and base.first_tokens == 1
    assert base.total_s >= base.prefill_s > 0
    wrong = SpecOutput([*result.output.tokens[:-1], result.output.tokens[-1] + 1])
    assert judge(target(arch), inp, wrong, result.baseline) == Comparison(wrong, result.baseline, False)


def test_visual_runs_take_method_names_like_text_runs():
    """One method check for both: aliases and any case work, transformers' own methods are refused clearly."""
    inp = inputs("qwen2_5_vl", "image")
    t, d = target("qwen2_5_vl"), draft("qwen2_5_vl")
    assert vlm_decoder(t, d, inp, method="Eagle2").method == "dynamic"
    with pytest.raises(SurefastError, match="'ar' is not a policy of the speculative engine"):
        vlm_decoder(t, d, inp, method="ar")
    with pytest.raises(SurefastError, match="hf-assisted does not take images"):
        vlm_speculative_generate(t, d, tiny_tokenizer(), QUESTION, method="assisted", **media("image"))
    out = vlm_speculative_generate(
        t, d, tiny_tokenizer(), QUESTION, method="AR", max_new_tokens=4, eos_token_id=None, **media("image")
    )
    assert tuple(out.tokens) == reference("qwen2_5_vl", "image", 4)


def test_the_vlm_target_run_is_the_text_baselines_harness():
    """``vlm_target_generate`` is ``hf_generate`` with the vision tensors: same sampling seed, same output."""
    arch = "llava_onevision"
    inp = inputs(arch, "video")
    sampling = SamplingConfig(temperature=1.0, top_k=20)
    kwargs = {"sampling": sampling, "max_new_tokens": 8, "eos_token_id": None}
    vlm = vlm_target_generate(target(arch), inp, generator=torch.Generator().manual_seed(5), **kwargs)
    hf = hf_generate(
        target(arch), None, inp.input_ids, vision=inp.vision, generator=torch.Generator().manual_seed(5), **kwargs
    )
    assert vlm.tokens == hf.tokens and len(vlm.tokens) == 8 and vlm.n_visual == inp.n_visual
    assert vlm.stats.target_forwards == hf.stats.target_forwards == 8


def test_text_stream_pushes_the_same_deltas_as_stream_text(tiny_tok, pair):
    t, d = pair
    prompt = torch.tensor([tiny_tok("hello wörld")["input_ids"]])
    chunks = list(SpeculativeDecoder(t, d, "sage").stream(prompt, 30, eos_token_id=None))
    text = TextStream(tiny_tok)
    pushed = [text.push(chunk) for chunk in chunks]
    assert [p for p in pushed if p] == list(stream_text(tiny_tok, chunks))
    assert "".join(pushed) == tiny_tok.decode(text.tokens, skip_special_tokens=True).rstrip("\ufffd")


def test_generate_hands_each_chunk_to_on_tokens(pair):
    t, d = pair
    seen: list[list[int]] = []
    out = SpeculativeDecoder(t, d, "dynamic").generate(PROMPT, 20, eos_token_id=None, on_tokens=seen.append)
    assert seen == list(SpeculativeDecoder(t, d, "dynamic").stream(PROMPT, 20, eos_token_id=None))
    assert [tok for chunk in seen for tok in chunk] == out.tokens
