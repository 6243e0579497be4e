"""Policies: the entropy measure and the SAGE shape formulas (hand-computed goldens)."""

from __future__ import annotations

import math

import pytest
import torch

from surefast.errors import SurefastError
from surefast.speculate.draft import allocate
from surefast.speculate.policies import (
    DEFAULT_STATIC_TREE,
    ChainConfig,
    ChainPolicy,
    DynamicTreeConfig,
    DynamicTreePolicy,
    SageConfig,
    SagePolicy,
    StaticTreeConfig,
    StaticTreePolicy,
    fixed_fanout,
    make_policy,
    normalized_topk_entropy,
    policy_config,
)
from surefast.speculate.stats import StepRecord, TreeShape


def record(accepted: int, entropy: float, depth: int = 4) -> StepRecord:
    return StepRecord(
        accepted=accepted,
        emitted=accepted + 1,
        tree_size=depth,
        depth=depth,
        width=1,
        shape=TreeShape(depth, 1, 8),
        entropy=entropy,
        root_entropy=entropy,
        draft_s=0.0,
        verify_s=0.0,
        overhead_s=0.0,
    )


def test_normalized_topk_entropy_goldens():
    uniform = torch.zeros(1, 50)
    assert torch.allclose(normalized_topk_entropy(uniform, 10), torch.tensor([1.0]))
    peaked = torch.full((1, 50), -1e4)
    peaked[0, 3] = 0.0
    assert normalized_topk_entropy(peaked, 10).item() == pytest.approx(0.0, abs=1e-6)
    # top-2 of (0.6, 0.2, 0.2): renormalized (0.75, 0.25): H = -(.75 ln .75 + .25 ln .25) / ln 2
    two = torch.log(torch.tensor([[0.6, 0.2, 0.2]]))
    golden = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert normalized_topk_entropy(two, 2).item() == pytest.approx(golden, abs=1e-6)
    assert normalized_topk_entropy(torch.randn(4, 7, 30), 10).shape == (4, 7)


def test_sage_shape_extremes():
    c = SageConfig(budget=32, min_depth=1, max_depth=8, min_width=1, max_width=6, initial_entropy=0.0)
    assert SagePolicy(c).shape() == TreeShape(depth=8, width=1, budget=32)  # confident: deep and narrow
    wide = SagePolicy(SageConfig(budget=32, max_width=6, initial_entropy=1.0)).shape()
    assert wide == TreeShape(depth=1, width=6, budget=32)  # uncertain: shallow and wide
    mid = SagePolicy(SageConfig(budget=32, max_width=6, max_depth=8, initial_entropy=0.5)).shape()
    assert mid == TreeShape(depth=round(1 + 0.5 * 7), width=round(1 + 0.5 * 5), budget=32)


def test_sage_budget_caps_depth_times_width():
    shape = SagePolicy(SageConfig(budget=6, max_width=6, max_depth=8, initial_entropy=0.4)).shape()
    # W = round(1 + .4 * 5) = 3, D_entropy = round(1 + .6 * 7) = 5, budget: 6 // 3 = 2
    assert shape == TreeShape(depth=2, width=3, budget=6)


def test_sage_entropy_smoothing_and_history():
    policy = SagePolicy(SageConfig(smoothing=0.5, initial_entropy=0.5, history=2, depth_slack=1, max_depth=8))
    policy.observe(record(accepted=0, entropy=0.1))
    assert policy.smoothed == pytest.approx(0.3)
    assert policy.depth_cap() == 1  # ceil(0) + 1
    policy.observe(record(accepted=3, entropy=math.nan))  # nan: no draft ran; the EMA keeps its value
    assert policy.smoothed == pytest.approx(0.3)
    assert policy.depth_cap() == 3  # ceil(1.5) + 1
    policy.observe(record(accepted=7, entropy=0.0))
    assert policy.depth_cap() == 6  # history 2: mean(3, 7) = 5, + 1
    assert policy.shape().depth <= 6


def test_chain_dynamic_and_static_policies():
    assert ChainPolicy(ChainConfig(depth=5)).shape() == TreeShape(5, 1, 5)
    assert DynamicTreePolicy(DynamicTreeConfig(depth=3, width=4, budget=10)).shape() == TreeShape(3, 4, 10)
    shape = StaticTreePolicy(StaticTreeConfig()).shape()
    assert (shape.depth, shape.width, shape.budget) == (5, 7, 25)  # the 25-node, depth-5 default
    assert shape.fanout is not None and sum(shape.fanout.values()) == 25 and shape.fanout[()] == 4


def test_fixed_fanout_goldens_and_errors():
    assert fixed_fanout(((0,), (1,), (0, 0))) == {(): 2, (0,): 1}
    assert len(DEFAULT_STATIC_TREE) == 25 and max(map(len, DEFAULT_STATIC_TREE)) == 5
    with pytest.raises(ValueError, match="no parent"):
        fixed_fanout(((0,), (1, 0)))
    with pytest.raises(ValueError, match="skips one"):
        fixed_fanout(((0,), (2,)))
    with pytest.raises(ValueError, match="twice"):
        fixed_fanout(((0,), (0,)))
    with pytest.raises(ValueError):
        StaticTreeConfig(paths=((0,), (0, 1)))


def test_fixed_tree_is_grown_exactly():
    """With target == draft (greedy), the drafted tree has exactly the configured rank paths."""
    from surefast.models.tiny import tiny_model
    from surefast.speculate import SpeculativeDecoder

    model = tiny_model("llama", 0)
    paths = ((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0))
    dec = SpeculativeDecoder(model, model, StaticTreeConfig(paths=paths))
    dec.generate(torch.tensor([[3, 4, 5]]), 12, eos_token_id=None)
    full = [s for s in dec.stats.steps if s.shape.depth == 3]
    assert full and all(s.tree_size == 7 and s.depth == 3 and s.width == 3 for s in full)
    assert all(s.accepted == 3 for s in full)  # the draft's first-choice spine is always accepted


def test_policy_registry_and_errors():
    assert policy_config("sage", budget=12) == SageConfig(budget=12)
    assert isinstance(make_policy("chain"), ChainPolicy)
    assert isinstance(make_policy(StaticTreeConfig()), StaticTreePolicy)
    assert isinstance(make_policy("dynamic"), DynamicTreePolicy)
    assert policy_config("static_tree") == StaticTreeConfig()
    with pytest.raises(SurefastError, match="did you mean 'sage'"):
        policy_config("sag")
    with pytest.raises(SurefastError, match="did you mean 'budget'"):
        policy_config("sage", budgett=3)
    with pytest.raises(ValueError):
        SageConfig(min_depth=3, max_depth=2)


def test_allocate_takes_best_pairs_and_keeps_the_spine():
    q = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0], [0.97, 0.01, 0.01, 0.01]])
    scores = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    # path probs: row0 .35 .10 .05 ; row1 .15 .15 ; row2 .194 .002 ...
    logp = torch.log(q.sort(dim=-1, descending=True).values)  # what the draft's ranking hands over
    assert allocate(scores, logp, 3) == [1, 1, 1]
    assert allocate(scores, logp, 4) == [1, 2, 1]
    assert allocate(scores, logp, 2, spine=1) == [1, 1, 0]  # row 1 would get nothing without the spine rule
    assert allocate(scores, logp, 10) == [3, 2, 4]  # never beyond the support
