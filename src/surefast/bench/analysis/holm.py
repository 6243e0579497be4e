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

from surefast.bench.analysis.cells import CellKey
from surefast.bench.analysis.deltas import Z95, Delta

DECOUPLING_METRICS = ("accuracy", "mean_set_size")  # the tests a decoupling screen counts


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


def adjusted_p_values(ds: list[Delta]) -> dict[tuple[CellKey, str], float]:
    """Holm-adjusted p-value of every cell's accuracy and set-size delta, one family for all."""
    family = [d for d in ds if d.metric in DECOUPLING_METRICS]
    p = holm(np.array([normal_p_value(d.value, d.ci_low, d.ci_high) for d in family]))
    return {(d.key, d.metric): float(q) for d, q in zip(family, p, strict=True)}


__all__ = ["DECOUPLING_METRICS", "adjusted_p_values", "holm", "normal_p_value"]
