"""Pick SAGE's node budget for a (target, draft) pair on this machine.

A bigger tree accepts more tokens per target forward but makes every forward slower, and how
much slower depends on the hardware (on a GPU, 64 tokens cost about as much as 1; on a CPU the
cost grows almost linearly with the number of tokens). We measure both and take the budget
``B`` that maximises the *expected* decoding speed::

    tokens/s(B) = tau(B) / (draft(B) + verify(n(B) + 1) + overhead(B))

where ``tau(B)`` is the measured tokens per step (1 + mean accepted length) of SAGE with budget
``B`` on calibration prompts, ``n(B)`` its mean tree size, ``draft(B)`` / ``overhead(B)`` its
mean draft and bookkeeping time per step, and ``verify(n)`` the target's forward time for
``n`` tokens after a ``context``-token prefix, measured separately (median of repeats,
interpolated linearly between measured sizes) so that the noisy wall time of the generation
runs does not decide alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from surefast.speculate.engine import SpeculativeDecoder
from surefast.speculate.model import as_causal_lm
from surefast.speculate.planner import forward_times, interp
from surefast.speculate.policies import SageConfig

DEFAULT_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64)
DEFAULT_BUDGETS = (2, 4, 8, 16, 24, 32, 48, 64)


@dataclass
class BudgetReport:
    sizes: list[int]  # tokens per target forward measured
    verify_s: list[float]  # median target forward time at each size
    budgets: list[int]
    tokens_per_step: list[float]  # tau(B)
    mean_tree: list[float]  # n(B)
    draft_s: list[float]  # per step
    overhead_s: list[float]  # per step
    expected_tokens_per_s: list[float]
    best_budget: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def verify_time_curve(
    target: Any, context: int = 128, sizes: Sequence[int] = DEFAULT_SIZES, repeats: int = 3, seed: int = 0
) -> list[float]:
    """Median seconds of one target forward of ``n`` tokens after ``context`` cached tokens, per ``n``.

    The tokens form a chain (a tree's cost depends on its size, not its shape). One warm-up forward first.
    """
    return forward_times(as_causal_lm(target), context, tuple(sizes), repeats, seed)


def tune_budget(
    target: Any,
    draft: Any,
    prompts: Sequence[torch.Tensor],
    *,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    max_new_tokens: int = 32,
    base: SageConfig | None = None,
    context: int | None = None,
    repeats: int = 3,
) -> BudgetReport:
    """Measure the verify-time curve and SAGE's acceptance per budget (greedy); pick the fastest budget."""
    base = base or SageConfig()
    sizes = sorted(sizes)
    if context is None:
        context = int(statistics.median(int(p.numel()) for p in prompts)) + max_new_tokens // 2
    curve = verify_time_curve(target, context, sizes, repeats)
    tau, tree, draft_s, over_s, speed = [], [], [], [], []
    for budget in budgets:
        config = replace(base, budget=budget, max_width=min(base.max_width, budget))
        steps = []
        for ids in prompts:
            out = SpeculativeDecoder(target, draft, config).generate(ids, max_new_tokens, eos_token_id=None)
            steps += out.stats.steps
        n = max(len(steps), 1)
        tau.append(sum(s.emitted for s in steps) / n)
        tree.append(sum(s.tree_size for s in steps) / n)
        draft_s.append(sum(s.draft_s for s in steps) / n)
        over_s.append(sum(s.overhead_s for s in steps) / n)
        speed.append(tau[-1] / (draft_s[-1] + interp(tree[-1] + 1, sizes, curve) + over_s[-1]))
    best = list(budgets)[max(range(len(speed)), key=speed.__getitem__)]
    return BudgetReport(list(sizes), curve, list(budgets), tau, tree, draft_s, over_s, speed, best)
