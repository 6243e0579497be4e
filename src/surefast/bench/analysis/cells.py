"""From tidy rows to cells: one (model, compression, task) with per-split and per-replicate metric vectors.

A cell averages over prompt strategies and conformal score functions at one alpha, as the
reference benchmark reports (Tong et al. 2026; Ye et al. 2024): for each split r, the value is
the mean over (strategy, score_fn) of that split's metric; likewise for each item-bootstrap
replicate b (:mod:`surefast.conformal.bootstrap`). Keeping the vectors, not only their means, is
what lets a delta between two cells be called significant: two cells with the same *protocol*
(the same items, seed and split settings) saw the same splits and the same resamples, so their
differences pair index by index.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

ALL_TASKS = "avg"  # the task name of the cell averaged over tasks
MIXED = "mixed"  # the protocol of a cell whose rows came from runs with different protocols


class CellKey(NamedTuple):
    model: str
    compression: str  # "" = uncompressed
    task: str


class Cell(dict[str, np.ndarray]):
    """metric -> per-split values ``[R]`` (the point estimate is their mean), plus

    * ``boot``: metric -> per-replicate values ``[B]`` of the item bootstrap (empty for results
      stored before the bootstrap existed, or run with ``n_boot = 0``);
    * ``protocol``: what pairs this cell with another ("" when unknown: rows stored before
      schema version 2; :data:`MIXED` when its rows disagree);
    * ``n_options``: the options of the cell's task, read off its set-size histogram rows (None:
      none stored; the task average has none of its own).
    """

    def __init__(
        self,
        splits: Mapping[str, np.ndarray],
        boot: Mapping[str, np.ndarray] | None = None,
        protocol: str = "",
        n_options: int | None = None,
    ) -> None:
        super().__init__(splits)
        self.boot: dict[str, np.ndarray] = dict(boot or {})
        self.protocol = protocol
        self.n_options = n_options


Cells = dict[CellKey, Cell]
HIST = "set_size_hist_"  # set_size_hist_0 .. set_size_hist_K: one per possible set size


def _vectors(by_index: dict[int, list[float]]) -> np.ndarray:
    return np.array([np.mean(by_index[i]) for i in sorted(by_index)])


def cells_from_rows(
    rows: Iterable[Mapping[str, Any]],
    alpha: float = 0.1,
    metrics: tuple[str, ...] = ("accuracy", "coverage", "mean_set_size"),
) -> Cells:
    """Group tidy rows into cells; adds an ``avg`` task per (model, compression) over its tasks.

    Rows without ``resampling`` count as split rows and rows without ``protocol`` as protocol
    "" (both columns came with schema version 2).
    """
    acc: dict[tuple[CellKey, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    # Per (strategy, score_fn) of a cell: the protocols its rows carry. Strategies may differ (a
    # longer prompt can leave out an over-long item); one unit's rows must not.
    protocols: dict[CellKey, dict[tuple[str, str], set[str]]] = defaultdict(lambda: defaultdict(set))
    options: dict[CellKey, int] = {}  # the largest set size a histogram row names: the task's K
    for row in rows:
        key = CellKey(row["model"], row.get("compression") or "", row["task"])
        size = str(row["metric"]).removeprefix(HIST)
        if size != row["metric"] and size.isdigit():
            options[key] = max(options.get(key, 0), int(size))
        if row["metric"] not in metrics or abs(float(row["alpha"]) - alpha) > 1e-12:
            continue
        kind = row.get("resampling") or "splits"
        acc[(key, kind, row["metric"])][int(row["split"])].append(float(row["value"]))
        protocols[key][(str(row.get("strategy")), str(row.get("score_fn")))].add(row.get("protocol") or "")
    splits: dict[CellKey, dict[str, np.ndarray]] = defaultdict(dict)
    boot: dict[CellKey, dict[str, np.ndarray]] = defaultdict(dict)
    for (key, kind, metric), by_index in acc.items():
        (boot if kind == "bootstrap" else splits)[key][metric] = _vectors(by_index)
    cells: Cells = {}
    for key, values in splits.items():
        cells[key] = Cell(values, boot.get(key), _protocol_of(protocols[key]), options.get(key))
    per_group: dict[tuple[str, str], list[CellKey]] = defaultdict(list)
    for key in list(cells):
        per_group[(key.model, key.compression)].append(key)
    for (model, compression), keys in per_group.items():
        average = _average([cells[k] for k in sorted(keys)])
        if average is not None:
            cells[CellKey(model, compression, ALL_TASKS)] = average
    return cells


def _protocol_of(units: dict[tuple[str, str], set[str]]) -> str:
    """One cell's protocol from its units': MIXED when a unit's rows disagree (runs that scored
    it differently were combined), "" when none is known, else a hash of them all."""
    if any(len(seen) > 1 for seen in units.values()):
        return MIXED
    parts = {unit: next(iter(seen)) for unit, seen in units.items()}
    if set(parts.values()) <= {""}:
        return ""
    if len(set(parts.values())) == 1:
        return next(iter(parts.values()))
    return _hash([f"{s}/{f}={p}" for (s, f), p in sorted(parts.items())])


def _average(tasks: list[Cell]) -> Cell | None:
    """The cell averaged over tasks, index by index; None when the tasks' split counts differ.

    Tasks have items of their own, so their replicates are independent resamples and the
    average of replicate b over tasks is a replicate of the average. The bootstrap is kept
    only when every task has one of the same size.
    """
    common = set.intersection(*(set(c) for c in tasks))
    if len({len(c[m]) for c in tasks for m in common}) != 1:
        return None
    splits = {m: np.mean([c[m] for c in tasks], axis=0) for m in sorted(common)}
    boot_common = set.intersection(*(set(c.boot) for c in tasks))
    boot = {}
    if len({len(c.boot[m]) for c in tasks for m in boot_common}) == 1:
        boot = {m: np.mean([c.boot[m] for c in tasks], axis=0) for m in sorted(boot_common)}
    parts = [c.protocol for c in tasks]
    protocol = MIXED if MIXED in parts else "" if "" in parts else "avg-" + _hash(parts)
    return Cell(splits, boot, protocol)


def _hash(parts: list[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
