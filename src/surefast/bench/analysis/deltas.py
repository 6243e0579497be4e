"""Deltas of a compressed cell against the uncompressed cell of the same model and task.

Two cells pair only when they saw the same items, seed and split settings (equal protocols, and
the same number of splits): then split ``r`` of one is split ``r`` of the other and replicate
``b`` the same resample. Cells that do not pair are never compared (no fallback to a formula for
independent samples: the split-to-split spread is not the standard error of anything a user
asks about); :func:`pairing_problem` says why, for the report to list.

The interval of a delta is ``value +- 1.96 * sd`` of the per-replicate paired differences of the
item bootstrap: it covers item sampling and the split. Results without a bootstrap (stored before
it existed) fall back to the 2.5-97.5 percentiles of the per-split paired differences, which
cover the split only and match the item-sampling uncertainty only at a 50/50 split;
``Delta.variance`` says which an interval is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surefast.bench.analysis.cells import MIXED, Cell, CellKey, Cells
from surefast.errors import SurefastError

ITEMS = "items and splits"  # what a bootstrap interval covers
SPLITS_ONLY = "splits only"
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Delta:
    key: CellKey
    metric: str
    value: float  # mean over splits of (compressed - baseline)
    ci_low: float  # 95% interval (see ``variance``)
    ci_high: float
    baseline: float  # the baseline's mean
    variance: str = ITEMS  # what the interval covers: ITEMS or SPLITS_ONLY

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def pairing_problem(compressed: Cell, baseline: Cell, metric: str) -> str | None:
    """Why two cells' values of ``metric`` cannot be paired, or None when they can."""
    if MIXED in (compressed.protocol, baseline.protocol):
        return "its rows come from runs with different items or split settings"
    if compressed.protocol != baseline.protocol:
        return "they were evaluated on different items or with different seeds or split settings"
    if compressed[metric].shape != baseline[metric].shape:
        return f"they have different numbers of splits ({len(compressed[metric])} and {len(baseline[metric])})"
    return None


def paired_delta(compressed: Cell, baseline: Cell, metric: str) -> tuple[float, float, float, str]:
    """Mean paired difference and its 95% interval, and what the interval covers."""
    problem = pairing_problem(compressed, baseline, metric)
    if problem:
        raise SurefastError(f"cannot compare these cells on {metric}: {problem}")
    diff = compressed[metric] - baseline[metric]
    value = float(diff.mean())
    a, b = compressed.boot.get(metric), baseline.boot.get(metric)
    if a is not None and b is not None and a.shape == b.shape and a.size > 1:
        half = Z95 * float(np.std(a - b, ddof=1))
        return value, value - half, value + half, ITEMS
    lo, hi = np.percentile(diff, [2.5, 97.5]) if diff.size > 1 else (diff[0], diff[0])
    return value, float(lo), float(hi), SPLITS_ONLY


def deltas(
    cells: Cells, metrics: tuple[str, ...] = ("accuracy", "coverage", "mean_set_size"), baseline: str = ""
) -> list[Delta]:
    """Every compressed cell against its model's ``baseline`` compression on the same task.

    Pairs that cannot be compared (:func:`unpaired`) are left out.
    """
    out = []
    for key, base, metric in _pairs(cells, metrics, baseline):
        if pairing_problem(cells[key], base, metric) is None:
            value, lo, hi, variance = paired_delta(cells[key], base, metric)
            out.append(Delta(key, metric, value, lo, hi, float(base[metric].mean()), variance))
    return out


def unpaired(
    cells: Cells, metrics: tuple[str, ...] = ("accuracy", "coverage", "mean_set_size"), baseline: str = ""
) -> dict[CellKey, str]:
    """The compressed cells :func:`deltas` leaves out, each with the reason."""
    out: dict[CellKey, str] = {}
    for key, base, metric in _pairs(cells, metrics, baseline):
        problem = pairing_problem(cells[key], base, metric)
        if problem is not None:
            out.setdefault(key, problem)
    return out


def _pairs(cells: Cells, metrics: tuple[str, ...], baseline: str) -> list[tuple[CellKey, Cell, str]]:
    out = []
    for key, values in sorted(cells.items()):
        base = cells.get(CellKey(key.model, baseline, key.task))
        if key.compression == baseline or base is None:
            continue
        out += [(key, base, m) for m in metrics if m in values and m in base]
    return out
