"""Budget tuning: the verify-time curve and the expected-speed model (no timing asserted, only consistency)."""

from __future__ import annotations

import torch

from surefast.speculate.tune import interp, tune_budget, verify_time_curve


def testinterp():
    xs, ys = [1, 4, 8], [1.0, 4.0, 6.0]
    assert interp(0, xs, ys) == 1.0
    assert interp(2.5, xs, ys) == 2.5
    assert interp(6, xs, ys) == 5.0
    assert interp(10, xs, ys) == 7.0  # extrapolates the last slope


def test_verify_time_curve_leaves_the_cache_alone(tiny):
    curve = verify_time_curve(tiny("llama", 0), context=16, sizes=(1, 4), repeats=2)
    assert len(curve) == 2 and all(t > 0 for t in curve)


def test_tune_budget_reports_every_budget(tiny, perturbed):
    target = tiny("qwen2", 0)
    draft = perturbed(target, 0.05, 1)
    prompts = [torch.tensor([[1, 2, 3, 4]]), torch.tensor([[9, 8, 7]])]
    report = tune_budget(target, draft, prompts, budgets=(1, 4, 8), sizes=(1, 4, 8), max_new_tokens=8, repeats=1)
    assert report.budgets == [1, 4, 8] and report.best_budget in report.budgets
    assert len(report.verify_s) == 3 and len(report.expected_tokens_per_s) == 3
    assert all(t >= 1.0 for t in report.tokens_per_step)
    assert all(n <= b for n, b in zip(report.mean_tree, report.budgets, strict=True))
    best = report.expected_tokens_per_s[report.budgets.index(report.best_budget)]
    assert best == max(report.expected_tokens_per_s)
    assert set(report.to_dict()) >= {"best_budget", "verify_s", "tokens_per_step"}
