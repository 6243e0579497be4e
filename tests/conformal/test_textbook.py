"""Prediction sets equal the textbook definition on any logits, confident models included.

The reference here is the definition itself in exact arithmetic: the exponentials of the float
logits to 80 digits, then softmax, scores, the ``ceil((n + 1)(1 - alpha))``-th smallest
calibration score and ``{y : s_y <= qhat}`` in exact rationals (so tied options and rows
repeated in another order tie exactly). Our float64 sets must agree on every
(item, option) except where the exact score and threshold differ by less than float noise
(relative 1e-11 of the smaller of the mass and its complement); the tests count those and
require them to be rare, so agreement is not bought by skipping.

On the logits of a confident model the non-top options have probabilities far below 1e-8
(a gap of 25 nats is 1e-11). An absolute tolerance of 1e-8, as the code had (and MAPIE has),
then puts options into sets whose exact scores lie above the threshold; these tests fail on it.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from surefast.conformal import (
    APSConfig,
    LACConfig,
    RAPSConfig,
    at_labels,
    class_scores,
    conformal_quantile,
    evaluate_splits,
    prediction_sets,
    quantile_rank,
    softmax,
)

CTX = decimal.Context(prec=80)
CONFIGS = {
    "lac": LACConfig(),
    "aps": APSConfig(),
    "aps_randomized": APSConfig(randomized=True),
    "raps": RAPSConfig(),
    "raps_randomized": RAPSConfig(randomized=True),
}
AMBIGUOUS = Fraction(1, 10**11)  # relative to the smaller of mass and complement: float noise
ACROSS_LEVELS = Fraction(1, 10**14)  # absolute, between RAPS scores of different penalty levels


def exact_probs(row: np.ndarray) -> list[Fraction]:
    """Softmax of the float logits: exponentials to 80 digits, the rest exact."""
    with decimal.localcontext(CTX):
        z = [Decimal(float(x)) for x in row]
        e = [Fraction((x - max(z)).exp()) for x in z]
    total = sum(e, Fraction(0))
    return [x / total for x in e]


def exact_scores(p: list[Fraction], name: str, u: float) -> list[tuple[Fraction, Fraction, Fraction]]:
    """Per option: (score, its penalty level, its mass part), exactly."""
    out = []
    config = CONFIGS[name]
    zero = Fraction(0)
    for py in p:
        if name == "lac":
            out.append((1 - py, zero, 1 - py))
            continue
        above = sum((q for q in p if q >= py), zero)
        tied = sum((q for q in p if q == py), zero)
        mass = above - (Fraction(u) * tied if config.randomized else zero)
        level = zero
        if isinstance(config, RAPSConfig):
            rank = sum(1 for q in p if q >= py)
            level = Fraction(config.lam) * max(0, rank - config.k_reg)
        out.append((mass + level, level, mass))
    return out


def textbook_sets(
    logits: np.ndarray, labels: np.ndarray, cal: np.ndarray, test: np.ndarray, alpha: float, name: str, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exact sets ``[T, K]`` and a mask of the (item, option) comparisons within float noise."""
    scores = {i: exact_scores(exact_probs(logits[i]), name, float(u[i])) for i in {*cal.tolist(), *test.tolist()}}
    cal_scores = sorted(scores[i][labels[i]][0] for i in cal)
    k = quantile_rank(len(cal), alpha)
    q = cal_scores[k - 1] if k <= len(cal) else None
    q_entry = None if q is None else next(s for i in cal for s in [scores[i][labels[i]]] if s[0] == q)
    sets = np.zeros((len(test), logits.shape[1]), dtype=bool)
    ambiguous = np.zeros_like(sets)
    for t, i in enumerate(test):
        for y, (s, level, mass) in enumerate(scores[i]):
            if q_entry is None:
                sets[t, y] = True
                continue
            diff = s - q_entry[0]
            sets[t, y] = diff <= 0
            if level == q_entry[1]:
                scale = min(mass, 1 - mass, q_entry[2], 1 - q_entry[2])
                ambiguous[t, y] = diff != 0 and abs(diff) <= AMBIGUOUS * scale
            else:
                ambiguous[t, y] = abs(diff) <= ACROSS_LEVELS
    return sets, ambiguous


def ours(logits, labels, cal, test, alpha, name, u) -> np.ndarray:
    config = CONFIGS[name]
    probs = softmax(logits)
    uu = u if config.randomized else None
    scores = class_scores(config, probs, uu)
    qhat = conformal_quantile(at_labels(scores[cal], labels[cal]), alpha)
    return prediction_sets(scores[test], qhat)


def confident_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Six-option logits whose gaps span 0 to 45 nats, with exact ties, near-ties at 1e-9 and
    1e-15 nats, and rows repeated in permuted option order; labels mostly the top option."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0.0, 1.0, 3.0, 18.0, 22.0, 25.0, 26.0, 33.0, 40.0, 45.0], size=(n, 5))
    gaps += rng.uniform(0, 6, size=(n, 5)) * (rng.random((n, 5)) < 0.5)
    logits = np.concatenate([np.zeros((n, 1)), -gaps], axis=1)
    tie = rng.random(n) < 0.2  # an exact tie between two options
    logits[tie, 2] = logits[tie, 1]
    near = rng.random(n) < 0.2  # near-ties: distinguishable (1e-9) and within float noise (1e-15)
    logits[near, 3] = logits[near, 4] + rng.choice([1e-9, 1e-15], size=near.sum())
    for i in range(0, n - 1, 7):  # the same logits in another option order
        logits[i + 1] = logits[i][rng.permutation(6)]
    logits = logits[:, np.argsort(rng.random((n, 6)), axis=1)[0]]  # shuffle columns once
    top = logits.argmax(axis=1)
    labels = np.where(rng.random(n) < 0.9, top, rng.integers(0, 6, n))
    return logits, labels


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sets_equal_the_exact_textbook_sets(name: str, seed: int) -> None:
    logits, labels = confident_logits(120, seed)
    rng = np.random.default_rng(100 + seed)
    u = rng.random(len(labels))
    checked = ambiguous_total = 0
    for alpha in (0.05, 0.1, 0.2, 0.3):
        perm = rng.permutation(len(labels))
        cal, test = perm[:60], perm[60:]
        expected, ambiguous = textbook_sets(logits, labels, cal, test, alpha, name, u)
        got = ours(logits, labels, cal, test, alpha, name, u)
        wrong = (got != expected) & ~ambiguous
        assert not wrong.any(), (alpha, np.argwhere(wrong)[:5].tolist(), logits[test[np.argwhere(wrong)[0, 0]]])
        checked += expected.size
        ambiguous_total += int(ambiguous.sum())
    assert ambiguous_total <= 0.01 * checked  # agreement is not bought by skipping


def test_issue_reproducer_aps_on_two_confident_item_kinds() -> None:
    # 190 items with logits [25, 3, 0, 0, 0, 0] (label A), 10 with [25, 0.5, 0, ...] (label B).
    # qhat is an A-type true-label score, so a test set is {A} for A-type items and empty for
    # B-type ones (their top option alone has more mass): mean set size = coverage = the A share.
    # The 1e-8 tolerance gave all six options and coverage 1.00.
    logits = np.zeros((200, 6))
    logits[:, 0] = 25.0
    logits[:190, 1], logits[190:, 1] = 3.0, 0.5
    labels = np.array([0] * 190 + [1] * 10)
    res = evaluate_splits(logits, labels, from_logits=True, score_fns=("aps",), n_splits=20, seed=0)
    size, coverage = res.get("aps", 0.1, "mean_set_size"), res.get("aps", 0.1, "coverage")
    assert size.mean() == pytest.approx(0.95, abs=0.02)
    assert np.array_equal(size, coverage)
    assert (size < 1.0 + 1e-12).all()


def test_confident_model_set_sizes_match_the_textbook() -> None:
    # The issue's first reproducer: top answer ahead by 18-26 nats, true label the top 93% of the time.
    rng = np.random.default_rng(7)
    n = 300
    logits = np.concatenate([np.zeros((n, 1)), -rng.uniform(18, 26, size=(n, 5))], axis=1)
    labels = np.where(rng.random(n) < 0.93, 0, rng.integers(1, 6, n))
    u = np.zeros(n)
    for name in ("lac", "aps"):
        exact_sizes, our_sizes = [], []
        for _ in range(5):
            perm = rng.permutation(n)
            cal, test = perm[:150], perm[150:]
            expected, ambiguous = textbook_sets(logits, labels, cal, test, 0.1, name, u)
            got = ours(logits, labels, cal, test, 0.1, name, u)
            assert not ((got != expected) & ~ambiguous).any()
            exact_sizes.append(expected.sum(axis=1).mean())
            our_sizes.append(got.sum(axis=1).mean())
        assert np.mean(our_sizes) == pytest.approx(np.mean(exact_sizes), abs=1e-9)
        assert np.mean(our_sizes) < 5.0  # the 1e-8 tolerance gave full sets (APS 6.0)
