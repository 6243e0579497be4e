"""Draft-side visual-token pruning: exactly round(r * n_visual) tokens leave the draft, none the target."""

from __future__ import annotations

import pytest
import torch

from surefast.speculate import POLICY_CONFIGS
from surefast.speculate.vlm import PruneConfig, select_kept, vision_lm, vlm_decoder
from surefast.speculate.vlm.prune import eager_attention, last_token_attention, n_dropped

from .vlm_helpers import MEDIA, VLM_ARCHS, draft, inputs, target


def test_vlm_select_kept_goldens():
    assert select_kept(10, 4, None, 0.5) == ([1, 3, 6, 8], 0)  # uniform: centres of 4 equal segments
    scores = torch.tensor([0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 0.0, 0.0])
    assert select_kept(10, 2, scores, 1.0) == ([1, 7], 2)  # attention only: the top scores
    kept, by_att = select_kept(10, 4, scores, 0.5)  # 2 by attention (1, 7), 2 uniform over the other 8:
    assert by_att == 2 and kept == [1, 3, 7, 8]  # rest [0 2 3 4 5 6 8 9] at int(0.5 * 4) = 2, int(1.5 * 4) = 6
    assert select_kept(5, 5, scores[:5], 0.5) == ([0, 1, 2, 3, 4], 0)
    assert n_dropped(5, 0.5) == 2 and n_dropped(10, 0.85) == 8 and n_dropped(7, 0.0) == 0  # Python round


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_vlm_prune_ratio_range(bad):
    with pytest.raises(ValueError):
        PruneConfig(bad)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("kind", MEDIA)
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_prune_drops_exactly_from_the_draft(arch, kind, ratio, share):
    model, inp = target(arch), inputs(arch, kind)
    full, pruned = vision_lm(model, inp), vision_lm(model, inp, PruneConfig(ratio, share))
    fcache, pcache = full.new_cache(), pruned.new_cache()
    with torch.no_grad():
        f_logits, p_logits = full.prefill(inp.input_ids, fcache), pruned.prefill(inp.input_ids, pcache)
    s, n = inp.input_ids.shape[1], inp.n_visual
    drop = round(ratio * n)
    assert len(fcache) == s and len(pcache) == s - drop
    report = pruned.last_prune
    assert report.n_visual == n and report.n_dropped == drop and len(report.kept_slots) == n - drop
    assert report.by_attention == (round(share * (n - drop)) if drop else 0)
    visual = inp.visual_mask.nonzero().flatten().tolist()
    kept = sorted(set(range(s)) - set(visual) | set(report.kept_slots))
    assert pcache.positions.tolist() == kept  # kept slots keep their original positions, text all kept
    torch.testing.assert_close(p_logits, f_logits)  # the prompt's last logits are the prefill's


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_pruned_draft_sees_only_kept_tokens(arch):
    """A pruned draft's next forward == the unpruned model with the dropped slots masked out."""
    model, inp = target(arch), inputs(arch, "image")
    full, pruned = vision_lm(model, inp), vision_lm(model, inp, PruneConfig(0.5))
    fcache, pcache = full.new_cache(), pruned.new_cache()
    s = inp.input_ids.shape[1]
    with torch.no_grad():
        full.prefill(inp.input_ids, fcache)
        pruned.prefill(inp.input_ids, pcache)
        ids, positions = torch.tensor([[7, 8]]), torch.tensor([[s, s + 1]])
        allowed = torch.zeros(2, s + 2, dtype=torch.bool)
        allowed[:, pcache.positions] = True
        allowed[:, s:] = torch.ones(2, 2, dtype=torch.bool).tril()
        ref = full.forward(ids, positions, fcache, allowed)
        fcache.crop(s)
        unpruned = full.forward(ids, positions, fcache, torch.ones_like(allowed).tril(diagonal=s))
        mask = torch.cat([torch.ones(2, len(pcache), dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool).tril()], 1)
        got = pruned.forward(ids, positions, pcache, mask)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, unpruned, atol=1e-3)  # the dropped tokens did matter


@pytest.mark.parametrize("kind", MEDIA)
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_attention_scores_are_the_prefill_attention(arch, kind):
    """The score pass reproduces the last prompt token's attention row of a full eager forward."""
    model, inp = target(arch), inputs(arch, kind)
    adapter = vision_lm(model, inp)
    cache = adapter.new_cache()
    with torch.no_grad():
        adapter.prefill(inp.input_ids, cache)
        s = len(cache)
        ids = inp.input_ids
        scores = last_token_attention(adapter, cache, int(ids[0, -1]), s - 1)
        assert len(cache) == s
        with eager_attention(model):
            kw = dict(adapter._prefill_kwargs())
            out = model(input_ids=ids, output_attentions=True, **kw)
    ref = torch.stack([a[0, :, -1, :].float() for a in out.attentions]).mean(dim=(0, 1))
    torch.testing.assert_close(scores, ref, rtol=1e-4, atol=1e-5)
    assert abs(float(scores.sum()) - 1.0) < 1e-4


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_pruning_never_touches_the_target(arch):
    inp = inputs(arch, "image")
    policy = list(POLICY_CONFIGS)[-1]
    decoder = vlm_decoder(target(arch), draft(arch), inp, method=policy, prune=PruneConfig(0.9))
    prefills = []
    original = decoder.target.prefill
    decoder.target.prefill = lambda ids, cache: prefills.append(ids) or original(ids, cache)
    out = decoder.generate(inp.input_ids, 12, eos_token_id=None)
    s, drop = inp.input_ids.shape[1], round(0.9 * inp.n_visual)
    assert decoder.target.prune.ratio == 0.0 and decoder.target.last_prune is None
    assert len(prefills) == 1 and torch.equal(prefills[0], inp.input_ids)
    # the target's cache: every prompt slot, then the output except its last token (the next root)
    assert len(decoder.target_cache) == s + len(out.tokens) - 1
    assert decoder.target_cache.positions.tolist() == list(range(len(decoder.target_cache)))
    assert decoder.draft.last_prune.n_dropped == drop
    head = decoder.draft_cache.positions[: s - drop].tolist()
    assert sorted(set(range(s)) - set(head)) == sorted(
        set(inp.visual_mask.nonzero().flatten().tolist()) - set(decoder.draft.last_prune.kept_slots)
    )
