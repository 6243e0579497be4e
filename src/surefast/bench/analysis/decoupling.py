"""Where accuracy and uncertainty part ways under compression.

Two kinds of decoupled cells (Tong et al. 2026 report both):

* *hidden inflation*: accuracy holds (|delta accuracy| below ``hold_tol``; a large drop that is
  merely not significant, as with few items, is not "holding") while the prediction set grows
  significantly by more than ``size_tol`` options: the model answers as often right but knows
  less well when it might be wrong;
* *silent degradation*: accuracy falls significantly by more than ``acc_tol`` while the set
  size does not grow significantly: uncertainty fails to warn of the loss.

Across the per-task cells (the task averages would count every cell twice), the Pearson and
Spearman correlation of delta accuracy with delta set size says how far accuracy alone predicts
the uncertainty change (a weak correlation = decoupled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from surefast.bench.analysis.cells import ALL_TASKS, CellKey
from surefast.bench.analysis.deltas import Delta


@dataclass(frozen=True)
class Decoupling:
    hidden_inflation: list[CellKey]
    silent_degradation: list[CellKey]
    pearson: float  # NaN with fewer than 3 cells or no variance
    spearman: float
    n_cells: int


def decoupling(deltas: list[Delta], acc_tol: float = 0.01, size_tol: float = 0.1, hold_tol: float = 0.02) -> Decoupling:
    """Classify cells from their accuracy and set-size deltas (``deltas`` of both metrics)."""
    by_key: dict[CellKey, dict[str, Delta]] = {}
    for d in deltas:
        by_key.setdefault(d.key, {})[d.metric] = d
    pairs = {
        k: (v["accuracy"], v["mean_set_size"]) for k, v in by_key.items() if {"accuracy", "mean_set_size"} <= set(v)
    }
    hidden, silent = [], []
    for key, (acc, size) in sorted(pairs.items()):
        acc_holds = abs(acc.value) < hold_tol
        if acc_holds and size.significant and size.value > size_tol:
            hidden.append(key)
        if acc.significant and acc.value < -acc_tol and not (size.significant and size.value > 0):
            silent.append(key)
    per_task = [v for k, v in pairs.items() if k.task != ALL_TASKS] or list(pairs.values())
    x = np.array([a.value for a, _ in per_task])
    y = np.array([s.value for _, s in per_task])
    pearson = spearman = float("nan")
    if len(x) >= 3 and x.std() > 0 and y.std() > 0:
        pearson = float(stats.pearsonr(x, y).statistic)
        spearman = float(stats.spearmanr(x, y).statistic)
    return Decoupling(hidden, silent, pearson, spearman, len(per_task))
