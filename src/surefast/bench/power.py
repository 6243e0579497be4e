"""Power of a study: the smallest change it can detect, and how many items a named change needs.

A compressed cell is compared with its dense baseline by a paired difference
(:mod:`surefast.bench.analysis.deltas`), called significant when its 95% interval
``value +- 1.96 SE`` excludes zero: a two-sided test at level ``alpha = 0.05``. The *minimum
detectable effect* at power ``1 - beta`` is the true change that test finds with probability
``1 - beta`` (normal approximation; the wrong-sign tail adds ``Phi(-4.76)``, about 1e-6):

    MDE(n) = (z_{1 - alpha/2} + z_{1 - beta}) * SE(n) = (1.960 + 0.842) * SE(n) = 2.80 * SE(n)
    SE(n)  = sd_item / sqrt(n)
    n(delta) = ceil(n0 * (MDE(n0) / delta)^2) = ceil(((z_{1 - alpha/2} + z_{1 - beta}) * sd_item / delta)^2)

``sd_item`` is the per-item standard deviation of the paired (compressed - dense) difference of
the *reported* value, i.e. of the mean over the random splits of test-set means. It comes from:

* **a stored run** (the plan's own, or a pilot): each paired delta's item-bootstrap interval is
  ``+- 1.96 SE0`` at the run's ``n0`` items per task, so ``sd_item = SE0 * sqrt(n0)``. The
  bootstrap resamples items and re-splits them, so this covers item sampling, the split and, for
  set size, the calibration quantile. It scales as ``1 / sqrt(n)`` at a fixed calibration share
  (a quantile's variance is ``O(1/n)`` too) and the same number of splits (their share of the
  variance, ``c / ((1 - c) R)`` of it, is the pilot's). Per-task deltas of every compressed
  cell are pooled as the root mean square of their ``sd_item`` (the typical cell; the range is
  reported beside it); cells identical to their baseline (``SE0 = 0``) say nothing about a change and are left
  out, and so are deltas without a bootstrap (their percentile interval covers the split only).
  ``n0`` is the run's requested items per task: a task with fewer items (or with items left out
  as too long) makes ``sd_item`` a little too large, i.e. the plan a little conservative.
* **stated defaults**, when no run is at hand:

  - accuracy: per item the paired difference is +1, -1 or 0, of variance ``d - delta^2`` with
    ``d`` the share of *discordant* items (right under one model, wrong under the other). Each
    item is a test item in a share ``1 - c`` of the splits, so over many splits the reported
    accuracy is close to the all-items accuracy (accuracy does not depend on the calibration
    half; ``R`` splits add about ``c / ((1 - c) R)`` to its variance, 1% at 100 splits and
    ``c = 1/2``), and
    ``sd_item = sqrt(d)`` (the null variance: ``d - delta^2`` is smaller under a change, so this
    errs towards more items). :data:`DEFAULT_DISCORDANCE` ``d = 0.25``;
  - set size: :data:`DEFAULT_SET_SIZE_SD` = 1.0 option per item.

  Both come from the demo study in docs/study.md (qwen2.5-coder-0.5b-instruct, MMLU, n = 80):
  its ten compressed cells' intervals give ``d`` from 0.03 (Wanda 10%) to 0.35 (RTN W4A4),
  median 0.2, and set-size ``sd_item`` from 0.2 to 1.05 option, with one outlier at 2.9 (RTN
  W4A4, which grew the sets by a whole option). The defaults sit above the medians: they
  overstate the items a mild compression of a strong model needs, and understate them only for
  the most disruptive ones. A pilot run replaces them with what was measured.

A cell averaged over ``T`` tasks is the mean of ``T`` task means of ``n`` items each; with
independent items and one ``sd_item`` for every task it has the variance of a mean over
``n * T`` items, and that is how it is treated (its items per task are ``ceil(n(delta) / T)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from surefast.bench.analysis.cells import ALL_TASKS
from surefast.bench.analysis.deltas import ITEMS, Z95, Delta
from surefast.errors import SurefastError
from surefast.registry import suggestion

METRICS = ("accuracy", "mean_set_size")
DEFAULT_DISCORDANCE = 0.25  # share of items one model gets right and the other wrong (see the module docstring)
DEFAULT_SET_SIZE_SD = 1.0  # options: per-item sd of the paired set-size difference (see the module docstring)
N_OPTIONS = 6  # the largest possible set-size change
DETECT_NAMES = {"acc": "accuracy", "set_size": "mean_set_size"}  # --detect names -> metrics
SCALE = {"accuracy": 100.0, "mean_set_size": 1.0}  # shown units: accuracy points, set-size options
UNIT = {"accuracy": "points", "mean_set_size": "options"}


@dataclass(frozen=True)
class PowerConfig:
    """The test a change must pass (two-sided, as the 95% intervals) and the power asked of it."""

    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self) -> None:
        for name, value in (("alpha", self.alpha), ("power", self.power)):
            if not 0 < value < 1:
                raise SurefastError(f"power: {name}={value!r} is not a share in (0, 1)")

    @property
    def z(self) -> float:
        """``z_{1 - alpha/2} + z_{power}``: 2.80 at the defaults."""
        normal = NormalDist()
        return normal.inv_cdf(1 - self.alpha / 2) + normal.inv_cdf(self.power)


@dataclass(frozen=True)
class ItemSD:
    """Per-item sd of the paired (compressed - dense) difference of one metric (accuracy as a share)."""

    metric: str
    sd: float
    measured: bool = False  # False: the stated default
    n_cells: int = 0  # measured: how many per-task deltas were pooled
    low: float = math.nan  # measured: the smallest and largest of them
    high: float = math.nan


@dataclass(frozen=True)
class Variance:
    """Where a plan's ``sd_item`` come from, and their values per metric."""

    source: str  # in words: "stated defaults" or "run <id> (<n0> items per task)"
    sds: Mapping[str, ItemSD] = field(default_factory=dict)

    def sd(self, metric: str) -> float:
        return self.sds[metric].sd


def default_variance() -> Variance:
    """The stated defaults: ``sqrt(DEFAULT_DISCORDANCE)`` for accuracy, 1.0 option for set size."""
    return Variance(
        "stated defaults",
        {
            "accuracy": ItemSD("accuracy", math.sqrt(DEFAULT_DISCORDANCE)),
            "mean_set_size": ItemSD("mean_set_size", DEFAULT_SET_SIZE_SD),
        },
    )


def se_of(delta: Delta) -> float:
    """The standard error behind a delta's 95% interval: ``(ci_high - ci_low) / (2 * 1.96)``."""
    return (delta.ci_high - delta.ci_low) / (2 * Z95)


def mde_of(delta: Delta, config: PowerConfig = PowerConfig()) -> float:
    """The smallest change this delta's own run could detect: ``(1.96 + 0.84) * SE`` (the measured variance)."""
    return config.z * se_of(delta)


def mde(sd_item: float, n_items: int, config: PowerConfig = PowerConfig()) -> float:
    """``(z_{1 - alpha/2} + z_{power}) * sd_item / sqrt(n_items)``."""
    if n_items < 1:
        raise SurefastError(f"power: n_items={n_items} must be at least 1")
    return config.z * sd_item / math.sqrt(n_items)


def items_needed(sd_item: float, change: float, config: PowerConfig = PowerConfig()) -> int:
    """The fewest items at which ``mde`` is at most ``|change|``: ``ceil((z * sd_item / change)^2)``."""
    if not change or not math.isfinite(change):
        raise SurefastError(f"power: the change to detect must be a non-zero number, got {change!r}")
    exact = (config.z * sd_item / abs(change)) ** 2
    return max(1, math.ceil(exact * (1 - 1e-12)))  # an exact integer stays itself despite float rounding


def measured_variance(ds: Iterable[Delta], n0: int, source: str) -> Variance | None:
    """``sd_item = SE0 * sqrt(n0)`` pooled over the per-task deltas with a bootstrap; None if a metric has none."""
    per: dict[str, list[float]] = {m: [] for m in METRICS}
    for d in ds:
        if d.metric in per and d.key.task != ALL_TASKS and d.variance == ITEMS and se_of(d) > 0:
            per[d.metric].append(se_of(d) * math.sqrt(n0))
    if not all(per.values()):
        return None
    sds = {
        m: ItemSD(m, float(np.sqrt(np.mean(np.square(v)))), True, len(v), float(min(v)), float(max(v)))
        for m, v in per.items()
    }
    return Variance(source, sds)


@dataclass(frozen=True)
class MDERow:
    """The smallest detectable change of one kind of cell: one task's, or the average over tasks."""

    cell: str  # "one task" or "average over T tasks"
    items: int  # items behind the cell's value
    mde: Mapping[str, float]  # metric -> MDE (accuracy as a share)


@dataclass(frozen=True)
class Need:
    """The items per task a named change needs, for one task's cell and for the task average."""

    metric: str
    change: float  # accuracy as a share
    one_task: int
    average: int  # per task, with the plan's tasks averaged


@dataclass(frozen=True)
class PowerPlan:
    n: int  # items per task, planned
    n_tasks: int
    variance: Variance
    config: PowerConfig
    rows: tuple[MDERow, ...]
    needs: tuple[Need, ...]


def power_plan(
    n: int,
    n_tasks: int,
    variance: Variance,
    detect: Mapping[str, float] | None = None,
    config: PowerConfig = PowerConfig(),
) -> PowerPlan:
    """MDE per metric at ``n`` items per task (one task, and ``n * n_tasks`` for the task average),
    and for each change in ``detect`` (metric -> change, accuracy as a share) the items it needs."""
    rows = [MDERow("one task", n, {m: mde(variance.sd(m), n, config) for m in METRICS})]
    if n_tasks > 1:
        total = n * n_tasks
        rows.append(
            MDERow(f"average over {n_tasks} tasks", total, {m: mde(variance.sd(m), total, config) for m in METRICS})
        )
    needs = []
    for metric, change in (detect or {}).items():
        one = items_needed(variance.sd(metric), change, config)
        needs.append(Need(metric, abs(change), one, math.ceil(one / n_tasks)))
    return PowerPlan(n, n_tasks, variance, config, tuple(rows), tuple(needs))


def parse_detect(text: str, flag: str = "--detect") -> dict[str, float]:
    """``"acc=2,set_size=0.2"`` -> ``{"accuracy": 0.02, "mean_set_size": 0.2}`` (accuracy in points).

    Signs are dropped (the test is two-sided); every bad form is one SurefastError naming ``flag``.
    """
    out: dict[str, float] = {}
    example = "e.g. acc=2,set_size=0.2 (accuracy in points, set size in options)"
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise SurefastError(f"{flag}: give metric=change", example)
    for part in parts:
        name, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not name or not value:
            raise SurefastError(f"{flag}: {part!r} is not metric=change", example)
        if name not in DETECT_NAMES:
            names = list(DETECT_NAMES)
            hint = suggestion(name, names, otherwise=example)
            raise SurefastError(f"{flag}: unknown metric {name!r}; choose {' or '.join(names)}", hint)
        metric = DETECT_NAMES[name]
        if metric in out:
            raise SurefastError(f"{flag}: {name} is given twice")
        try:
            number = abs(float(value))
        except ValueError:
            raise SurefastError(f"{flag}: {name}={value!r} is not a number", example) from None
        limit = 100.0 if metric == "accuracy" else float(N_OPTIONS)
        if not 0 < number <= limit:
            raise SurefastError(f"{flag}: {name}={value} must be above 0 and at most {limit:g} {UNIT[metric]}")
        out[metric] = number / SCALE[metric]
    return out


def variance_of_rows(rows: Iterable[Mapping[str, Any]], n0: int, source: str) -> Variance | None:
    """:func:`measured_variance` of a run's tidy rows at the alpha nearest 0.1 (the report's choice)."""
    from surefast.bench.analysis import cells_from_rows, deltas

    rows = list(rows)
    if not rows:
        return None
    alpha = min({float(r["alpha"]) for r in rows}, key=lambda a: abs(a - 0.1))
    return measured_variance(deltas(cells_from_rows(rows, alpha=alpha)), n0, source)
