"""Conformal draft trees: set sizes against a naive count, budgeted allocation, online calibration, losslessness."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from surefast.speculate import SamplingConfig, SpeculativeDecoder
from surefast.speculate.conformal import inside_sets, set_sizes, update_threshold
from surefast.speculate.draft import allocate
from surefast.speculate.policies import ConformalTreeConfig
from surefast.speculate.stats import ConfigError

from .test_sampling import P_MIN, SAMPLE, markov_fit_p
from .toy import markov_lm


def naive_set_size(q: list[float], mass: float, cap: int) -> int:
    """Top tokens in order until their summed probability reaches ``mass`` (at least 1, at most ``cap``)."""
    total, size = 0.0, 0
    for p in sorted(q, reverse=True):
        if size >= cap or p == 0 or (size > 0 and total >= mass):
            break
        total += p
        size += 1
    return max(size, 1)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mass=st.floats(0.0, 1.0),
    cap=st.integers(1, 8),
    zeros=st.integers(0, 5),
)
def test_set_sizes_equal_a_naive_count(seed, mass, cap, zeros):
    gen = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(3, 8, generator=gen, dtype=torch.float64) * 2, -1)
    q[:, :zeros] = 0.0  # tokens outside the support never join a set
    q = q / q.sum(-1, keepdim=True)
    got = set_sizes(q.topk(cap, dim=-1).values, mass).tolist()
    assert got == [naive_set_size(row.tolist(), mass, cap) for row in q]


def test_allocation_stays_inside_the_sets_and_the_budget():
    gen = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(4, 10, generator=gen) * 2, -1)
    scores = torch.tensor([-0.1, -0.5, -1.0, -3.0])
    sizes = torch.tensor([1, 3, 2, 4])
    for n in range(0, 12):
        counts = allocate(scores, inside_sets(torch.log(q.topk(4, dim=-1).values), sizes), n, spine=3)
        assert sum(counts) == min(n, int(sizes.sum()))
        assert all(c <= s for c, s in zip(counts, sizes.tolist(), strict=True))
        if n:
            assert counts[3] >= 1  # the spine keeps a child even with the worst score


def test_threshold_moves_toward_alpha():
    assert update_threshold(0.5, (False,), alpha=0.2, gamma=0.1) == pytest.approx(0.58)  # a miss widens
    assert update_threshold(0.5, (True,), alpha=0.2, gamma=0.1) == pytest.approx(0.48)  # a hit narrows
    assert update_threshold(0.99, (False,) * 5, alpha=0.2, gamma=0.1) == 1.0  # clipped


def test_config_is_checked():
    with pytest.raises(ConfigError, match="alpha"):
        ConformalTreeConfig(alpha=0.0)
    with pytest.raises(ConfigError, match="gamma"):
        ConformalTreeConfig(gamma=0.0)


@pytest.mark.parametrize("sampling", [SamplingConfig(), SAMPLE])
@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_realized_miss_rate_is_near_alpha(alpha, sampling):
    """Adaptive conformal calibration: over a long generation the draft's sets miss about alpha of the time."""
    vocab = 8
    target, draft = markov_lm(vocab, seed=0), markov_lm(vocab, seed=0, noise=1.2)
    policy = ConformalTreeConfig(alpha=alpha, budget=12, max_width=vocab, gamma=0.05)
    dec = SpeculativeDecoder(target, draft, policy, sampling, torch.Generator().manual_seed(5))
    out = dec.generate([1, 2], 1500, eos_token_id=None)
    levels = out.stats.coverage_by_level()
    hits = sum(h for h, _ in levels.values())
    checked = sum(n for _, n in levels.values())
    assert checked > 1000
    assert abs((1 - hits / checked) - alpha) < 0.03
    widths = [s.width for s in out.stats.steps]
    assert min(widths) < max(widths)  # confident positions narrower than uncertain ones


def test_conformal_sampling_follows_markov_target():
    vocab = 5
    target, draft = markov_lm(vocab, seed=1), markov_lm(vocab, seed=1, noise=1.0)
    dec = SpeculativeDecoder(
        target, draft, ConformalTreeConfig(budget=8, max_width=3, max_depth=4), SAMPLE, torch.Generator().manual_seed(9)
    )
    prompt = [1, 2]
    out = dec.generate(prompt, 1500, eos_token_id=None)
    assert out.stats.mean_accepted > 0.2
    assert markov_fit_p(target, prompt + out.tokens, SAMPLE) > P_MIN
