"""Error detection and selective prediction from the option probabilities; pure numpy, batched.

Conventions as in :mod:`surefast.conformal.metrics`: ``probs [..., N, K]``, ``labels [..., N]``;
each metric reduces over the ``N`` items and returns ``[...]``. The answer is ``argmax p`` and its
*confidence* the top probability.

- :func:`auroc_correct`: the probability that a right answer has a higher confidence than a
  wrong one (ties count one half), the Mann-Whitney form of the area under the ROC curve of
  "confidence predicts correctness"; NaN when every answer is right or every one wrong.
- :func:`selective_accuracy`: accuracy on the ``ceil(c N)`` most confident items (coverage ``c``).
- :func:`aurc`: area under the risk-coverage curve, the mean over ``k = 1..N`` of the error rate
  on the ``k`` most confident items (Geifman and El-Yaniv 2017; lower is better).
- :func:`brier` (multi-class: ``sum_k (p_k - 1[k = y])^2``, mean over items) and :func:`nll`
  (``-log p_y``, with ``p_y`` floored at :data:`FLOOR`, ~2e-308: a confident wrong answer costs its full ~700 nats at most, not a capped 27.6).

Ordering by confidence is a stable sort of the negated confidence: among equal confidences the
item that comes first keeps its place, so the result does not depend on the platform's sort.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from surefast.conformal.metrics import predicted

FLOOR = float(np.finfo(np.float64).tiny)  # smallest p_y NLL takes the log of: a zero would be infinite


def confidence(probs: np.ndarray) -> np.ndarray:
    """The top probability per item: ``[..., N]``."""
    return np.max(probs, axis=-1)


def correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each item's answer is right: ``[..., N]`` bool."""
    return predicted(probs) == labels


def auroc_correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of the top probability for "the answer is right" (module docstring): ``[...]``."""
    conf, right = confidence(probs), correct(probs, labels)
    ranks = rankdata(conf, axis=-1)  # average ranks: a tie between a right and a wrong item counts 1/2
    n_pos = right.sum(axis=-1)
    n_neg = right.shape[-1] - n_pos
    rank_sum = np.where(right, ranks, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def _by_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correctness ``[..., N]`` of the items in order of decreasing confidence (stable)."""
    order = np.argsort(-confidence(probs), axis=-1, kind="stable")
    return np.take_along_axis(correct(probs, labels), order, axis=-1)


def selective_accuracy(probs: np.ndarray, labels: np.ndarray, coverage: float) -> np.ndarray:
    """Accuracy on the ``ceil(coverage * N)`` most confident items (at least one): ``[...]``."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    ranked = _by_confidence(probs, labels)
    keep = max(1, math.ceil(coverage * ranked.shape[-1] - 1e-9))
    return ranked[..., :keep].mean(axis=-1)


def aurc(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Area under the risk-coverage curve: mean over ``k`` of the error rate on the ``k`` most confident items."""
    errors = ~_by_confidence(probs, labels)
    k = np.arange(1, errors.shape[-1] + 1)
    return (np.cumsum(errors, axis=-1) / k).mean(axis=-1)


def brier(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multi-class Brier score, ``sum_k (p_k - 1[k = y])^2`` averaged over items (0 is perfect, 2 the worst)."""
    onehot = np.arange(probs.shape[-1]) == np.asarray(labels)[..., None]
    return ((probs - onehot) ** 2).sum(axis=-1).mean(axis=-1)


def nll(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean negative log-probability of the true option (natural log; ``p_y`` floored at :data:`FLOOR`)."""
    p_true = np.take_along_axis(probs, np.asarray(labels)[..., None], axis=-1)[..., 0]
    return -np.log(np.maximum(p_true, FLOOR)).mean(axis=-1)


def selective_metrics(probs: np.ndarray, labels: np.ndarray, coverages: tuple[float, ...]) -> dict[str, np.ndarray]:
    """:func:`auroc_correct`, :func:`selective_accuracy` at each of ``coverages`` (keyed
    ``selective_accuracy_<percent>``), :func:`aurc`, :func:`brier` and :func:`nll`, each ``[...]``.

    The same numbers as the single functions (tested against them), from one sort of the
    confidences instead of one per metric: the benchmark computes these for every split of every
    bootstrap replicate. AUROC's average ranks of tied confidences come from the sorted order's
    tie blocks (first and last position of each run of equal values).
    """
    conf = confidence(probs)  # [..., N]
    right = np.argmax(probs, axis=-1) == labels
    n = conf.shape[-1]
    order = np.argsort(-conf, axis=-1, kind="stable")  # decreasing confidence, stable
    ranked = np.take_along_axis(right, order, axis=-1)  # correctness by decreasing confidence
    out: dict[str, np.ndarray] = {}
    hits = np.cumsum(ranked, axis=-1)  # [..., N]: right answers among the k most confident
    for c in coverages:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        keep = max(1, math.ceil(c * n - 1e-9))
        out[f"selective_accuracy_{round(100 * c)}"] = hits[..., keep - 1] / keep
    k = np.arange(1, n + 1)
    out["aurc"] = ((k - hits) / k).mean(axis=-1)
    # Average ascending ranks (1-based) of the confidences, from the descending order's tie blocks.
    desc = np.take_along_axis(conf, order, axis=-1)
    new = np.ones(desc.shape, dtype=bool)
    new[..., 1:] = desc[..., 1:] != desc[..., :-1]
    pos = np.broadcast_to(np.arange(n), desc.shape)
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=-1)  # block start (descending positions)
    end = np.ones(desc.shape, dtype=bool)
    end[..., :-1] = new[..., 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, pos, n - 1), axis=-1), axis=-1), axis=-1)
    ranks = n - (first + last) / 2.0  # descending position p has ascending rank n - p
    n_pos = ranked.sum(axis=-1)
    n_neg = n - n_pos
    rank_sum = np.where(ranked, ranks, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    out["auroc"] = np.where((n_pos > 0) & (n_neg > 0), auroc, np.nan)
    return {**out, "brier": brier(probs, labels), "nll": nll(probs, labels)}
