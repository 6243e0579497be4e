"""Speculate only as far as it pays on this machine, and not at all when it does not.

A tree policy decides a shape from the draft's confidence; it knows nothing about what a draft
forward or a k-token target forward costs here. On a CPU with fast bf16 matrix units a 16-token
forward costs about 1.4x a one-token one, on an AVX2-only CPU about 12x, and a machine that gets
busy changes both. The :class:`Planner` wraps any policy and caps its depth at the one with the
best expected speed under a cost model, or makes the step the target alone (depth 0).

Cost model (Leviathan et al. 2023, with measured costs instead of a constant ratio):

- ``v(n)``: seconds of one target forward of ``n`` tokens after 128 cached ones, measured once
  per model pair in a process (:func:`measure_costs`, linear between measured sizes) and scaled
  by ``s_v``, the running ratio of observed to predicted target forward time (which also
  absorbs the context length);
- ``c``: seconds of one draft forward (a tree level), scaled by its own running ratio ``s_d``;
  zero without a draft model (n-gram lookups are free);
- ``o``: the step's other time (masks, tree, caches, Python), a running mean of what was observed;
- ``a``: the per-level acceptance rate, ``accepted / levels tried`` over recent steps (a level is
  tried when every level above it was accepted), smoothed; prior ``prior_acceptance``.

A step of depth ``D`` with ``n(D) = min(budget, D * width)`` nodes is expected to emit
``E(D) = 1 + a + a^2 + ... + a^D`` tokens in ``T(D) = D c s_d + v(n(D) + 1) s_v + o`` seconds;
depth 0 (the target alone) emits 1 token in ``v(1) s_v + o``. The planner takes the depth with
the largest ``E(D) / T(D)`` (at most the policy's), and speculates only when that beats depth 0
by ``margin``. While the target runs alone nothing is learnt about acceptance, so after
``probe_every`` such steps one step runs the policy's shape at depth ``min(depth, probe_depth)``;
a probe that does not bring speculation back doubles the wait before the next (up to
``max_probe_gap``), so a draft that never pays costs ever less.
The policy still sees every step (its history and entropy stay current); the shape only ever
shrinks, so every policy stays lossless. N-gram lookups cost no draft forward: :meth:`Planner.free_depth`
weighs verifying one alone, ``E(L) / (v(L + 1) s_v + o)`` at the lookups' own accuracy, against
the target alone and against the drafted step, and the engine verifies it instead when it wins.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from surefast.speculate.model import CausalLM, causal_mask
from surefast.speculate.stats import StepRecord, TreeShape, require_int, require_real

PROBE_SIZES = (1, 2, 4, 8, 16, 32)
CATCH_UP = 3  # a draft forward feeding more accepted tokens than this is not used to rescale the draft's cost


@dataclass
class Costs:
    """Measured forward times: the target for ``sizes`` tokens, one draft level, after ``context`` cached tokens."""

    sizes: list[int]
    verify_s: list[float]
    draft_s: float  # 0: no draft model
    context: int

    def verify(self, n: float) -> float:
        """``v(n)``: linear between the measured sizes, extrapolated from the last two beyond them."""
        return interp(n, self.sizes, self.verify_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interp(x: float, xs: Sequence[int], ys: Sequence[float]) -> float:
    """``ys`` at ``x``: linear between the measured ``xs``, extrapolated from the last two beyond them."""
    if x <= xs[0]:
        return ys[0]
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1] + (ys[-1] - ys[-2]) * (x - xs[-1]) / (xs[-1] - xs[-2]) if len(xs) > 1 else ys[-1]


def forward_times(
    lm: CausalLM, context: int, sizes: tuple[int, ...] = PROBE_SIZES, repeats: int = 3, seed: int = 0
) -> list[float]:
    """Median seconds of a forward of ``n`` tokens after ``context`` cached ones, per ``n`` (one warm-up first)."""
    gen = torch.Generator().manual_seed(seed)
    high = min(lm.vocab_size, 1000)
    cache = lm.new_cache()
    lm.prefill(torch.randint(0, high, (1, max(1, context)), generator=gen), cache)
    past = len(cache)
    out = []
    for i, n in enumerate([sizes[0], *sizes]):
        times = []
        for _ in range(1 if i == 0 else repeats):
            ids = torch.randint(0, high, (1, n), generator=gen)
            t0 = time.perf_counter()
            lm.forward(ids, torch.arange(past, past + n).unsqueeze(0), cache, causal_mask(past, n))
            times.append(time.perf_counter() - t0)
            cache.crop(past)
        if i > 0:  # the first pass is the warm-up
            out.append(statistics.median(times))
    return out


@torch.inference_mode()
def measure_costs(
    target: CausalLM, draft: CausalLM | None, context: int = 128, sizes: tuple[int, ...] = PROBE_SIZES, repeats: int = 3
) -> Costs:
    """The cost model's inputs on this machine, now: ``v(n)`` for ``sizes`` and one draft forward (4 tokens wide)."""
    verify = forward_times(target, context, sizes, repeats)
    draft_s = forward_times(draft, context, (4,), repeats)[0] if draft is not None else 0.0
    return Costs(list(sizes), verify, draft_s, context)


@dataclass(frozen=True)
class PlanConfig:
    """How the :class:`Planner` weighs speculation against the target alone (module docstring)."""

    margin: float = 0.05  # speculate when expected to beat the target alone by this share
    probe_every: int = 8  # target-alone steps before a probe of speculation
    max_probe_gap: int = 128  # the wait doubles after each probe that did not bring speculation back
    probe_depth: int = 2
    smoothing: float = 0.7  # weight of the past in the running cost ratios and acceptance
    prior_acceptance: float = 0.6
    costs: Costs | None = field(default=None, compare=False)  # None: measured at the generation's start

    def __post_init__(self) -> None:
        own = "plan option"
        require_real(own, "margin", self.margin, 0.0, 10.0, "a share, e.g. 0.05 (default)")
        require_int(own, "probe_every", self.probe_every, 1, "target-alone steps between probes (default 8)")
        require_int(own, "probe_depth", self.probe_depth, 1, "depth of a probe step (default 2)")
        require_int(own, "max_probe_gap", self.max_probe_gap, self.probe_every, "at least probe_every (default 128)")
        require_real(own, "smoothing", self.smoothing, 0.0, 1.0, "weight of the past (default 0.7)", high_open=True)
        require_real(own, "prior_acceptance", self.prior_acceptance, 0.0, 1.0, "default 0.6", high_open=True)


# measured once per (target, draft) model pair in a process; weak references tell a pair from a later one at the same id
_COSTS: dict[tuple[int, int], tuple[Any, Any, Costs]] = {}
COST_CONTEXT = 128  # cached tokens before the measured forwards; other lengths are followed by the running ratios


def _model(lm: Any) -> Any:
    """The object that identifies a model: a TimedLM's adapter's HF model (adapters are made per decoder)."""
    lm = getattr(lm, "lm", lm)
    return getattr(lm, "model", lm)


def costs_for(target: CausalLM, draft: CausalLM | None) -> Costs:
    """:func:`measure_costs` once per model pair in this process, after :data:`COST_CONTEXT` cached tokens.

    A longer or shorter context changes every forward's time by about the same factor, which the
    planner's running ratios of observed to predicted times absorb.
    """
    t, d = _model(target), _model(draft) if draft is not None else None
    key = (id(t), id(d))
    hit = _COSTS.get(key)
    if hit is not None and hit[0]() is t and (hit[1] is None if d is None else hit[1]() is d):
        return hit[2]
    inner = getattr(target, "lm", target)
    costs = measure_costs(inner, getattr(draft, "lm", draft) if draft is not None else None, COST_CONTEXT)
    _COSTS[key] = (weakref.ref(t), weakref.ref(d) if d is not None else None, costs)
    return costs


def expected_tokens(acceptance: float, depth: int) -> float:
    """``1 + a + ... + a^depth``: tokens a step of ``depth`` levels emits at per-level acceptance ``a``."""
    return sum(acceptance**level for level in range(depth + 1))


class Planner:
    """A policy wrapper that caps each step's depth by the cost model (module docstring)."""

    def __init__(self, policy: Any, config: PlanConfig, target: CausalLM, draft: CausalLM | None) -> None:
        self.policy, self.config = policy, config
        self.entropy_topk: int = policy.entropy_topk
        self.costs = config.costs if config.costs is not None else costs_for(target, draft)
        self.has_draft = draft is not None
        self.verify_scale = self.draft_scale = 1.0
        self.other_s = 0.0
        self.acceptance = config.prior_acceptance
        self.alone = 0  # target-alone steps since the last speculative one
        self.gap = config.probe_every  # target-alone steps before the next probe
        self.probed = False  # the last step was a probe
        self.decisions: list[int] = []  # depth chosen per step (0: the target alone)

    def step_time(self, shape: TreeShape, depth: int) -> float:
        c = self.costs
        if depth == 0:
            return c.verify(1) * self.verify_scale + self.other_s
        nodes = min(shape.budget, depth * shape.width)
        draft = depth * c.draft_s * self.draft_scale if self.has_draft else 0.0
        return draft + c.verify(nodes + 1) * self.verify_scale + self.other_s

    def best_depth(self, shape: TreeShape) -> tuple[int, float]:
        """The depth (0..``shape.depth``) with the best expected tokens/s, and its ratio to the target alone's."""
        alone = 1.0 / self.step_time(shape, 0)
        best, rate = 0, alone
        for depth in range(1, shape.depth + 1):
            r = expected_tokens(self.acceptance, depth) / self.step_time(shape, depth)
            if r > rate:
                best, rate = depth, r
        if best and rate < alone * (1.0 + self.config.margin):
            best = 0
        return best, rate / alone

    def free_depth(self, accuracy: float, longest: int, against: TreeShape | None = None) -> int:
        """Tokens of a free (n-gram) proposal worth verifying at per-token ``accuracy``: 0 if none pays.

        As :meth:`best_depth` with no draft forward: ``E(L) / (v(L + 1) s_v + o)``, against the
        target alone and, given ``against`` (the step's drafted shape), against drafting it.
        """
        floor = (1.0 + self.config.margin) / self.step_time(TreeShape(0, 1, 0), 0)
        if against is not None and against.depth > 0:
            drafted = expected_tokens(self.acceptance, against.depth) / self.step_time(against, against.depth)
            floor = max(floor, drafted)
        best, rate = 0, 0.0
        for length in range(1, longest + 1):
            r = expected_tokens(accuracy, length) / (self.costs.verify(length + 1) * self.verify_scale + self.other_s)
            if r > rate:
                best, rate = length, r
        return best if rate >= floor else 0

    def shape(self) -> TreeShape:
        asked = self.policy.shape()
        depth, _ = self.best_depth(asked)
        probe = False
        if depth == 0 and asked.depth > 0:
            if self.probed:  # the last probe did not bring speculation back: wait longer
                self.gap = min(2 * self.gap, self.config.max_probe_gap)
            self.alone += 1
            if self.alone > self.gap:
                depth, probe = min(asked.depth, self.config.probe_depth), True
        elif depth:
            self.gap = self.config.probe_every
        if depth:
            self.alone = 0
        self.probed = probe
        self.decisions.append(depth)
        return replace(asked, depth=depth)

    def observe(self, step: StepRecord) -> None:
        beta = 1.0 - self.config.smoothing
        c = self.costs
        predicted = c.verify(step.tree_size + 1)
        if predicted > 0 and step.target_forward_s > 0:
            self.verify_scale += beta * (step.target_forward_s / predicted - self.verify_scale)
        forwards = step.draft_levels
        # a first forward that catches up on many tokens (after steps without the draft) says little about a level
        if self.has_draft and forwards and step.draft_catch_up <= CATCH_UP and c.draft_s > 0:
            self.draft_scale += beta * (step.draft_forward_s / (forwards * c.draft_s) - self.draft_scale)
        self.other_s += beta * (step.bookkeeping_s - self.other_s)
        if step.tree_size and (forwards or not self.has_draft):  # the draft's acceptance (n-grams keep their own)
            tried = step.accepted + (1 if step.accepted < step.depth else 0)
            if tried:
                self.acceptance += beta * (step.accepted / tried - self.acceptance)
        self.policy.observe(step)

    def summary(self) -> dict[str, Any]:
        """What the planner saw and chose: costs, running ratios, acceptance, and ``target_alone_steps``:
        the steps it gave no draft forward (the target alone, or a free n-gram lookup, :meth:`free_depth`)."""
        n = len(self.decisions)
        return {
            "costs": self.costs.to_dict(),
            "verify_scale": self.verify_scale,
            "draft_scale": self.draft_scale,
            "other_s": self.other_s,
            "acceptance": self.acceptance,
            "target_alone_steps": sum(d == 0 for d in self.decisions),
            "steps": n,
            "mean_depth": sum(self.decisions) / n if n else 0.0,
        }
