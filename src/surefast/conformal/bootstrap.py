"""The item bootstrap behind every interval: how much a reported number moves with the items.

The reported value of a metric is its mean over ``R`` random calibration/test splits of the
``N`` scored items. Its uncertainty has two sources: which items were drawn from the task's
population, and how they were split. The split-to-split spread alone measures the second and
equals the first only at a 50/50 split: with a calibration share ``c`` the spread of a test-set
mean is ``c / (1 - c)`` times the item-sampling variance of the all-splits mean (accuracy, to
first order), so at ``c = 0.3`` an interval from the spread is about 0.65 of its true width.

A replicate ``b`` resamples the ``N`` items with replacement (``idx_b``, a pure function of
``N``, ``B`` and the seed) and recomputes the reported value on them: the mean over the *same*
``R`` splits, now of the positions of the resample (Efron's nonparametric bootstrap of the
estimator as it is, splits included). Two models scored on the same items with the same seed
get the same ``idx_b`` and splits, so per-replicate differences are a *paired* bootstrap of the
difference: ``1.96`` times their standard deviation is the half-width of a 95% interval that
covers both item sampling and the split, whatever the calibration share
(tests/conformal/test_bootstrap.py checks the false-positive rate under a population null).
Resampling puts some items in a replicate twice, possibly once on each side of a split; that is
what a resample from the empirical distribution is, and it is what makes the variance right.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from surefast.conformal.conditional import Grouping
from surefast.conformal.scores import ScoreConfig, tie_blocks
from surefast.conformal.splits import split_metrics

CHUNK_VALUES = 4_000_000  # test entries [splits, alphas, items, options] per core call: ~100 MB of temporaries


def bootstrap_items(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The resampled item indices of each replicate, ``[B, N]``, from a stream of their own."""
    return np.random.default_rng([seed, 2]).integers(0, n, size=(n_boot, n))


def bootstrap_metrics(
    p: np.ndarray,
    y: np.ndarray,
    configs: Sequence[ScoreConfig],
    alphas: tuple[float, ...],
    cal: np.ndarray,
    test: np.ndarray,
    u: np.ndarray | None,
    *,
    n_boot: int,
    seed: int,
    fill_empty: bool = False,
    groupings: Sequence[Grouping] = (),
    partitions: Sequence[Grouping] = (),
) -> np.ndarray:
    """Per replicate, the mean over the ``R`` splits of every metric: ``[S, A, B, M]``.

    ``cal`` ``[R, n_cal]`` and ``test`` ``[R, T]`` are the split *positions* (those of the plain
    evaluation), ``u`` ``[R, N]`` the draws of randomized scores by position (or None). A metric
    undefined in some splits (``coverage_at_size_s``) is averaged over the splits where it is
    defined, as the plain evaluation's summary does; NaN where it is never defined. ``groupings``
    and ``partitions`` are :func:`~surefast.conformal.splits.split_metrics`'s: a Mondrian score
    calibrates each replicate's splits per group of the resampled items.
    """
    n = len(y)
    n_splits = cal.shape[0]
    idx = bootstrap_items(n, n_boot, seed)  # [B, N]
    blocks = tie_blocks(p)
    u_cal = None if u is None else np.take_along_axis(u, cal, axis=1)  # [R, n_cal]
    u_test = None if u is None else np.take_along_axis(u, test, axis=1)
    per_replicate = max(1, n_splits * test.shape[1] * p.shape[1] * len(alphas))
    chunk = max(1, CHUNK_VALUES // per_replicate)
    parts = []
    for start in range(0, n_boot, chunk):
        sel = idx[start : start + chunk]  # [b, N]
        b = sel.shape[0]

        def tile(a: np.ndarray | None, b: int = b) -> np.ndarray | None:
            return None if a is None else np.broadcast_to(a, (b, *a.shape)).reshape(b * n_splits, -1)

        items_cal = sel[:, cal].reshape(b * n_splits, -1)  # [b * R, n_cal]: replicate b's items
        items_test = sel[:, test].reshape(b * n_splits, -1)
        values = split_metrics(
            p,
            y,
            configs,
            alphas,
            items_cal,
            items_test,
            tile(u_cal),
            tile(u_test),
            fill_empty=fill_empty,
            blocks=blocks,
            groupings=groupings,
            partitions=partitions,
        )
        values = values.reshape(*values.shape[:2], b, n_splits, values.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN slice: NaN is the answer
            parts.append(np.nanmean(values, axis=3))  # [S, A, b, M]
    return np.concatenate(parts, axis=2)
