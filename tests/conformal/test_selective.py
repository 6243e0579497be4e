"""Selective prediction and error detection: hand-computed goldens and naive per-item references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from surefast.conformal.selective import FLOOR, aurc, auroc_correct, brier, nll, selective_accuracy

# Four items, three options. Answers: 0 (right), 1 (wrong), 2 (right), 0 (wrong).
PROBS = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
LABELS = np.array([0, 0, 2, 1])


def naive_auroc(conf: list[float], right: list[bool]) -> float:
    pos = [c for c, r in zip(conf, right, strict=True) if r]
    neg = [c for c, r in zip(conf, right, strict=True) if not r]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def naive_ranked(conf: list[float], right: list[bool]) -> list[bool]:
    order = sorted(range(len(conf)), key=lambda i: (-conf[i], i))  # most confident first, ties by index
    return [right[i] for i in order]


def test_goldens():
    # confidences 0.7 (right), 0.6 (wrong), 0.5 (right), 0.6 (wrong): right beats wrong in 2 of 4 pairs
    assert auroc_correct(PROBS, LABELS) == pytest.approx(0.5)
    # by confidence: 0.7 R, 0.6 W (item 1), 0.6 W (item 3), 0.5 R
    assert selective_accuracy(PROBS, LABELS, 0.25) == 1.0
    assert selective_accuracy(PROBS, LABELS, 0.5) == 0.5
    assert selective_accuracy(PROBS, LABELS, 1.0) == 0.5
    assert aurc(PROBS, LABELS) == pytest.approx((0 / 1 + 1 / 2 + 2 / 3 + 2 / 4) / 4)
    sq = [0.09 + 0.04 + 0.01, 0.49 + 0.36 + 0.01, 0.04 + 0.09 + 0.25, 0.36 + 0.49 + 0.01]
    assert brier(PROBS, LABELS) == pytest.approx(sum(sq) / 4)
    assert nll(PROBS, LABELS) == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.3)) / 4)


def test_edge_cases():
    assert math.isnan(auroc_correct(PROBS[:1], LABELS[:1]))  # every answer right: undefined
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(FLOOR))
    with pytest.raises(ValueError, match="coverage"):
        selective_accuracy(PROBS, LABELS, 0.0)
    perfect = np.eye(3)[[0, 1, 2]]
    assert brier(perfect, np.array([0, 1, 2])) == 0.0 and aurc(perfect, np.array([0, 1, 2])) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_batched_metrics_equal_naive_loops(seed):
    """Leading dims (splits) broadcast; coarse probabilities make ties common."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(6), size=(3, 40))
    probs = np.round(probs, 1) + 1e-3  # ties in confidence between right and wrong answers
    probs /= probs.sum(-1, keepdims=True)
    labels = rng.integers(0, 6, size=(3, 40))
    for s in range(3):
        p, y = probs[s], labels[s]
        conf = p.max(-1).tolist()
        right = (p.argmax(-1) == y).tolist()
        assert auroc_correct(probs, labels)[s] == pytest.approx(naive_auroc(conf, right), nan_ok=True)
        ranked = naive_ranked(conf, right)
        for c in (0.1, 0.5, 0.9, 1.0):
            keep = max(1, math.ceil(c * len(ranked) - 1e-9))
            assert selective_accuracy(probs, labels, c)[s] == pytest.approx(sum(ranked[:keep]) / keep)
        risks = [sum(not r for r in ranked[:k]) / k for k in range(1, len(ranked) + 1)]
        assert aurc(probs, labels)[s] == pytest.approx(sum(risks) / len(risks))
        assert brier(probs, labels)[s] == pytest.approx(
            sum(sum((p[i, k] - (k == y[i])) ** 2 for k in range(6)) for i in range(40)) / 40
        )
        assert nll(probs, labels)[s] == pytest.approx(-sum(math.log(p[i, y[i]]) for i in range(40)) / 40)
