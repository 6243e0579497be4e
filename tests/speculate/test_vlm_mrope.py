"""Qwen2.5-VL M-RoPE: our prompt positions == transformers' ``get_rope_index``; tree nodes get the
positions (and logits) the model computes for the same path run one token at a time."""

from __future__ import annotations

import pytest
import torch

from surefast.models.tiny import tiny_tokenizer
from surefast.speculate.tree import TokenTree, tree_attention_mask
from surefast.speculate.vlm import MRopeConfig, mrope_positions, prepare_inputs, vision_lm

from .vlm_helpers import QUESTION, VLM_ARCHS, image, inputs, target, video

CASES = {
    "image": {"images": [image(70, 100)]},
    "video": {"video": video()},
    "image+video": {"images": [image(56, 84)], "video": video(frames=6)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_vlm_mrope_prompt_positions_match_transformers(case):
    model = target("qwen2_5_vl")
    inp = prepare_inputs(tiny_tokenizer(), model, QUESTION, **CASES[case])
    v = inp.vision
    ours, delta = mrope_positions(
        inp.input_ids,
        MRopeConfig.from_model(model),
        v.get("image_grid_thw"),
        v.get("video_grid_thw"),
        v.get("second_per_grid_ts"),
    )
    theirs, their_delta = model.model.get_rope_index(
        inp.input_ids,
        v["mm_token_type_ids"],
        image_grid_thw=v.get("image_grid_thw"),
        video_grid_thw=v.get("video_grid_thw"),
        second_per_grid_ts=v.get("second_per_grid_ts"),
    )
    assert torch.equal(ours, theirs[:, 0])
    assert delta == int(their_delta) and delta < 0  # visual tokens use fewer indices than slots


def _tree(root: int) -> TokenTree:
    """Root -> (a, b); a -> (c, d); c -> e; b -> f: two levels of branching, depth 3."""
    tree = TokenTree(root, capacity=8)
    a, b = tree.add(11, 0, 0.0), tree.add(12, 0, 0.0)
    c, _ = tree.add(13, a, 0.0), tree.add(14, a, 0.0)
    tree.add(15, c, 0.0)
    tree.add(16, b, 0.0)
    return tree


class _RotaryProbe:
    """Records the position ids that reach the text model's rotary embedding."""

    def __init__(self, model):
        self.seen: list[torch.Tensor] = []
        self.handle = model.model.language_model.rotary_emb.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.seen.append(args[1].detach().clone())

    def close(self):
        self.handle.remove()


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_tree_nodes_match_sequential_path(arch, kind):
    model = target(arch)
    inp = inputs(arch, kind)
    adapter = vision_lm(model, inp)
    cache = adapter.new_cache()
    with torch.no_grad():
        root = int(adapter.prefill(inp.input_ids, cache).argmax())
        tree = _tree(root)
        root_pos = len(cache)
        probe = _RotaryProbe(model)
        positions = torch.tensor([[root_pos + d for d in tree.depths]])
        logits = adapter.forward(tree.token_tensor(), positions, cache, tree_attention_mask(root_pos, tree))
        probe.close()
        tree_pos = probe.seen[-1]  # Qwen2.5-VL: [3, 1, N]; LLaVA: [1, N]
        leaves = [n for n in range(len(tree)) if not tree.children[n]]
        for leaf in leaves:
            path = tree.path(leaf)
            # The model alone: prefill computing its own positions, then one token at a time.
            out = model(**inp.generate_kwargs(), use_cache=True)
            past = out.past_key_values
            probe = _RotaryProbe(model)
            for node in path:
                step = model(input_ids=torch.tensor([[tree.tokens[node]]]), past_key_values=past, use_cache=True)
                past = step.past_key_values
                torch.testing.assert_close(logits[node], step.logits[0, -1], rtol=1e-4, atol=1e-4)
            probe.close()
            for node, seen in zip(path, probe.seen, strict=True):
                if arch == "qwen2_5_vl":
                    assert torch.equal(tree_pos[:, :, node], seen[:, :, 0])
                else:
                    assert int(tree_pos[0, node]) == int(seen.reshape(-1)[0])
