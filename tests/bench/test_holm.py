"""Holm's correction against a naive loop, a textbook example and its family-wise error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from surefast.bench.analysis.holm import holm, normal_p_value


def naive_holm(p: list[float]) -> list[float]:
    """The definition, one hypothesis at a time: max over the ones ranked before it (and itself)."""
    m = len(p)
    ranked = sorted(range(m), key=lambda i: (p[i], i))
    out = [0.0] * m
    for pos, i in enumerate(ranked):
        out[i] = min(1.0, max((m - j) * p[ranked[j]] for j in range(pos + 1)))
    return out


def test_a_textbook_example() -> None:
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> 0.06 (monotone)
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_naive_loop_with_ties_and_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 1, 30) ** 3, 2)  # rounding makes ties, the cube small values
    p[:3] = 1.0
    assert holm(p) == pytest.approx(naive_holm(list(p)))


def test_between_raw_and_bonferroni() -> None:
    p = np.random.default_rng(7).uniform(0, 0.2, 40)
    adjusted = holm(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, 40 * p) + 1e-12)


def test_controls_the_family_wise_error_under_the_global_null() -> None:
    rng = np.random.default_rng(11)
    reps, m = 4000, 50
    any_false = np.mean([np.any(holm(rng.uniform(size=m)) < 0.05) for _ in range(reps)])
    raw_false = np.mean([np.any(rng.uniform(size=m) < 0.05) for _ in range(reps)])
    assert any_false < 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)  # at most alpha, within noise
    assert raw_false > 0.9  # without it, 1 - 0.95^50 = 92% of studies "find" something


def test_normal_p_value_from_an_interval() -> None:
    assert normal_p_value(1.96, 0.0, 3.92) == pytest.approx(0.05, abs=1e-4)
    assert normal_p_value(0.0, -1.0, 1.0) == 1.0
    assert normal_p_value(0.5, 0.5, 0.5) == 0.0  # no spread: any change is certain
    assert normal_p_value(0.0, 0.0, 0.0) == 1.0
