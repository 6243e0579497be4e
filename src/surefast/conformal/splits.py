"""Repeated random calibration/test splits: the benchmark protocol, vectorised over splits.

The reference protocol (Ye et al. 2024) makes one 50/50 split. Coverage and set size change from
one random split to the next, so a single split cannot tell whether two compressed models
differ; we repeat the split ``R`` times (default 100) and report the spread.

For each split ``r``, score ``s`` and alpha ``a``: the items are permuted, the first
``floor(cal_fraction * N)`` calibrate (``qhat``) and the rest are tested. All splits are
computed at once as ``[R, ...]`` arrays (:func:`split_metrics`); the same core also evaluates
the item-bootstrap replicates of :mod:`surefast.conformal.bootstrap`, whose splits draw from a
resample of the items instead of the items themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surefast.conformal import conditional as C
from surefast.conformal import metrics as M
from surefast.conformal import selective as S
from surefast.conformal.calibrate import conformal_quantile, fill_empty_with_top, prediction_sets
from surefast.conformal.mondrian import MondrianConfig, mondrian_sets
from surefast.conformal.scores import ScoreArray, ScoreConfig, TieBlocks, at_labels, score_array, tie_blocks
from surefast.data.items import LETTERS
from surefast.errors import SurefastError

N_OPTIONS = len(LETTERS)  # six: A-D task content, E "I don't know", F "None of the above"
SELECTIVE_COVERAGES = (0.5, 0.8, 0.9)  # shares of the most confident items selective accuracy keeps
SELECTIVE_METRICS = (
    "auroc",
    *(f"selective_accuracy_{round(100 * c)}" for c in SELECTIVE_COVERAGES),
    "aurc",
    "brier",
    "nll",
)
SCALAR_METRICS = ("accuracy", "coverage", "mean_set_size", "uacc", "ece", "e_share", "f_share", *SELECTIVE_METRICS)
GROUP_SUMMARIES = ("coverage_worst", "coverage_gap")  # per grouping, over its judged groups (conditional.py)


def metric_names(n_options: int = N_OPTIONS, groupings: Sequence[tuple[str, Sequence[str]]] = ()) -> tuple[str, ...]:
    """The metrics of :func:`split_metrics` in order: scalars, the size histogram and size-stratified
    coverage (sizes ``0..K``) with their summaries (``@size``), then per grouping ``(name, labels)``
    its summaries and per group ``coverage@name=label``, ``set_size@name=label`` and ``n@name=label``
    (test items)."""
    sizes = range(n_options + 1)
    names = [
        *SCALAR_METRICS,
        *(f"set_size_hist_{s}" for s in sizes),
        *(f"coverage_at_size_{s}" for s in sizes),
        *(f"{m}@size" for m in GROUP_SUMMARIES),
    ]
    for name, labels in groupings:
        names += [f"{m}@{name}" for m in GROUP_SUMMARIES]
        names += [f"{m}@{name}={label}" for label in labels for m in ("coverage", "set_size", "n")]
    return tuple(names)


def is_scalar(metric: str) -> bool:
    """Whether a metric is one number per split with item-bootstrap replicates stored beside it."""
    return metric in SCALAR_METRICS or metric.split("@")[0] in GROUP_SUMMARIES


METRICS = metric_names(N_OPTIONS, [("position", LETTERS)])  # of six options without user groupings


def split_indices(n: int, n_splits: int, cal_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``R`` independent uniformly random splits: calibration ``[R, n_cal]`` and test ``[R, n - n_cal]``.

    ``n_cal = floor(cal_fraction * n)`` (as sklearn's ``train_test_split``, which the reference
    uses). Split ``r`` depends only on ``(n, n_splits, cal_fraction, seed)``, not on the scores or
    alphas asked for, so two models evaluated with the same seed on the same items see the same
    splits and their per-split metrics can be compared pairwise.
    """
    if not 0.0 < cal_fraction < 1.0:
        raise SurefastError(f"cal_fraction must lie strictly between 0 and 1, got {cal_fraction}")
    if n_splits < 1:
        raise SurefastError(f"n_splits must be >= 1, got {n_splits}")
    n_cal = int(np.floor(cal_fraction * n + 1e-9))
    if n_cal < 1 or n_cal >= n:
        raise SurefastError(f"{n} items with cal_fraction={cal_fraction} leave no calibration or no test item")
    perm = np.argsort(np.random.default_rng(seed).random((n_splits, n)), axis=1)  # [R, N]
    return perm[:, :n_cal], perm[:, n_cal:]


def split_uniforms(n: int, n_splits: int, seed: int) -> np.ndarray:
    """The ``U(0, 1)`` draws of randomized scores, one per item and split: ``[R, N]``.

    From a stream of their own, so asking for a randomized score never moves the splits.
    """
    return np.random.default_rng([seed, 1]).random((n_splits, n))


def _gather(blocks: TieBlocks, items: np.ndarray) -> TieBlocks:
    """Every field of ``blocks`` ``[N, K]`` at ``items`` ``[...]`` -> ``[..., K]``."""
    return TieBlocks(**{name: getattr(blocks, name)[items] for name in blocks.__dataclass_fields__})


def _cal_and_test_scores(
    config: ScoreConfig,
    blocks: TieBlocks,
    fixed: ScoreArray | None,
    y: np.ndarray,
    cal: np.ndarray,
    test: np.ndarray,
    u_cal: np.ndarray | None,
    u_test: np.ndarray | None,
) -> tuple[ScoreArray, ScoreArray]:
    """Calibration scores ``[R, n_cal]`` (true labels) and test scores ``[R, T, K]``."""
    if fixed is not None:  # deterministic: one computation per item serves every split
        return at_labels(fixed, y)[cal], fixed[test]
    # Randomized: each (split, position) has its own draw, so the scores are formed per split
    # from the items' tie blocks (sums over labels, computed once) and the draws.
    cal_scores = score_array(config, _gather(blocks, cal), u_cal)  # [R, n_cal, K]
    return at_labels(cal_scores, y[cal]), score_array(config, _gather(blocks, test), u_test)


def split_metrics(
    p: np.ndarray,
    y: np.ndarray,
    configs: Sequence[ScoreConfig],
    alphas: tuple[float, ...],
    cal: np.ndarray,
    test: np.ndarray,
    u_cal: np.ndarray | None,
    u_test: np.ndarray | None,
    *,
    fill_empty: bool = False,
    blocks: TieBlocks | None = None,
    groupings: Sequence[C.Grouping] = (),
    partitions: Sequence[C.Grouping] = (),
) -> np.ndarray:
    """Every metric of every split: ``[S, A, R, M]`` (M = :func:`metric_names` of ``K`` and ``groupings``).

    ``p`` ``[N, K]`` are checked probabilities, ``y`` ``[N]`` labels; ``cal`` ``[R, n_cal]`` and
    ``test`` ``[R, T]`` are the *item indices* of each split (a bootstrap replicate's splits index
    its resampled items, so an item may appear more than once). ``u_cal``/``u_test`` are the
    uniform draws of randomized scores at those places (None when no score is randomized).
    ``blocks`` may pass ``tie_blocks(p)`` when the caller computes it once for many calls.
    ``groupings`` (:mod:`surefast.conformal.conditional`) add conditional coverage; ``partitions``
    are the groupings Mondrian scores calibrate by (:func:`~surefast.conformal.mondrian.mondrian_partitions`).
    """
    blocks = tie_blocks(p) if blocks is None else blocks
    k = p.shape[1]
    p_test, y_test = p[test], y[test]  # [R, T, K], [R, T]
    # Split-only metrics: the same for every score and alpha.
    pred = M.predicted(p_test)  # [R, T]; once: the argmax is the costliest reduction here
    acc = (pred == y_test).mean(axis=-1)  # [R], = M.accuracy
    nan = np.full(acc.shape, np.nan)
    split_only = {
        "accuracy": acc,
        "ece": M.expected_calibration_error(p_test, y_test),
        # E and F exist only in surefast's six-option form (an imported task has its own options)
        "e_share": (pred == M.IDK).mean(axis=-1) if k == N_OPTIONS else nan,
        "f_share": (pred == M.NOTA).mean(axis=-1) if k == N_OPTIONS else nan,
        **_selective(p_test, y_test),
    }
    names = metric_names(k, [(g.name, g.labels) for g in groupings])
    out = np.empty((len(configs), len(alphas), cal.shape[0], len(names)))
    target = 1.0 - np.asarray(alphas)[None, :]  # [1, A]
    for i, cfg in enumerate(configs):
        fixed = None if cfg.randomized else score_array(cfg, blocks)
        cal_s, test_s = _cal_and_test_scores(cfg, blocks, fixed, y, cal, test, u_cal, u_test)
        if isinstance(cfg, MondrianConfig):  # one threshold per group (mondrian.py)
            sets = mondrian_sets(cfg, cal_s, test_s, alphas, y, cal, test, partitions)  # [R, A, T, K]
        else:
            qhat = conformal_quantile(cal_s, alphas)  # [R, A]
            sets = prediction_sets(test_s.map(lambda a: a[:, None]), qhat)  # [R, A, T, K]
        if fill_empty:
            sets = fill_empty_with_top(sets, p_test[:, None])
        yt = y_test[:, None]  # [R, 1, T]
        size = M.mean_set_size(sets)  # [R, A]
        per = {
            **{m: np.broadcast_to(v[:, None], size.shape) for m, v in split_only.items()},
            "coverage": M.coverage(sets, yt),
            "mean_set_size": size,
            "uacc": M.uacc(acc[:, None], size, k),
        }
        covered, sizes = M.covered(sets, yt), M.set_sizes(sets)  # [R, A, T]
        by_size = M.coverage_by_set_size(sets, yt)  # [R, A, K + 1]
        size_counts = M.set_size_histogram(sets) * sets.shape[-2]
        parts = [
            np.stack([per[m] for m in SCALAR_METRICS], axis=-1),
            M.set_size_histogram(sets),
            by_size,
            np.stack(C.worst_and_gap(by_size, size_counts >= C.MIN_GROUP_TEST, target), axis=-1),
        ]
        for g in groupings:
            cov, gsize, n = C.group_metrics(covered, sizes, g.codes[test][:, None], len(g.labels))  # [R, A, G]
            parts.append(np.stack(C.worst_and_gap(cov, g.judged, target), axis=-1))
            parts.append(np.stack([cov, gsize, n], axis=-1).reshape(*cov.shape[:2], -1))  # per label: cov, size, n
        out[i] = np.concatenate(parts, axis=-1).transpose(1, 0, 2)  # [A, R, M]
    return out


def _selective(p_test: np.ndarray, y_test: np.ndarray) -> dict[str, np.ndarray]:
    """Error detection and selective prediction per split (:mod:`surefast.conformal.selective`)."""
    return S.selective_metrics(p_test, y_test, SELECTIVE_COVERAGES)
