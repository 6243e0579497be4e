"""The split-conformal threshold and the prediction sets it defines.

Given ``n`` calibration scores and a miscoverage level ``alpha``, the threshold ``qhat`` is the
``k``-th smallest score with ``k = ceil((n + 1)(1 - alpha))`` (Vovk et al. 2005; Angelopoulos &
Bates, "A Gentle Introduction to Conformal Prediction", 2021, eq. 1). The set
``{y : s(x, y) <= qhat}`` then covers the true label with probability at least ``1 - alpha``
for any exchangeable test item, and at most ``1 - alpha + 1/(n + 1)`` when scores have no ties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import overload

import numpy as np

from surefast.conformal.inputs import check_alphas
from surefast.conformal.scores import ScoreArray
from surefast.errors import SurefastError

# Relative tolerance of a comparison ``score <= qhat``: 64 ulps. The same probabilities summed in
# another order (a permuted row, a cached re-run) differ by a few ulps, and a label that ties the
# threshold must not drop out on rounding. It is relative to the quantity being compared (see
# prediction_sets), never an absolute 1e-8 as in MAPIE: a confident model's non-top options have
# probabilities far below 1e-8, so an absolute tolerance puts options in that the threshold excludes.
RTOL = 64 * float(np.finfo(np.float64).eps)


def quantile_rank(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``: which order statistic of ``n`` scores is ``qhat``.

    The product is rounded to 9 decimals before the ceiling, because float error would otherwise
    push exact integers up by one (``100 * (1 - 0.45)`` is ``55.00000000000001`` in floats and
    its ceiling 56, not 55). MAPIE 1.6 has no such guard.
    """
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def min_calibration_size(alpha: float) -> int:
    """Smallest ``n`` with a finite threshold, i.e. ``k <= n``: ``ceil(1/alpha - 1)``.

    ``ceil((n + 1)(1 - alpha)) <= n`` holds iff ``(n + 1)(1 - alpha) <= n`` iff
    ``n >= (1 - alpha) / alpha``; e.g. 9 for alpha = 0.1, 19 for 0.05, 99 for 0.01. (MAPIE
    demands ``n >= max(1/alpha, 1/(1 - alpha))``, one more than needed.)
    """
    return max(1, math.ceil(round((1.0 - alpha) / alpha, 9)))


@overload
def conformal_quantile(scores: ScoreArray, alpha: float | Iterable[float]) -> ScoreArray: ...
@overload
def conformal_quantile(scores: np.ndarray, alpha: float | Iterable[float]) -> np.ndarray: ...
def conformal_quantile(scores: np.ndarray | ScoreArray, alpha: float | Iterable[float]) -> np.ndarray | ScoreArray:
    """Finite-sample corrected threshold(s) from calibration scores ``[..., n]``.

    Returns ``[...]`` for one alpha, ``[..., A]`` for a sequence of alphas, of the input's kind:
    floats for a float array, a :class:`~surefast.conformal.scores.ScoreArray` for one (ordered by
    its exact key, so the ``k``-th smallest is the ``k``-th smallest exact score even where the
    float values of many scores are one and the same number). Where
    ``k = ceil((n + 1)(1 - alpha)) > n`` (alpha below ``1 / (n + 1)``; see
    :func:`min_calibration_size`) the threshold is ``+inf``: no finite threshold gives the
    guarantee, so the only valid set is the full set. Callers who would rather fail than report
    full sets check :func:`min_calibration_size` first (:func:`~surefast.conformal.evaluate` does).

    Ties among calibration scores need no special care: the ``k``-th smallest value is well
    defined, and tied scores only make coverage more conservative (the upper bound
    ``1 - alpha + 1/(n + 1)`` assumes no ties).
    """
    key = scores.key if isinstance(scores, ScoreArray) else np.asarray(scores, dtype=np.float64)
    n = key.shape[-1] if key.ndim else 0
    if n == 0:
        raise SurefastError("the calibration set is empty: need at least one calibration score")
    single = not isinstance(alpha, Iterable)
    ranks = [quantile_rank(n, a) for a in check_alphas(alpha)]
    if not isinstance(scores, ScoreArray):
        ordered = np.sort(key, axis=-1)
        out = np.stack([_order_stat(ordered, k) for k in ranks], axis=-1)
        return out[..., 0] if single else out
    order = score_order(scores)
    sorted_scores = scores.map(lambda a: np.take_along_axis(a, order, axis=-1))
    picked = sorted_scores.map(lambda a: np.stack([_order_stat(a, k) for k in ranks], axis=-1))
    return picked[..., 0] if single else picked


def score_order(scores: np.ndarray | ScoreArray, first: np.ndarray | None = None) -> np.ndarray:
    """Indices that sort scores ``[..., n]`` along the last axis by exact score, stable.

    A :class:`~surefast.conformal.scores.ScoreArray` sorts by its key (one level) or, for RAPS,
    by value and, where values coincide as floats, by the key (exact within a level). ``first``
    (``[..., n]``, e.g. group codes) is a key sorted by before the scores: each value of it gets
    one contiguous sorted run.
    """
    if not isinstance(scores, ScoreArray):
        keys: tuple[np.ndarray, ...] = (np.asarray(scores, dtype=np.float64),)
    elif scores.level is None:  # one level: the key alone orders the exact scores
        keys = (scores.key,)
    else:  # RAPS: by value; where values coincide as floats, by the key
        keys = (scores.key, scores.value)
    if first is None and len(keys) == 1:
        return np.argsort(keys[0], axis=-1, kind="stable")
    return np.lexsort(keys if first is None else (*keys, first), axis=-1)


def _order_stat(ordered: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th smallest of sorted ``[..., n]`` (``+inf`` when ``k > n``)."""
    n = ordered.shape[-1]
    return ordered[..., k - 1] if k <= n else np.full(ordered.shape[:-1], np.inf)


# Where a threshold of each kind gets the item and label axes of the scores [..., N, K].
_THRESHOLD_AXES = {"split": (-2, -1), "item": (-1,), "label": (-2,)}


def prediction_sets(
    scores: np.ndarray | ScoreArray, qhat: np.ndarray | float | ScoreArray, per: str = "split"
) -> np.ndarray:
    """Boolean prediction sets ``{y : score_y <= qhat}``: scores ``[..., N, K]``, ``qhat`` ``[...]``.

    ``qhat`` broadcasts against the leading dims of ``scores``. ``per`` says what one threshold
    serves: ``"split"`` (``qhat [...]``, shared by the ``N`` items and ``K`` labels), ``"item"``
    (``qhat [..., N]``, one per item, e.g. its group's) or ``"label"`` (``qhat [..., K]``, one per
    candidate label; :mod:`surefast.conformal.mondrian`). A label whose score ties ``qhat`` is in the set. A set can
    be empty (LAC when every ``p_y < 1 - qhat``; deterministic APS when the top probability alone
    exceeds ``qhat``; randomized scores by the coin flip): it counts as size 0 and never covers.
    An infinite ``qhat`` gives full sets.

    "Ties" means equal up to :data:`RTOL` relative: for :class:`~surefast.conformal.scores.ScoreArray`
    scores, relative to the smaller of the score's mass and its complement (its ``key``), so a
    probability of 1e-12 is told from one of 1.1e-12 however close to 1 the score is; for plain
    float scores, relative to ``|qhat|``. This is the textbook set ``{y : s_y <= qhat}`` up to float
    noise for any logits, confident models included (tests/conformal/test_textbook.py).
    """
    if per not in _THRESHOLD_AXES:
        raise SurefastError(f"per must be one of {', '.join(_THRESHOLD_AXES)}, got {per!r}")
    axes = _THRESHOLD_AXES[per]
    if not isinstance(scores, ScoreArray):
        q = np.expand_dims(np.asarray(qhat, dtype=np.float64), axes)
        return np.asarray(scores) <= q + RTOL * np.abs(q)
    assert isinstance(qhat, ScoreArray), "precise scores need a precise threshold (conformal_quantile of them)"
    t = qhat.map(lambda a: np.expand_dims(a, axes))
    by_key = scores.key <= t.key * (1.0 + RTOL)  # inf * (1 + RTOL) = inf: full sets
    if scores.level is None or t.level is None:
        return by_key
    # RAPS: scores of different levels compare by float value (they differ by at least the
    # penalty step minus a mass difference, far from the precision limit); where two values are
    # within float noise, a shared level decides by the exact key and different levels count as a tie.
    finite = np.isfinite(t.value)
    noise = np.where(finite, 16 * np.finfo(np.float64).eps * (1.0 + np.abs(np.where(finite, t.value, 0.0))), 0.0)
    clearly_in = scores.value < t.value - noise
    near = ~clearly_in & (scores.value <= t.value + noise)
    return clearly_in | (near & np.where(scores.level == t.level, by_key, True)) | ~finite


def fill_empty_with_top(sets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Put the most probable label into every empty set (the reference code's rule, Ye et al. 2024).

    ``sets`` ``[..., N, K]``, ``probs`` broadcastable to it. Adding labels keeps coverage valid;
    it trades the empty-set signal ("no option fits") for sizes >= 1, which keeps UAcc bounded.
    """
    empty = ~sets.any(axis=-1, keepdims=True)
    top = np.arange(sets.shape[-1]) == np.argmax(probs, axis=-1)[..., None]
    return sets | (empty & top)
