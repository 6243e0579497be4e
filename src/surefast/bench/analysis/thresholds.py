"""Does uncertainty grow smoothly along a compression sweep, or jump at a threshold?

For a sweep (levels x_0 < ... < x_k, e.g. Wanda sparsity 0-50%) with values y_i (mean set size):

* the largest single step ``max_i (y_i - y_{i-1})`` and where it happens;
* the share of the total change that happens in the last step, ``(y_k - y_{k-1}) / (y_k - y_0)``
  (1/k for a linear rise; near 1 for a cliff at the end);
* a changepoint: the split point ``c`` that minimises the squared error of a two-segment
  piecewise-linear fit, continuous at ``x_c`` (a hinge), compared with one straight line;
  ``jump_score`` = 1 - SSE_hinge / SSE_line in [0, 1] (0: a line explains it; near 1: a kink).
  This is our choice of statistic (the reference paper describes cliffs qualitatively).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SweepJump:
    largest_step: float
    largest_step_at: float  # the level x_i at which the largest step ends
    last_step_share: float  # NaN when the total change is zero
    changepoint: float | None  # x_c of the best hinge (None for fewer than 4 points)
    jump_score: float  # 1 - SSE_hinge / SSE_line; NaN when a line fits exactly


def _sse_line(x: np.ndarray, y: np.ndarray) -> float:
    coef = np.polyfit(x, y, 1)
    return float(((np.polyval(coef, x) - y) ** 2).sum())


def _sse_hinge(x: np.ndarray, y: np.ndarray, c: float) -> float:
    design = np.stack([np.ones_like(x), x, np.maximum(x - c, 0.0)], axis=1)  # [n, 3]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(((design @ coef - y) ** 2).sum())


def best_hinge(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(x_c, SSE)`` of the hinge that fits ``y`` best, ``x_c`` among the interior levels of sorted ``x``."""
    candidates = x[1:-1]  # a hinge needs points on both sides
    sse = [_sse_hinge(x, y, c) for c in candidates]
    best = int(np.argmin(sse))
    return float(candidates[best]), sse[best]


def sweep_jump(levels: list[float] | np.ndarray, values: list[float] | np.ndarray) -> SweepJump:
    x, y = np.asarray(levels, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 2:
        raise ValueError("a sweep needs at least two levels")
    steps = np.diff(y)
    i = int(np.argmax(steps))
    total = y[-1] - y[0]
    last_share = float(steps[-1] / total) if total != 0 else float("nan")
    changepoint, score = None, float("nan")
    if len(x) >= 4:
        line = _sse_line(x, y)
        changepoint, sse = best_hinge(x, y)
        score = float(1 - sse / line) if line > 1e-12 else float("nan")
    return SweepJump(float(steps[i]), float(x[i + 1]), last_share, changepoint, score)
