"""The planner: cost-model arithmetic, depth growth, and falling back to the target alone when drafts get slow."""

from __future__ import annotations

import itertools
import time

import pytest

from surefast.speculate import SpeculativeDecoder
from surefast.speculate.planner import Costs, PlanConfig, Planner, expected_tokens
from surefast.speculate.policies import DepthHistory, SageConfig
from surefast.speculate.stats import StepRecord, TreeShape

from .toy import markov_lm


class SlowLM:
    """A model whose forwards take ``delay`` seconds longer (a busy core, a heavy draft)."""

    def __init__(self, lm, delay: float) -> None:
        self.lm, self.delay = lm, delay
        self.vocab_size, self.device = lm.vocab_size, lm.device

    def new_cache(self):
        return self.lm.new_cache()

    def forward(self, ids, positions, cache, mask):
        time.sleep(self.delay)
        return self.lm.forward(ids, positions, cache, mask)

    def prefill(self, ids, cache):
        return self.lm.prefill(ids, cache)


def test_costs_interpolate_and_extrapolate():
    c = Costs([1, 2, 4], [1.0, 2.0, 2.0], 0.5, 16)
    assert [c.verify(n) for n in (0, 1, 1.5, 3, 4, 8)] == [1.0, 1.0, 1.5, 2.0, 2.0, 2.0]
    c = Costs([1, 4], [1.0, 4.0], 0.5, 16)
    assert c.verify(8) == pytest.approx(8.0)


def test_expected_tokens_is_the_geometric_sum():
    assert expected_tokens(0.5, 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert expected_tokens(0.9, 0) == 1.0


def step(accepted: int, depth: int, tree: int, draft_s: float, target_s: float) -> StepRecord:
    return StepRecord(
        accepted,
        accepted + 1,
        tree,
        depth,
        1,
        TreeShape(depth, 1, tree),
        0.5,
        0.5,
        draft_s,
        target_s,
        0.0,
        draft_s,
        target_s,
        draft_levels=depth if draft_s else 0,
    )


def test_best_depth_follows_the_costs():
    shape = TreeShape(8, 1, 8)
    cheap = Planner(
        SageConfig().make(),
        PlanConfig(prior_acceptance=0.8, costs=Costs([1, 16], [0.1, 0.12], 0.001, 16)),
        None,
        object(),
    )
    assert cheap.best_depth(shape)[0] == 8  # free drafts, flat verification: as deep as allowed
    dear = Planner(
        SageConfig().make(),
        PlanConfig(prior_acceptance=0.8, costs=Costs([1, 16], [0.1, 0.12], 0.2, 16)),
        None,
        object(),
    )
    assert dear.best_depth(shape)[0] == 0  # a draft forward dearer than a target forward: the target alone
    linear = Planner(
        SageConfig().make(),
        PlanConfig(prior_acceptance=0.8, costs=Costs([1, 16], [0.1, 0.8], 0.01, 16)),
        None,
        object(),
    )
    assert 0 < linear.best_depth(shape)[0] < 8  # verification that grows fast: a short chain


def test_observed_slow_drafts_scale_the_model():
    costs = Costs([1, 16], [0.1, 0.12], 0.005, 16)
    planner = Planner(SageConfig().make(), PlanConfig(prior_acceptance=0.8, costs=costs), None, object())
    assert planner.best_depth(TreeShape(8, 1, 8))[0] > 0
    for _ in range(20):  # the draft takes 40x its measured time now
        planner.observe(step(accepted=4, depth=4, tree=4, draft_s=4 * 0.2, target_s=0.1))
    assert planner.draft_scale > 20
    assert planner.best_depth(TreeShape(8, 1, 8))[0] == 0


def test_depth_history_lifts_after_whole_chains():
    h = DepthHistory(1, 16, history=8, slack=0, growth=2)
    h.observe(step(accepted=1, depth=4, tree=4, draft_s=0, target_s=0))
    assert h.cap() == 1
    h.observe(step(accepted=4, depth=4, tree=4, draft_s=0, target_s=0))
    assert h.cap() == 6  # the whole chain was accepted: depth + growth at once
    h.observe(step(accepted=1, depth=6, tree=6, draft_s=0, target_s=0))
    assert h.cap() == 2


def test_a_slow_draft_makes_the_planner_run_the_target_alone():
    """Artificially slow draft forwards: the planned engine stops drafting; the output stays the target's."""
    target = markov_lm(6, seed=0, scale=3.0)
    fast = markov_lm(6, seed=0, scale=3.0, noise=0.3)
    slow = SlowLM(markov_lm(6, seed=0, scale=3.0, noise=0.3), delay=0.02)
    prompt = [1, 2, 3]
    ref = SpeculativeDecoder(target, fast, "sage").generate(prompt, 60, eos_token_id=None)
    unplanned = SpeculativeDecoder(target, slow, "sage").generate(prompt, 60, eos_token_id=None)
    planned = SpeculativeDecoder(target, slow, "sage", plan=PlanConfig()).generate(prompt, 60, eos_token_id=None)
    assert planned.tokens == unplanned.tokens == ref.tokens
    plan = planned.stats.plan
    assert plan["target_alone_steps"] > plan["steps"] // 2
    assert planned.stats.draft_forwards < unplanned.stats.draft_forwards // 4
    heavy = SlowLM(target, delay=0.02)  # now the target is the dear one: drafting pays
    fast_planned = SpeculativeDecoder(heavy, fast, "sage", plan=PlanConfig()).generate(prompt, 60, eos_token_id=None)
    assert fast_planned.stats.plan["target_alone_steps"] < fast_planned.stats.plan["steps"] // 2
    assert fast_planned.tokens == ref.tokens


def test_exactly_linear_verification_never_pays_for_a_chain():
    """v(n) = n v(1) (the AVX2 bf16 case): D + 1 tokens at best for (D + 1) v(1) plus draft time, so the target alone."""
    costs = Costs([1, 16], [0.1, 1.6], 0.001, 16)
    planner = Planner(SageConfig().make(), PlanConfig(prior_acceptance=0.95, costs=costs), None, object())
    assert planner.best_depth(TreeShape(8, 1, 8))[0] == 0


def test_probes_back_off_while_speculation_does_not_pay():
    costs = Costs([1, 16], [0.1, 0.12], 0.2, 16)  # a draft forward twice a target forward: never pays
    planner = Planner(SageConfig().make(), PlanConfig(probe_every=4, max_probe_gap=64, costs=costs), None, object())
    for _ in range(300):
        shape = planner.shape()
        drafted = shape.depth > 0
        planner.observe(step(0, shape.depth, shape.depth, 0.2 * shape.depth if drafted else 0.0, 0.1))
    probes = [i for i, d in enumerate(planner.decisions) if d > 0]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps == sorted(gaps) and gaps[-1] > 32  # 5, 9, 17, 33, 65, ...: ever rarer
    assert len(probes) < 10


def test_a_catch_up_forward_does_not_rescale_the_draft():
    """After steps without the draft, its first forward feeds many tokens: not a level's cost."""
    costs = Costs([1, 16], [0.1, 0.12], 0.005, 16)
    planner = Planner(SageConfig().make(), PlanConfig(costs=costs), None, object())
    record = step(accepted=2, depth=2, tree=2, draft_s=0.5, target_s=0.1)
    planner.observe(StepRecord(**{**record.__dict__, "draft_catch_up": 40}))
    assert planner.draft_scale == 1.0
    planner.observe(record)  # the same time without the catch-up: the draft really is slower
    assert planner.draft_scale > 1.0


def test_free_lookups_are_weighed_without_draft_cost():
    flat = Planner(SageConfig().make(), PlanConfig(costs=Costs([1, 16], [0.1, 0.12], 0.2, 16)), None, object())
    assert flat.free_depth(0.9, 10) == 10  # verification nearly free: the whole lookup
    assert flat.free_depth(0.0, 10) == 0  # never right: not worth a longer forward
    linear = Planner(SageConfig().make(), PlanConfig(costs=Costs([1, 16], [0.1, 1.6], 0.2, 16)), None, object())
    assert linear.free_depth(0.9, 10) == 0  # v(n) = n v(1): even a free guess does not pay


def test_costs_are_measured_once_per_model_pair(tiny, monkeypatch):
    """Each decoder wraps the models anew: the cache must key on the models, not on the wrappers."""
    import surefast.speculate.planner as planner

    calls = []
    real = planner.measure_costs
    monkeypatch.setattr(planner, "measure_costs", lambda *a, **k: calls.append(1) or real(*a, **k))
    target, draft = tiny("qwen2", seed=0), tiny("qwen2", seed=1)
    for _ in range(3):
        SpeculativeDecoder(target, draft, "sage", plan=PlanConfig()).generate([1, 2, 3], 4, eos_token_id=None)
    assert len(calls) == 1
    SpeculativeDecoder(target, tiny("qwen2", seed=2), "sage", plan=PlanConfig()).generate([1, 2], 3, eos_token_id=None)
    assert len(calls) == 2  # another draft: measured again
