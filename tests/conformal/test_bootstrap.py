"""The item bootstrap: each replicate is the reported value recomputed on resampled items, and
paired intervals from it hold their 5% false-positive rate under a population null.

The null: two models whose logits come from one distribution (no true difference in any metric),
scored on the same items drawn from a population. The split-to-split spread, the interval the
benchmark used before, calls a difference significant far more often than 5% when the
calibration share is not 1/2 (accuracy at 0.3, set size at 0.7); these tests show both.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from surefast.conformal import bootstrap_items, evaluate_splits
from surefast.conformal.splits import is_scalar

SCORES = ("lac", "aps_randomized")


def population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' logits, both drawn from one distribution (about 50% accuracy)."""
    y = rng.integers(0, 6, n)

    def model() -> np.ndarray:
        z = rng.normal(size=(n, 6))
        z[np.arange(n), y] += 1.2
        return z

    return model(), model(), y


def test_a_replicate_is_the_evaluation_of_the_resampled_items() -> None:
    rng = np.random.default_rng(0)
    logits, _, y = population(60, rng)
    kw = {"from_logits": True, "score_fns": SCORES, "alphas": (0.1, 0.2), "n_splits": 7, "cal_fraction": 0.4}
    res = evaluate_splits(logits, y, seed=3, n_boot=5, **kw)
    idx = bootstrap_items(60, 5, seed=3)
    for b in range(5):
        naive = evaluate_splits(logits[idx[b]], y[idx[b]], seed=3, **kw).values  # [S, A, R, M]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined in every split: NaN
            expected = np.nanmean(naive, axis=2)
        np.testing.assert_allclose(res.boot[:, :, b], expected, rtol=1e-12, equal_nan=True)
    rows = [r for r in res.rows() if r["resampling"] == "bootstrap"]
    assert len(rows) == len(SCORES) * 2 * 5 * sum(map(is_scalar, res.metrics))  # replicates of the scalar metrics
    assert {r["metric"] for r in rows} == {m for m in res.metrics if is_scalar(m)}


def test_bootstrap_is_deterministic_and_pairs_models() -> None:
    rng = np.random.default_rng(1)
    a, b, y = population(50, rng)
    kw = {"from_logits": True, "n_splits": 5, "seed": 9, "n_boot": 4}
    first = evaluate_splits(a, y, **kw).boot
    assert np.array_equal(first, evaluate_splits(a, y, **kw).boot, equal_nan=True)
    # The resamples depend only on (n, n_boot, seed): a second model's replicate b is its
    # evaluation on the same resampled items as the first model's.
    idx = bootstrap_items(50, 4, 9)
    assert not np.array_equal(idx, bootstrap_items(50, 4, 10))
    other = evaluate_splits(b, y, **kw).get("lac", 0.1, "accuracy", "bootstrap")
    plain = {k: v for k, v in kw.items() if k != "n_boot"}
    naive = [evaluate_splits(b[i], y[i], **plain).get("lac", 0.1, "accuracy").mean() for i in idx]
    np.testing.assert_allclose(other, naive, rtol=1e-12)


def null_rejections(n: int, share: float, trials: int, n_splits: int, n_boot: int, seed0: int) -> dict:
    """Share of null trials each interval calls significant, per metric: (bootstrap, split spread)."""
    metrics = ("accuracy", "coverage", "mean_set_size")
    hits = {m: [0, 0] for m in metrics}
    for t in range(trials):
        seed = seed0 + t
        za, zb, y = population(n, np.random.default_rng(seed))
        kw = {"from_logits": True, "score_fns": SCORES, "n_splits": n_splits, "cal_fraction": share, "seed": seed}
        ra, rb = evaluate_splits(za, y, n_boot=n_boot, **kw), evaluate_splits(zb, y, n_boot=n_boot, **kw)
        for m in metrics:
            diff = np.mean([ra.get(s, 0.1, m) - rb.get(s, 0.1, m) for s in SCORES], axis=0)  # [R]
            boot = np.mean([ra.get(s, 0.1, m, "bootstrap") - rb.get(s, 0.1, m, "bootstrap") for s in SCORES], axis=0)
            hits[m][0] += abs(diff.mean()) > 1.96 * boot.std(ddof=1)
            lo, hi = np.percentile(diff, [2.5, 97.5])
            hits[m][1] += lo > 0 or hi < 0
    return {m: (h[0] / trials, h[1] / trials) for m, h in hits.items()}


def within_monte_carlo_error(rate: float, trials: int, z: float = 3.5) -> bool:
    return abs(rate - 0.05) <= z * math.sqrt(0.05 * 0.95 / trials)


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_false_positive_rate_under_a_population_null(share: float) -> None:
    trials = 300
    rates = null_rejections(80, share, trials, n_splits=10, n_boot=60, seed0=int(share * 10_000))
    for metric, (boot, _) in rates.items():
        assert within_monte_carlo_error(boot, trials), (metric, boot)
    # The split spread fails where the issue says: accuracy at a calibration share of 0.3, set size at 0.7.
    worst = rates["accuracy"][1] if share < 0.5 else rates["mean_set_size"][1]
    assert worst > 0.10, rates


@pytest.mark.slow
@pytest.mark.parametrize("n", [80, 300])
@pytest.mark.parametrize("share", [0.3, 0.5, 0.7])
def test_false_positive_rate_under_a_population_null_full(n: int, share: float) -> None:
    trials = 1000
    rates = null_rejections(n, share, trials, n_splits=20, n_boot=100, seed0=100_000 + n + int(share * 10_000))
    for metric, (boot, _) in rates.items():
        assert within_monte_carlo_error(boot, trials), (metric, boot)
