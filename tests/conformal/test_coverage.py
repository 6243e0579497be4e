"""The coverage guarantee, checked statistically over many random splits, for every score.

For a uniformly random split of a fixed set of items, the calibration items and any one test
item are exchangeable; with no ties among scores the test item's rank among the ``n + 1`` is
uniform, so the expected coverage is exactly ``k / (n + 1)`` with
``k = ceil((n + 1)(1 - alpha))``, which lies in ``[1 - alpha, 1 - alpha + 1/(n + 1)]``. This
holds for any model, calibrated or not, so the data include an overconfident one.

With ties only the lower bound holds. Deterministic APS and RAPS give every item whose true
label ranks last the same score (all the mass, 1.0; RAPS adds the same penalty), and for the
overconfident model those items are more than alpha of the data: qhat lands on the tie and the
coverage overshoots (to ~0.996 at alpha = 0.05). The test checks the upper bound and the exact
value only for scores without ties on the data at hand.

Sampling error. Splits are i.i.d. given the items, so the mean of R per-split coverages has
standard deviation sigma / sqrt(R), with sigma^2 = Var(coverage of one split) <= (a) + (b):
(a) the spread of the coverage given the calibration set, Beta(k, n + 1 - k) for continuous
scores: k (n + 1 - k) / ((n + 1)^2 (n + 2)); (b) the test average of n_test coverage indicators
given the calibration set, at most 1 / (4 n_test). We allow 4.5 sigma / sqrt(R) (a two-sided
false alarm about 7 in a million per check; ~60 checks here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from surefast.conformal import SCORES, at_labels, class_scores, evaluate_splits, get_score, quantile_rank, softmax
from surefast.conformal.calibrate import RTOL

ALPHAS = (0.05, 0.1, 0.2)


def synthetic(n: int, seed: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Model probabilities softmax(z); true labels drawn from softmax(z / temperature)."""
    rng = np.random.default_rng(seed)
    z = 2 * rng.normal(size=(n, 6))
    truth = softmax(z / temperature)
    labels = (rng.random((n, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    return softmax(z), np.minimum(labels, 5)


def tied(name: str, probs: np.ndarray, labels: np.ndarray) -> bool:
    """Whether two items' true-label scores coincide (within RTOL); randomized scores never do."""
    cfg = get_score(name)
    if cfg.randomized:
        return False
    keys = np.sort(at_labels(class_scores(cfg, probs), labels).key)
    with np.errstate(invalid="ignore"):  # inf - inf: two infinite keys, a tie
        return bool(((np.diff(keys) <= RTOL * keys[1:]) | np.isinf(keys[1:]) & np.isinf(keys[:-1])).any())


def margin(n_cal: int, n_test: int, alpha: float, n_splits: int) -> float:
    k = quantile_rank(n_cal, alpha)
    var = k * (n_cal + 1 - k) / ((n_cal + 1) ** 2 * (n_cal + 2)) + 1 / (4 * n_test)
    return 4.5 * math.sqrt(var / n_splits)


@pytest.mark.parametrize(
    ("n_items", "n_splits", "temperature"),
    [
        (200, 2000, 1.0),  # calibrated model, n_cal = 100
        (200, 2000, 3.0),  # overconfident model: true labels flatter than its probabilities
        (40, 4000, 1.0),  # n_cal = 20: the finite-sample correction is worth 1/21 here
    ],
)
def test_mean_coverage_within_the_finite_sample_band(n_items: int, n_splits: int, temperature: float) -> None:
    probs, labels = synthetic(n_items, seed=n_items + int(temperature), temperature=temperature)
    # Only the overconfident model's deterministic APS and RAPS have ties; all else is checked in full.
    assert {n for n in SCORES if tied(n, probs, labels)} == ({"aps", "raps"} if temperature > 1 else set())
    res = evaluate_splits(probs, labels, score_fns=list(SCORES), alphas=ALPHAS, n_splits=n_splits, seed=1)
    n_cal = n_items // 2
    for alpha in ALPHAS:
        tol = margin(n_cal, n_items - n_cal, alpha, n_splits)
        exact = quantile_rank(n_cal, alpha) / (n_cal + 1)
        for name in SCORES:
            mean = res.get(name, alpha, "coverage").mean()
            assert mean >= 1 - alpha - tol, (name, alpha, mean)
            if not tied(name, probs, labels):
                assert mean <= 1 - alpha + 1 / (n_cal + 1) + tol, (name, alpha, mean)
                assert abs(mean - exact) <= tol, (name, alpha, mean, exact)
