"""Conditional coverage: where marginal coverage holds on average but fails for a group of items.

Split conformal guarantees ``P(y in C(x)) >= 1 - alpha`` over all items, not within a group:
one MMLU subject, or the items whose right answer is option D, can be badly under-covered while
the average holds. For each *grouping* (the letter of the true answer, ``position``; the item's
subject or sub-source, ``subject``; the size of its set, ``size``) this module computes, per
split, each group's coverage, mean set size and test count, and two summaries over the groups
with enough items to judge:

* ``coverage_worst``: the lowest group coverage;
* ``coverage_gap``: the mean absolute deviation of group coverage from ``1 - alpha``, as TorchCP
  reports it (its ``CovGap``), in coverage units (0.05 = five points).

A group is *judged* when it is expected to hold at least :data:`MIN_GROUP_TEST` test items in a
split (``n_g * (1 - cal_fraction)``; with fewer, one item moves its coverage by five points or
more). For ``size`` the groups are the sets' own sizes, so the rule is applied per split to the
actual counts. Unjudged groups keep their rows (marked by their ``n``), they only stay out of
the summaries. Where no group is judged the summaries are NaN.

Conventions as in :mod:`surefast.conformal.metrics`: leading dims (splits, alphas) broadcast,
``codes [..., T]`` are the group indices of the test items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from surefast.conformal.metrics import bin_totals

MIN_GROUP_TEST = 20  # expected test items a group needs before its coverage is judged
NO_GROUP = "(none)"  # the group of items without a label in a partly labelled grouping


@dataclass(frozen=True)
class Grouping:
    """One way to group the ``N`` items: ``codes [N]`` index ``labels [G]``; ``judged [G]``."""

    name: str
    codes: np.ndarray
    labels: tuple[str, ...]
    judged: np.ndarray


def make_grouping(name: str, values: Sequence[str], cal_fraction: float) -> Grouping:
    """A grouping from one label per item (sorted labels; "" becomes :data:`NO_GROUP`)."""
    named = [v if v else NO_GROUP for v in values]
    labels = tuple(sorted(set(named)))
    index = {g: i for i, g in enumerate(labels)}
    codes = np.array([index[v] for v in named], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(labels))
    judged = counts * (1.0 - cal_fraction) >= MIN_GROUP_TEST - 1e-9
    return Grouping(name, codes, labels, judged)


def item_groupings(
    labels: np.ndarray, n_options: int, groups: Mapping[str, Sequence[str]] | None, cal_fraction: float
) -> tuple[Grouping, ...]:
    """``position`` (the true answer's letter) and every user grouping with more than one label."""
    letters = [chr(ord("A") + i) for i in range(n_options)]
    out = [make_grouping("position", [letters[y] for y in labels], cal_fraction)]
    for name, values in (groups or {}).items():
        if len(values) != len(labels):
            raise ValueError(f"groups[{name!r}] has {len(values)} labels for {len(labels)} items")
        if len({v or NO_GROUP for v in values}) > 1:
            out.append(make_grouping(name, values, cal_fraction))
    return tuple(out)


def group_metrics(
    covered: np.ndarray, sizes: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: coverage, mean set size and test count, each ``[..., G]`` (NaN where empty).

    ``covered [..., T]`` bool, ``sizes [..., T]``, ``codes [..., T]`` broadcast to one shape.
    """
    shape = np.broadcast_shapes(covered.shape, sizes.shape, codes.shape)
    idx = np.broadcast_to(codes, shape)
    count = bin_totals(idx, n_groups)
    hits = bin_totals(idx, n_groups, weights=np.broadcast_to(covered, shape))
    total = bin_totals(idx, n_groups, weights=np.broadcast_to(sizes, shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
        size = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return cov, size, count.astype(np.float64)


def worst_and_gap(
    coverage: np.ndarray, judged: np.ndarray, target: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """The lowest judged group coverage and the coverage gap ``[...]`` from ``coverage [..., G]``.

    ``judged`` ``[G]`` or ``[..., G]`` bool; ``target`` = ``1 - alpha`` broadcast to ``[...]``.
    Groups that are NaN in a split (no test item there) are left out of that split.
    """
    use = np.broadcast_to(judged, coverage.shape) & np.isfinite(coverage)
    any_ = use.any(axis=-1)
    worst = np.where(any_, np.where(use, coverage, np.inf).min(axis=-1), np.nan)
    dev = np.where(use, np.abs(coverage - np.asarray(target)[..., None]), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(any_, dev.sum(axis=-1) / np.maximum(use.sum(axis=-1), 1), np.nan)
    return worst, gap
