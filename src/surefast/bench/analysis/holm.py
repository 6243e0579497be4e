"""Holm's step-down correction: many per-cell tests, one family-wise error rate.

A study that screens every compressed cell for a change tests dozens of hypotheses; at the 5% level
each, one of 50 true nulls comes out "significant" by chance. Holm (1979) sorts the ``m`` p-values,
``p_(1) <= ... <= p_(m)``, and rejects ``H_(i)`` while ``(m - i + 1) p_(i) < alpha`` for every
``i`` up to it: the adjusted p-value is ``max_{j <= i} min(1, (m - j + 1) p_(j))``. It controls
the probability of any false rejection at ``alpha`` under any dependence between the tests (the
cells of one study share items and a dense baseline), and never rejects less than Bonferroni.
"""

from __future__ import annotations

import math

import numpy as np

from surefast.bench.analysis.deltas import Z95


def normal_p_value(value: float, low: float, high: float) -> float:
    """Two-sided p-value of ``value = 0`` from its symmetric 95% interval ``value +- Z95 * se``."""
    se = (high - low) / (2 * Z95)
    if not math.isfinite(se) or se <= 0:
        return 1.0 if value == 0 or not math.isfinite(value) else 0.0
    return math.erfc(abs(value) / se / math.sqrt(2))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values [m], in the order given."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    steps = (m - np.arange(m)) * p[order]  # (m - i + 1) p_(i), i from 1
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


__all__ = ["holm", "normal_p_value"]
