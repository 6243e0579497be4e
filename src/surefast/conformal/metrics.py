"""Metrics of one batch of predictions and prediction sets; pure numpy, batched.

Conventions: ``probs`` ``[..., N, K]``, ``labels`` ``[..., N]``, ``sets`` ``[..., N, K]`` bool;
leading dims (splits, alphas) broadcast and each metric reduces over the ``N`` items, returning
``[...]``. The predicted answer is ``argmax p`` (the lowest option index wins a tie, as in
``np.argmax`` and the reference code).
"""

from __future__ import annotations

import numpy as np

from surefast.conformal.scores import at_labels

IDK, NOTA = 4, 5  # option E "I don't know" and F "None of the above" (surefast.data.items)


def predicted(probs: np.ndarray) -> np.ndarray:
    """The model's answer per item, ``argmax p``: ``[..., N]``."""
    return np.argmax(probs, axis=-1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of items whose top-probability option is the right one."""
    return (predicted(probs) == labels).mean(axis=-1)


def answer_share(probs: np.ndarray, option: int) -> np.ndarray:
    """Share of items whose answer (argmax) is ``option``; e.g. E (``IDK``) or F (``NOTA``)."""
    return (predicted(probs) == option).mean(axis=-1)


def covered(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each item's set contains its true label: ``[..., N]`` bool."""
    return at_labels(sets, labels)


def coverage(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of items whose set contains the true label (an empty set never does)."""
    return covered(sets, labels).mean(axis=-1)


def mean_set_size(sets: np.ndarray) -> np.ndarray:
    """Average number of options per set (SS in Ye et al. 2024); empty sets count as 0."""
    return set_sizes(sets).mean(axis=-1)


def set_sizes(sets: np.ndarray) -> np.ndarray:
    """Number of options in each set: ``[..., N]``."""
    # A uint8 matmul with ones is ~4x faster than sum/count_nonzero over a short last axis.
    return np.asarray(sets, dtype=bool).view(np.uint8) @ np.ones(sets.shape[-1], dtype=np.uint8)


def set_size_histogram(sets: np.ndarray) -> np.ndarray:
    """Share of items with set size ``s`` for ``s = 0..K``: ``[..., K + 1]``, summing to 1."""
    sizes = set_sizes(sets)
    return bin_totals(sizes, sets.shape[-1] + 1) / sizes.shape[-1]


def coverage_by_set_size(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Coverage among the items whose set has size ``s``, ``s = 0..K``: ``[..., K + 1]``.

    NaN where no item has that size. Size 0 is 0 whenever defined; size K is 1.
    """
    sizes, n_bins = set_sizes(sets), sets.shape[-1] + 1
    count = bin_totals(sizes, n_bins)
    hits = bin_totals(sizes, n_bins, weights=covered(sets, labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def uacc(acc: np.ndarray | float, set_size: np.ndarray | float, n_options: int) -> np.ndarray:
    """Uncertainty-aware accuracy (Ye et al. 2024, "Benchmarking LLMs via Uncertainty Quantification").

    ``UAcc = Acc / SS * sqrt(|Y|)`` with ``Acc`` the accuracy, ``SS`` the mean set size and
    ``|Y|`` the number of options (6), as in the paper and its code (``cal_uacc`` in
    ``uncertainty_quantification_via_cp.py`` of smartyfh/LLM-Uncertainty-Bench). It rewards
    accuracy and penalises large sets. Range: with every set non-empty ``SS >= 1`` and
    ``UAcc`` lies in ``[0, sqrt(|Y|)]`` = ``[0, 2.449]``; empty sets (which the reference never
    produces: it puts the top option into them) can push ``SS`` below 1 and ``UAcc`` above
    ``sqrt(|Y|)``. NaN when ``SS = 0``.
    """
    ss = np.asarray(set_size, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss > 0, np.asarray(acc) * np.sqrt(n_options) / np.where(ss > 0, ss, 1.0), np.nan)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Top-label ECE with ``n_bins`` equal-width confidence bins (Guo et al., ICML 2017, eq. 3).

    Confidence is ``max p``; bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (a
    confidence of exactly 0 would go to the first bin; it cannot occur since ``max p >= 1/K``).
    ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` = ``sum_b |hits_b - conf_sum_b| / N``.
    """
    conf = probs.max(axis=-1)  # [..., N]
    hit = (predicted(probs) == labels).astype(np.float64)
    # Rounded before the ceiling so a confidence on an edge (0.7 * 10 = 7.000000000000001) stays in its bin.
    idx = np.clip(np.ceil(np.round(conf * n_bins, 9)).astype(np.int64) - 1, 0, n_bins - 1)
    gap = bin_totals(idx, n_bins, weights=hit - conf)  # [..., B]: hits_b - conf_sum_b
    return np.abs(gap).sum(axis=-1) / conf.shape[-1]


def bin_totals(idx: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per leading index, the count (or summed weight) of the ``N`` items in each bin.

    ``idx`` ``[..., N]`` in ``0..n_bins-1`` -> ``[..., n_bins]``; one ``bincount`` over offset bins
    instead of a one-hot ``[..., N, n_bins]`` array (ten times faster at benchmark sizes).
    """
    lead = idx.shape[:-1]
    b = int(np.prod(lead))
    flat = (np.arange(b)[:, None] * n_bins + idx.reshape(b, -1)).ravel()
    w = None if weights is None else np.broadcast_to(weights, idx.shape).reshape(-1).astype(np.float64)
    return np.bincount(flat, weights=w, minlength=b * n_bins).reshape(*lead, n_bins)
