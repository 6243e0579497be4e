"""N-gram proposals: the incremental index equals a naive scan; grafted branches; lossless one-hot verification."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from surefast.speculate import SpeculativeDecoder
from surefast.speculate.ngram import NgramConfig, NgramIndex, occurrence_order
from surefast.speculate.policies import ChainConfig, SageConfig
from surefast.speculate.stats import ConfigError
from surefast.speculate.tree import TokenTree
from surefast.speculate.verify import draw_children, verify_sample

from .test_sampling import P_MIN, SAMPLE, chi_square_p, markov_fit_p
from .toy import markov_lm


def lookup(tokens: list[int], config: NgramConfig) -> list[list[int]]:
    """Naive reference of :meth:`NgramIndex.propose`: scan the whole sequence for each n-gram length."""
    last = len(tokens) - 1
    out: list[list[int]] = []
    for n in range(min(config.max_ngram, last), config.min_ngram - 1, -1):
        suffix = tokens[last - n + 1 :]
        for end in occurrence_order([e for e in range(n - 1, last) if tokens[e - n + 1 : e + 1] == suffix]):
            cont = tokens[end + 1 : end + 1 + config.length]
            if cont and cont not in out:
                out.append(cont)
                if len(out) >= config.branches:
                    return out
    return out


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 4), min_size=0, max_size=60),
    max_ngram=st.integers(1, 4),
    length=st.integers(1, 6),
    branches=st.integers(1, 3),
    split=st.integers(0, 60),
)
def test_index_equals_naive_scan(tokens, max_ngram, length, branches, split):
    config = NgramConfig(max_ngram=max_ngram, length=length, branches=branches)
    index = NgramIndex(config, tokens[:split])
    index.extend(tokens[split:])  # built in two pieces: the same as at once
    assert index.propose() == lookup(tokens, config)


def test_longest_match_and_most_recent_first():
    seq = [1, 2, 3, 9, 9, 2, 3, 7, 7, 5, 2, 3]  # suffix (2, 3): earlier at 1-2 (then 9) and 5-6 (then 7)
    config = NgramConfig(max_ngram=3, length=2, branches=2)
    assert lookup(seq, config) == [[7, 7], [9, 9]]
    seq = [*seq[:-3], 1, 2, 3]  # (1, 2, 3) occurred once: the 3-gram wins
    assert lookup(seq, NgramConfig(max_ngram=3, length=2, branches=1)) == [[9, 9]]
    assert lookup([4, 5, 6], NgramConfig()) == []


def test_config_is_checked():
    with pytest.raises(ConfigError, match="max_ngram"):
        NgramConfig(max_ngram=1, min_ngram=2)
    with pytest.raises(ConfigError, match="length"):
        NgramConfig(length=0)


def test_graft_walks_existing_children_and_respects_limits():
    tree = TokenTree(0)
    a = tree.add(5, 0, -0.1)
    tree.add(6, a, -0.2)
    new = tree.graft([5, 7, 8, 9], limit=2, max_depth=5)
    assert [tree.tokens[n] for n in new] == [7, 8]  # 5 existed; then two new nodes, the limit
    assert tree.parents[new[0]] == a and tree.parents[new[1]] == new[0]
    assert tree.graft([5, 7, 8, 9], limit=5, max_depth=3) == []  # 9 would sit at depth 4
    assert [tree.tokens[n] for n in tree.graft([5, 7, 8, 9], limit=5, max_depth=4)] == [9]
    assert tree.graft([5, 7, 8, 9, 1], limit=0, max_depth=9) == []


@pytest.mark.parametrize("fixed_first", [False, True])
def test_one_hot_children_beside_drawn_ones_follow_target(fixed_first):
    """A node with two drawn children and one deterministic child (either order): the emitted token follows p."""
    vocab, draws = 5, 8000
    gen = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(vocab, generator=gen), -1)
    q = torch.softmax(torch.randn(vocab, generator=gen), -1)
    counts: Counter = Counter()
    for i in range(draws):
        tree = TokenTree(0)
        guess = i % vocab  # any deterministic rule that does not look at the draws below
        fixed = set()
        if fixed_first:
            fixed.add(tree.add(guess, 0, 0.0))
        for tok in draw_children(q[None], [2], SAMPLE, gen)[0]:
            tree.add(tok, 0, 0.0)
        if not fixed_first and guess not in [tree.tokens[c] for c in tree.children[0]]:
            fixed.add(tree.add(guess, 0, 0.0))  # added only when no drawn sibling holds it: still lossless
        p_all = p[None].expand(len(tree), vocab)
        accepted, bonus = verify_sample(tree, p_all, {0: q}, gen, fixed)
        counts[tree.tokens[accepted[0]] if accepted else bonus] += 1
    assert chi_square_p([(counts, p.numpy().astype(float))]) > P_MIN


@pytest.mark.parametrize("with_draft", [False, True])
def test_sampling_with_ngram_branches_follows_markov_target(with_draft):
    """Every emitted token follows p(next | last two) with n-gram branches, with and without a draft model."""
    vocab = 4
    target = markov_lm(vocab, seed=2, scale=2.5)  # peaked: the text repeats, so lookups hit
    draft = markov_lm(vocab, seed=2, scale=2.5, noise=1.0) if with_draft else None
    policy = SageConfig(budget=8, max_width=2, max_depth=5) if with_draft else ChainConfig(depth=4)
    dec = SpeculativeDecoder(
        target, draft, policy, SAMPLE, torch.Generator().manual_seed(11), ngram=NgramConfig(length=4)
    )
    prompt = [1, 2]
    out = dec.generate(prompt, 2000, eos_token_id=None)
    assert out.stats.summary()["ngram_accepted"] > 100  # the n-gram branches really were used
    assert markov_fit_p(target, prompt + out.tokens, SAMPLE) > P_MIN


def test_ngram_only_greedy_is_the_targets_output():
    target = markov_lm(5, seed=3, scale=3.0)
    prompt = [1, 2, 3, 1, 2]
    seq = list(prompt)
    for _ in range(80):  # the target's own greedy decoding
        seq.append(int(target.logits(tuple(seq[-2:])).argmax()))
    ref = seq[len(prompt) :]
    out = SpeculativeDecoder(target, None, "sage", ngram=NgramConfig()).generate(prompt, 80, eos_token_id=None)
    assert out.tokens == ref
    assert out.stats.draft_forwards == 0 and out.stats.tokens_per_forward > 1.0
    assert np.isfinite(out.stats.time_split()["other_share"])
