"""Greedy speculative decoding of tiny VLMs == the target's own greedy ``generate``, for every policy and pruning ratio."""

from __future__ import annotations

import pytest

from surefast.models.tiny import tiny_tokenizer
from surefast.speculate import POLICY_CONFIGS
from surefast.speculate.vlm import PruneConfig, vlm_decoder, vlm_speculative_generate

from .vlm_helpers import MEDIA, QUESTION, VLM_ARCHS, draft, inputs, media, reference, target

N = 24
RATIOS = (0.0, 0.5, 0.9)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("policy", list(POLICY_CONFIGS))
@pytest.mark.parametrize("kind", MEDIA)
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_greedy_equals_target_generate(arch, kind, policy, ratio):
    inp = inputs(arch, kind)
    decoder = vlm_decoder(target(arch), draft(arch), inp, method=policy, prune=PruneConfig(ratio))
    out = decoder.generate(inp.input_ids, N, eos_token_id=None)
    assert tuple(out.tokens) == reference(arch, kind, N)
    assert out.stats.new_tokens == N
    report = decoder.draft.last_prune
    assert (report.n_dropped if report else 0) == round(ratio * inp.n_visual)


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_unrelated_draft_heavy_pruning_still_exact(arch):
    inp = inputs(arch, "image")
    decoder = vlm_decoder(
        target(arch),
        draft(arch, "unrelated"),
        inp,
        method=list(POLICY_CONFIGS)[-1],
        prune=PruneConfig(0.8, attention_share=1.0),
    )
    out = decoder.generate(inp.input_ids, N, eos_token_id=None)
    assert tuple(out.tokens) == reference(arch, "image", N)


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_speculative_generate_entry_point(arch):
    """The public entry: text + media in, the target's greedy output out; ``method="target"`` is that output."""
    tok = tiny_tokenizer()
    kw = media("image")
    ref = vlm_speculative_generate(
        target(arch), draft(arch), tok, QUESTION, method="target", max_new_tokens=N, eos_token_id=None, **kw
    )
    assert tuple(ref.tokens) == reference(arch, "image", N)
    for policy in POLICY_CONFIGS:
        out = vlm_speculative_generate(
            target(arch),
            draft(arch),
            tok,
            QUESTION,
            method=policy,
            prune_ratio=0.5,
            max_new_tokens=N,
            eos_token_id=None,
            **kw,
        )
        assert out.tokens == ref.tokens
        assert out.n_visual == inputs(arch, "image").n_visual
        assert out.prune is not None and out.prune.n_dropped == round(0.5 * out.n_visual)
        assert out.stats.tokens_per_forward >= 1.0


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_loaded_model_specs_and_image_paths(arch, tmp_path):
    """The CLI's path: model specs via load_model, the processor found from the target, an image file."""
    import torch
    from PIL import Image

    from surefast.models import load_model

    from .vlm_helpers import image

    t = load_model(f"tiny:{arch}@0", dtype=torch.float32, device="cpu")
    d = load_model(f"tiny:{arch}@1", dtype=torch.float32, device="cpu")
    Image.fromarray(image(70, 100)).save(tmp_path / "q.png")
    out = vlm_speculative_generate(
        t, d, None, QUESTION, images=[tmp_path / "q.png"], prune_ratio=0.8, max_new_tokens=N, eos_token_id=None
    )
    assert tuple(out.tokens) == reference(arch, "image", N)


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_sampling_is_seeded_and_runs_every_policy(arch):
    """Under sampling the VLM path runs for every policy; one generator seed, one output."""
    import torch

    from surefast.speculate import SamplingConfig

    inp = inputs(arch, "video")
    for policy in POLICY_CONFIGS:
        outs = []
        for _ in range(2):
            dec = vlm_decoder(
                target(arch),
                draft(arch),
                inp,
                method=policy,
                prune=PruneConfig(0.5),
                sampling=SamplingConfig(temperature=1.0),
                generator=torch.Generator().manual_seed(3),
            )
            outs.append(dec.generate(inp.input_ids, 12, eos_token_id=None).tokens)
        assert outs[0] == outs[1] and len(outs[0]) == 12


def test_vlm_unknown_method_is_a_clear_error():
    from surefast.errors import SurefastError

    name = list(POLICY_CONFIGS)[-1]
    with pytest.raises(SurefastError, match=f"did you mean '{name}'"):
        vlm_decoder(target("qwen2_5_vl"), draft("qwen2_5_vl"), inputs("qwen2_5_vl", "image"), method=name + "x")


@pytest.mark.parametrize("kind", MEDIA)
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_vision_path_runs_once_per_model(arch, kind):
    calls = {"target": 0, "draft": 0}
    handles = []
    for name, model in (("target", target(arch)), ("draft", draft(arch))):
        tower = model.model.visual if arch == "qwen2_5_vl" else model.model.vision_tower

        def hook(*_, name=name):
            calls[name] += 1

        handles.append(tower.register_forward_hook(hook))
    try:
        inp = inputs(arch, kind)
        dec = vlm_decoder(target(arch), draft(arch), inp, method=list(POLICY_CONFIGS)[-1], prune=PruneConfig(0.5))
        out = dec.generate(inp.input_ids, N, eos_token_id=None)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"target": 1, "draft": 1}
    assert out.stats.target_forwards > 1  # many text-only forwards, one vision pass
