"""Tree verification == sequential decoding of each path (fp32, < 1e-4), on every text architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from surefast.models.tiny import TEXT_ARCHITECTURES
from surefast.speculate.draft import grow_tree
from surefast.speculate.model import HFCausalLM
from surefast.speculate.stats import TreeShape
from surefast.speculate.tree import TokenTree, tree_attention_mask
from surefast.speculate.verify import GREEDY

TOL = 1e-4


def random_tree(gen: torch.Generator, size: int, vocab: int = 250) -> TokenTree:
    tree = TokenTree(int(torch.randint(0, vocab, (1,), generator=gen)))
    for _ in range(size):
        parent = int(torch.randint(0, len(tree), (1,), generator=gen))
        tree.add(int(torch.randint(0, vocab, (1,), generator=gen)), parent, 0.0)
    return tree


@torch.no_grad()
def sequential_logits(model, prompt: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    return model(input_ids=torch.cat([prompt[0], torch.tensor(tokens, dtype=torch.long)])[None]).logits[0, -1]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_tree_logits_equal_sequential_logits(arch, impl, tiny):
    model = tiny(arch, seed=0)
    model.set_attn_implementation(impl)
    lm = HFCausalLM(model)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 250, (1, 13), generator=gen)  # longer than gemma3's sliding window (8)
    tree = random_tree(gen, 12)
    cache = lm.new_cache()
    lm.prefill(prompt, cache)
    past = len(cache)
    positions = torch.tensor([[past + d for d in tree.depths]])
    with torch.no_grad():
        logits = lm.forward(tree.token_tensor(), positions, cache, tree_attention_mask(past, tree))
    for node in range(len(tree)):
        ref = sequential_logits(model, prompt, [tree.tokens[n] for n in tree.path(node)])
        assert (logits[node] - ref).abs().max() < TOL, (arch, node)

    # keeping one path leaves exactly the cache of plain decoding of that path
    path = tree.path(max(range(len(tree)), key=lambda n: tree.depths[n]))
    cache.keep(past, [past + n for n in path])
    ref_cache = DynamicCache()
    with torch.no_grad():
        model(
            input_ids=torch.cat([prompt[0], torch.tensor([tree.tokens[n] for n in path])])[None],
            past_key_values=ref_cache,
            use_cache=True,
        )
    assert len(cache) == ref_cache.get_seq_length()
    for (k, v), layer in zip(cache.layers(), ref_cache.layers, strict=True):
        assert (k - layer.keys).abs().max() < TOL and (v - layer.values).abs().max() < TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_draft_levels_equal_sequential_logits(arch, tiny):
    """Growing a tree level by level (each level attends to cached ancestors) gives each path's logits."""
    model = tiny(arch, seed=0)
    lm = HFCausalLM(model)
    prompt = torch.randint(0, 250, (1, 11), generator=torch.Generator().manual_seed(2))
    cache = lm.new_cache()
    lm.prefill(prompt[:, :-1], cache)
    root = int(prompt[0, -1])
    d = grow_tree(
        lm, cache, [], root, prompt.shape[1] - 1, TreeShape(depth=4, width=3, budget=12), GREEDY, lm.vocab_size
    )
    assert d.forwards == 4 and len(d.tree) - 1 == 12
    for node, q in d.q.items():
        path = d.tree.path(node)[1:]
        ref = torch.softmax(sequential_logits(model, prompt, [d.tree.tokens[n] for n in path]), -1)
        assert (q - ref).abs().max() < TOL, node
