"""The reference paper's three findings, each tested and answered: reproduced, refuted or undetermined.

(I)   *Compression decouples accuracy from uncertainty*: some compressed cell keeps its accuracy
      while its prediction sets grow (hidden inflation), or loses accuracy while its sets do not
      grow (silent degradation); :mod:`.decoupling` finds them. A study screens every cell, so
      the changed metric must stay significant after Holm's correction over all the cells'
      accuracy and set-size tests (:mod:`.holm`) for the finding to count as reproduced.
(II)  *Larger models absorb compression-induced uncertainty better*: under one compression, the
      set-size increase of the smaller model of a family exceeds the larger one's. Tested as a
      difference of paired differences, ``(c_s - d_s) - (c_l - d_l)`` (c compressed, d dense,
      s small, l large), per compression and pooled over compressions. Cells with equal protocols
      saw the same items and the same item-bootstrap resamples, so replicate ``b`` of all four
      cells pairs, and the interval is ``+- 1.96 sd`` of the replicate-wise difference.
(III) *The inflation is threshold-like, not gradual*: along a sweep (dense = level 0) the set size
      follows a hinge, ``y = a + b x + c max(x - x_c, 0)``: ``c`` is the rise in slope at the
      changepoint ``x_c``. Threshold-like when ``c > 0`` significantly; gradual when the growth is
      significant and ``c``'s upper bound is below the slope before the changepoint (the slope at
      most doubles). The changepoint's interval is the 2.5-97.5 percentile range of the best hinge
      refitted on each bootstrap replicate of the curve.

A test that finds nothing says what it could have found: the minimum detectable effect,
``(z_0.975 + z_0.8) * SE`` (:func:`surefast.bench.power.mde_of`'s rule), beside every verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from surefast.bench.analysis.cells import ALL_TASKS, CellKey, Cells
from surefast.bench.analysis.decoupling import Decoupling
from surefast.bench.analysis.deltas import Z95, Delta
from surefast.bench.analysis.holm import DECOUPLING_METRICS, adjusted_p_values
from surefast.bench.analysis.thresholds import best_hinge, sweep_jump

Z80 = 0.8416212335729143
REPRODUCED, REFUTED, UNDETERMINED = "reproduced", "refuted", "undetermined"


@dataclass(frozen=True)
class Estimate:
    """A point value with its 95% interval and the smallest change the data could detect."""

    value: float
    low: float
    high: float
    mde: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def _estimate(value: float, replicates: np.ndarray) -> Estimate:
    se = float(np.std(replicates, ddof=1)) if replicates.size > 1 else float("nan")
    return Estimate(value, value - Z95 * se, value + Z95 * se, (Z95 + Z80) * se)


@dataclass(frozen=True)
class Verdict:
    finding: str  # "I", "II", "III"
    claim: str
    verdict: str  # REPRODUCED, REFUTED or UNDETERMINED
    evidence: list[str] = field(default_factory=list)  # sentences, each with its numbers


# --- (II) scale ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleDiff:
    compression: str
    metric: str
    small: Estimate  # the smaller model's change against its dense model
    large: Estimate
    diff: Estimate  # small - large (harm: set size grows, accuracy falls)


def _paired(cells: Cells, key: CellKey, metric: str) -> tuple[float, np.ndarray] | None:
    """(mean change against the dense cell, per-replicate changes) or None when they do not pair."""
    base = cells.get(CellKey(key.model, "", key.task))
    cell = cells.get(key)
    if cell is None or base is None or metric not in cell or metric not in base:
        return None
    if cell.protocol != base.protocol or not cell.protocol or metric not in cell.boot or metric not in base.boot:
        return None
    if cell.boot[metric].shape != base.boot[metric].shape or cell[metric].shape != base[metric].shape:
        return None
    return float((cell[metric] - base[metric]).mean()), cell.boot[metric] - base.boot[metric]


def scale_differences(
    cells: Cells, small: str, large: str, metric: str = "mean_set_size", task: str = ALL_TASKS
) -> list[ScaleDiff]:
    """Per compression both models have, the small model's change minus the large one's (paired)."""
    out = []
    comps = sorted({k.compression for k in cells if k.model == small and k.compression and k.task == task})
    for comp in comps:
        a, b = _paired(cells, CellKey(small, comp, task), metric), _paired(cells, CellKey(large, comp, task), metric)
        if a is None or b is None or a[1].shape != b[1].shape:
            continue
        if cells[CellKey(small, "", task)].protocol != cells[CellKey(large, "", task)].protocol:
            continue  # different items: the replicates do not pair across the models
        out.append(ScaleDiff(comp, metric, _estimate(*a), _estimate(*b), _estimate(a[0] - b[0], a[1] - b[1])))
    return out


def pooled_difference(cells: Cells, small: str, large: str, metric: str = "mean_set_size") -> Estimate | None:
    """The mean over compressions of :func:`scale_differences`, replicate by replicate."""
    diffs = scale_differences(cells, small, large, metric)
    if not diffs:
        return None
    pairs = [
        (
            _paired(cells, CellKey(small, d.compression, ALL_TASKS), metric),
            _paired(cells, CellKey(large, d.compression, ALL_TASKS), metric),
        )
        for d in diffs
    ]
    value = float(np.mean([a[0] - b[0] for a, b in pairs if a and b]))
    reps = np.mean([a[1] - b[1] for a, b in pairs if a and b], axis=0)
    return _estimate(value, reps)


def _harm(metric: str, value: float) -> float:
    return -value if metric == "accuracy" else value


def scale_verdict(cells: Cells, small: str, large: str) -> Verdict:
    claim = f"the larger {large} absorbs compression-induced set-size growth better than {small}"
    pooled = pooled_difference(cells, small, large)
    diffs = scale_differences(cells, small, large)
    if pooled is None:
        return Verdict("II", claim, UNDETERMINED, [f"no compression has paired cells of both {small} and {large} yet"])
    evidence = [
        f"{d.compression}: set size {d.small.value:+.3f} ({small}) vs {d.large.value:+.3f} ({large}); "
        f"difference {d.diff.value:+.3f} (95% {d.diff.low:+.3f} to {d.diff.high:+.3f}, MDE {d.diff.mde:.3f})"
        for d in diffs
    ]
    evidence.insert(
        0,
        f"pooled over {len(diffs)} compressions, the smaller model's set-size growth minus the larger's: "
        f"{pooled.value:+.3f} options (95% {pooled.low:+.3f} to {pooled.high:+.3f}; smallest detectable "
        f"difference {pooled.mde:.3f})",
    )
    verdict = (REPRODUCED if pooled.value > 0 else REFUTED) if pooled.significant else UNDETERMINED
    return Verdict("II", claim, verdict, evidence)


# --- (III) thresholds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Changepoint:
    levels: list[float]
    values: list[float]  # the curve's point estimates
    changepoint: float  # the best hinge's x_c on the point estimates
    interval: tuple[float, float]  # 2.5-97.5 percentiles of the replicates' best x_c
    slope_before: float  # b of the hinge at x_c
    kink: Estimate  # c of the hinge at x_c (the rise in slope), its interval from the replicates
    growth: Estimate  # end minus start


def hinge_fit(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """``(a, b, c)`` of ``y = a + b x + c max(x - x_c, 0)`` by least squares; ``y`` [n] or [n, B]."""
    design = np.stack([np.ones_like(x), x, np.maximum(x - c, 0.0)], axis=1)  # [n, 3]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef  # [3] or [3, B]


def changepoint(
    cells: Cells, model: str, levels: list[tuple[float, str]], metric: str = "mean_set_size"
) -> Changepoint | None:
    """The hinge along one sweep of ``model`` (task average), with bootstrap intervals; None with
    fewer than four levels measured or cells that do not pair."""
    got = [(lv, cells.get(CellKey(model, label, ALL_TASKS))) for lv, label in levels]
    pts = [(lv, c) for lv, c in got if c is not None and metric in c and metric in c.boot]
    if len(pts) < 4 or len({c.protocol for _, c in pts}) != 1 or len({c.boot[metric].shape for _, c in pts}) != 1:
        return None
    x = np.array([lv for lv, _ in pts], dtype=float)
    y = np.array([float(c[metric].mean()) for _, c in pts])
    reps = np.stack([c.boot[metric] for _, c in pts])  # [levels, B]
    cp = best_hinge(x, y)[0]
    per_rep = [best_hinge(x, reps[:, b])[0] for b in range(reps.shape[1])]
    lo, hi = np.percentile(per_rep, [2.5, 97.5])
    coef, coef_b = hinge_fit(x, y, cp), hinge_fit(x, reps, cp)
    growth = _estimate(float(y[-1] - y[0]), reps[-1] - reps[0])
    return Changepoint(
        list(x), list(y), cp, (float(lo), float(hi)), float(coef[1]), _estimate(float(coef[2]), coef_b[2]), growth
    )


def threshold_verdict(cells: Cells, model: str, method: str, levels: list[tuple[float, str]]) -> Verdict:
    claim = f"{model}'s set size jumps at a threshold along the {method} sweep rather than growing gradually"
    found = changepoint(cells, model, levels)
    if found is None:
        return Verdict("III", claim, UNDETERMINED, ["fewer than four paired levels of the sweep are measured"])
    k, g = found.kink, found.growth
    curve = ", ".join(f"{lv:g}: {v:.2f}" for lv, v in zip(found.levels, found.values, strict=True))
    jump = sweep_jump(found.levels, found.values)
    evidence = [
        f"set size along the sweep: {curve}",
        f"growth from level {found.levels[0]:g} to {found.levels[-1]:g}: {g.value:+.3f} options "
        f"(95% {g.low:+.3f} to {g.high:+.3f})",
        f"best hinge at level {found.changepoint:g} (95% interval of the refitted changepoint "
        f"{found.interval[0]:g} to {found.interval[1]:g}); slope before it {found.slope_before:+.4f} per level, "
        f"rise in slope after it {k.value:+.4f} (95% {k.low:+.4f} to {k.high:+.4f}, MDE {k.mde:.4f}); "
        f"largest single step {jump.largest_step:+.3f} ending at level {jump.largest_step_at:g}",
    ]
    if k.significant and k.value > 0:
        verdict = REPRODUCED
    elif g.significant and g.value > 0 and not k.significant and k.high < max(found.slope_before, 0.0):
        verdict = REFUTED
        evidence.append("the growth is significant and the slope at most doubles after the best changepoint: gradual")
    else:
        verdict = UNDETERMINED
    return Verdict("III", claim, verdict, evidence)


# --- (I) decoupling -----------------------------------------------------------------------------


def _held(kind: str, acc: Delta, size: Delta) -> str:
    """What "holds" means at this power: a held accuracy (or set size) is one whose change is not
    significant, and its interval says how large a change is not excluded."""
    held = acc if kind == "hidden inflation" else size
    if held.significant:
        return ""
    scale, unit = (100, " points") if held is acc else (1, " options")
    bound = scale * max(abs(held.ci_low), abs(held.ci_high))
    name = "accuracy" if held is acc else "set size"
    return f"; {name} holds at this power only: a change of up to {bound:.3g}{unit} either way is not excluded"


def decoupling_verdict(dec: Decoupling, ds: list[Delta]) -> Verdict:
    claim = "compression decouples accuracy from uncertainty (hidden inflation or silent degradation)"
    per_task = [d for d in ds if d.key.task != ALL_TASKS and d.metric in DECOUPLING_METRICS]
    cells = sorted({d.key for d in per_task})
    # Every cell's accuracy and set-size test is one family: a decoupled cell counts when its
    # changed metric stays significant after Holm's correction over all of them.
    adjusted = adjusted_p_values(ds)
    n_tests = len(adjusted)
    evidence, decoupled, survivors = [], 0, 0
    for kind, keys in (("hidden inflation", dec.hidden_inflation), ("silent degradation", dec.silent_degradation)):
        for key in keys:
            if key.task == ALL_TASKS and any(k[:2] == key[:2] and k.task != ALL_TASKS for k in keys):
                continue  # a task of it is listed: the average would repeat it
            acc = next(d for d in ds if d.key == key and d.metric == "accuracy")
            size = next(d for d in ds if d.key == key and d.metric == "mean_set_size")
            q = adjusted[(key, "mean_set_size" if kind == "hidden inflation" else "accuracy")]
            decoupled += 1
            survivors += int(q < 0.05)
            evidence.append(
                f"{kind}: {key.model} {key.compression} on {key.task}: accuracy {100 * acc.value:+.1f} points "
                f"(95% {100 * acc.ci_low:+.1f} to {100 * acc.ci_high:+.1f}), set size {size.value:+.3f} "
                f"(95% {size.ci_low:+.3f} to {size.ci_high:+.3f})"
                + _held(kind, acc, size)
                + f"; Holm-adjusted p {q:.2g} over {n_tests} tests"
                + ("" if q < 0.05 else ", not significant once every cell's test is counted")
            )
    if decoupled and not survivors:
        evidence.append(
            f"{decoupled} cell(s) decouple at the 5% level of one test, none after Holm's correction over "
            f"{n_tests} tests (about {0.05 * n_tests:.1f} per-test false findings are expected if "
            "nothing changed)"
        )
    if per_task:
        acc_mde = [(Z95 + Z80) * (d.ci_high - d.ci_low) / (2 * Z95) for d in per_task if d.metric == "accuracy"]
        size_mde = [(Z95 + Z80) * (d.ci_high - d.ci_low) / (2 * Z95) for d in per_task if d.metric == "mean_set_size"]
        evidence.append(
            f"{len(cells)} compressed per-task cells; smallest detectable change per cell: accuracy "
            f"{100 * min(acc_mde):.1f} to {100 * max(acc_mde):.1f} points, set size {min(size_mde):.3f} to "
            f"{max(size_mde):.3f} options"
        )
    if not np.isnan(dec.pearson):
        evidence.append(
            f"across {dec.n_cells} cells, the accuracy change and the set-size change correlate "
            f"(Pearson {dec.pearson:+.2f}, Spearman {dec.spearman:+.2f})"
        )
    if survivors:
        return Verdict("I", claim, REPRODUCED, evidence)
    both = [k for k in cells if all(d.significant for d in per_task if d.key == k)]
    coupled = [
        k
        for k in both
        if next(d for d in per_task if d.key == k and d.metric == "accuracy").value < 0
        and next(d for d in per_task if d.key == k and d.metric == "mean_set_size").value > 0
    ]
    changed = [k for k in cells if any(d.significant for d in per_task if d.key == k)]
    if len(changed) >= 3 and len(coupled) == len(changed) and not np.isnan(dec.pearson) and dec.pearson <= -0.8:
        evidence.append(f"every one of the {len(changed)} cells that changed moved both ways together")
        return Verdict("I", claim, REFUTED, evidence)
    return Verdict("I", claim, UNDETERMINED, evidence)


__all__ = [
    "REFUTED",
    "REPRODUCED",
    "UNDETERMINED",
    "Changepoint",
    "Estimate",
    "ScaleDiff",
    "Verdict",
    "changepoint",
    "decoupling_verdict",
    "pooled_difference",
    "scale_differences",
    "scale_verdict",
    "threshold_verdict",
]
