"""Short findings in words, generated from the analysis (every sentence names its numbers).

A change that is not significant is never left to read as "no change": beside it stands the
smallest change the run could have detected (:func:`surefast.bench.power.mde_of`, from that
delta's own interval, at 80% power and the 5% level).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from surefast.bench.analysis import CellKey, Decoupling, Delta, sweep_jump
from surefast.bench.analysis.cells import ALL_TASKS, Cells
from surefast.bench.analysis.holm import adjusted_p_values
from surefast.bench.analysis.scale import ScaleRow
from surefast.bench.power import mde_of

N_OPTIONS = 6  # surefast's tasks: A-D, "I don't know", "None of the above"; imported ones have their own
NEAR_CHANCE = 2.0  # a baseline below twice chance gets a caution
MIN_SIZE_CHANGE = 0.1  # options; the set-size change that counts (as in the decoupling analysis)


def _label(key: CellKey) -> str:
    task = "on average over tasks" if key.task == ALL_TASKS else f"on {key.task}"
    return f"{key.model} with {key.compression or 'no compression'} {task}"


Sweeps = dict[str, list[tuple[float, str]]]  # method -> (level, compression label), in sweep order


def findings(
    cells: Cells,
    ds: list[Delta],
    dec: Decoupling,
    scale: list[ScaleRow],
    sweeps: Sweeps,
    alpha: float,
    *,
    n_items: int | None = None,
) -> list[str]:
    """The report's findings, one kind after another (each kind may say nothing).

    ``n_items``: items per task of the runs, named beside each minimum detectable change (None:
    "this run's number of items").
    """
    n_tasks = len({k.task for k in cells if k.task != ALL_TASKS})
    one_task = n_tasks == 1  # its average repeats it
    at = Items(n_items, n_tasks)
    return [
        *coverage(cells, alpha),
        *near_chance(cells),
        *significant_changes(ds, at),
        *hidden_inflation(dec, ds, one_task, at),
        *silent_degradation(dec, ds, one_task, at),
        *correlation(dec),
        *sweep_findings(cells, ds, sweeps, at),
        *scale_findings(scale),
        *no_deltas(ds),
    ]


class Items(NamedTuple):
    """How many items stand behind a delta: ``n`` per task (None: unknown) over ``n_tasks`` tasks."""

    n: int | None = None
    n_tasks: int = 1

    def at(self, task: str) -> str:
        """``at these 80 items``, ``at these 80 items per task (240 in all)`` for a task average."""
        if self.n is None:
            return "at this run's number of items"
        if task != ALL_TASKS or self.n_tasks <= 1:
            return f"at these {self.n} items"
        return f"at these {self.n} items per task ({self.n * self.n_tasks} in all)"


UNKNOWN = Items()  # no item count given


def _mde_text(ds: list[Delta]) -> str:
    """``2.8 points`` / ``0.15 options``, or the range over several deltas of one metric."""
    scale, unit, digits = (100, "points", 1) if ds[0].metric == "accuracy" else (1, "options", 2)
    low, high = (f"{scale * v:.{digits}f}" for v in (min(map(mde_of, ds)), max(map(mde_of, ds))))
    return f"{low} {unit}" if low == high else f"{low} to {high} {unit}"


def undetectable(ds: list[Delta], at: Items, what: str = "a change") -> str:
    """``at these 80 items a change smaller than 2.8 points could not be detected with 80% power``
    (at the report's 5% level; per metric of ``ds``, a range over several deltas)."""
    by_metric = [[d for d in ds if d.metric == m] for m in ("accuracy", "mean_set_size", "coverage")]
    names = {"accuracy": "in accuracy", "mean_set_size": "in set size", "coverage": "in coverage"}
    parts = [_mde_text(g) + (f" {names[g[0].metric]}" if len(ds) > len(g) else "") for g in by_metric if g]
    return f"{at.at(ds[0].key.task)} {what} smaller than {' or '.join(parts)} could not be detected with 80% power"


def coverage(cells: Cells, alpha: float) -> list[str]:
    """Mean and lowest coverage over the per-task cells, against the 1 - alpha guarantee."""
    cov = [(k, float(v["coverage"].mean())) for k, v in cells.items() if "coverage" in v and k.task != ALL_TASKS]
    if not cov:
        return []
    low = min(cov, key=lambda kv: kv[1])
    return [
        f"Coverage held near its {100 * (1 - alpha):.0f}% guarantee: mean {100 * np.mean([c for _, c in cov]):.1f}% "
        f"over {len(cov)} cells, lowest {100 * low[1]:.1f}% ({_label(low[0])})."
    ]


def chance(cells: Cells, key: CellKey) -> tuple[float, str]:
    """Chance accuracy of ``key``'s cell and how it reads: ``1/K``; for a task average, the mean of
    ``1/K`` over that model's tasks (they may differ: imported lm-eval tasks have their own K)."""
    same = [k for k in cells if k[:2] == key[:2] and k.task != ALL_TASKS] if key.task == ALL_TASKS else [key]
    ks = [cells[k].n_options or N_OPTIONS for k in same] or [N_OPTIONS]  # rows without a histogram: six
    counts = sorted(set(ks))
    value = float(np.mean([1.0 / k for k in ks]))
    if len(counts) == 1:
        return value, f"{100 * value:.1f}% with {counts[0]} options"
    return value, f"{100 * value:.1f}%, the mean over its tasks of {counts[0]} to {counts[-1]} options"


def near_chance(cells: Cells) -> list[str]:
    """A caution for each uncompressed model whose task-average accuracy is below twice chance."""
    out = []
    for key, metrics in sorted(cells.items()):
        if key.compression == "" and key.task == ALL_TASKS and "accuracy" in metrics:
            base_acc = float(metrics["accuracy"].mean())
            level, reads = chance(cells, key)
            if base_acc < NEAR_CHANCE * level:
                out.append(
                    f"Caution: uncompressed {key.model} answers {100 * base_acc:.1f}% correctly, close to chance "
                    f"({reads}). With little knowledge to lose, its cells "
                    "can confirm coverage but not the size of compression effects on accuracy or set size."
                )
    return out


def significant_changes(ds: list[Delta], at: Items = UNKNOWN) -> list[str]:
    """The task-averaged accuracy and set-size changes whose intervals exclude zero (or that none do),
    and what the others could not have detected."""
    shown = [d for d in ds if d.key.task == ALL_TASKS and d.metric in ("accuracy", "mean_set_size")]
    sig = [d for d in shown if d.significant]
    rest = [d for d in shown if not d.significant]
    if sig:
        changes = "; ".join(_change(d) for d in sig)
        out = [f"Significant changes against the uncompressed model (averaged over tasks): {changes}."]
        if rest:
            out.append(
                f"The other {len(rest)} accuracy and set-size changes are not significant, which is not the same "
                f"as no change: {undetectable(rest, at)}."
            )
        return out
    if rest:
        return [
            "No compression changed accuracy or set size significantly (averaged over tasks), which is not the "
            f"same as no change: {undetectable(rest, at)}; more items would narrow the intervals."
        ]
    if ds:
        return [
            "No compression changed accuracy or set size significantly (averaged over tasks); more items "
            "would narrow the intervals."
        ]
    return []


def _change(d: Delta) -> str:
    """``model with compression: accuracy +1.0 points (+0.20 to +1.80)``; accuracy in points."""
    scale = 100 if d.metric == "accuracy" else 1
    value = f"accuracy {100 * d.value:+.1f} points" if d.metric == "accuracy" else f"set size {d.value:+.2f}"
    return f"{d.key.model} with {d.key.compression}: {value} ({scale * d.ci_low:+.2f} to {scale * d.ci_high:+.2f})"


def _shown(keys: list[CellKey], one_task: bool) -> list[CellKey]:
    """At most five cells, leaving out task averages that only repeat a single task."""
    return [k for k in keys if not (one_task and k.task == ALL_TASKS)][:5]


def _pair(ds: list[Delta], key: CellKey) -> tuple[Delta, Delta]:
    """The (accuracy, set size) deltas of one cell; decoupled cells have both."""
    acc = next(d for d in ds if d.key == key and d.metric == "accuracy")
    size = next(d for d in ds if d.key == key and d.metric == "mean_set_size")
    return acc, size


def hidden_inflation(dec: Decoupling, ds: list[Delta], one_task: bool, at: Items = UNKNOWN) -> list[str]:
    """Cells that keep their accuracy while their prediction sets grow."""
    out, adjusted = [], adjusted_p_values(ds)
    for key in _shown(dec.hidden_inflation, one_task):
        acc, size = _pair(ds, key)
        held = "" if acc.significant else f", not significant; {undetectable([acc], at)}"
        screened = _multiplicity(adjusted, size)
        out.append(
            f"Hidden inflation: {_label(key)} keeps accuracy ({100 * acc.value:+.1f} points{held}) but its prediction "
            f"sets grow by {size.value:+.2f} options (95% interval {size.ci_low:+.2f} to {size.ci_high:+.2f}"
            f"{'; ' + screened if screened else ''})."
        )
    return out


def _multiplicity(adjusted: dict[tuple[CellKey, str], float], d: Delta) -> str:
    """``Holm-adjusted p 0.71 over 78 tests, ...``: whether a cell's change survives the screen of
    every cell (``adjusted``: :func:`adjusted_p_values` of the run; '' when it tests a single cell)."""
    if len(adjusted) <= 2:
        return ""
    q = adjusted[(d.key, d.metric)]
    survives = "" if q < 0.05 else ", not significant once every cell's test is counted"
    return f"Holm-adjusted p {q:.2g} over {len(adjusted)} tests{survives}"


def silent_degradation(dec: Decoupling, ds: list[Delta], one_task: bool, at: Items = UNKNOWN) -> list[str]:
    """Cells that lose accuracy while their sets do not grow: uncertainty gives no warning."""
    out, adjusted = [], adjusted_p_values(ds)
    for key in _shown(dec.silent_degradation, one_task):
        acc, size = _pair(ds, key)
        flat = "" if size.significant else f", not significant; {undetectable([size], at, 'a growth')}"
        screened = _multiplicity(adjusted, acc)
        out.append(
            f"Silent degradation: {_label(key)} loses {100 * -acc.value:.1f} accuracy points while its sets "
            f"do not grow ({size.value:+.2f} options{flat}): uncertainty does not warn of the loss"
            f"{f' ({screened})' if screened else ''}."
        )
    return out


def correlation(dec: Decoupling) -> list[str]:
    """How strongly accuracy change and set-size change go together (nothing when undefined)."""
    if math.isnan(dec.pearson):
        return []
    strength = "weakly" if abs(dec.pearson) < 0.5 else "strongly"
    return [
        f"Across {dec.n_cells} compressed cells, accuracy change and set-size change are {strength} "
        f"correlated (Pearson {dec.pearson:+.2f}, Spearman {dec.spearman:+.2f})."
    ]


def sweep_findings(cells: Cells, ds: list[Delta], sweeps: Sweeps, at: Items = UNKNOWN) -> list[str]:
    """One sentence per (swept method, model) with at least three levels measured."""
    models = sorted({k.model for k in cells})
    out = []
    for method, levels in sorted(sweeps.items()):
        for model in models:
            text = _sweep(method, model, levels, cells, ds, at)
            if text is not None:
                out.append(text)
    return out


def _sweep(
    method: str, model: str, levels: list[tuple[float, str]], cells: Cells, ds: list[Delta], at: Items = UNKNOWN
) -> str | None:
    """What the set size does along one sweep: too few levels, no growth, too small, too noisy, or its shape."""
    got = [(lv, cells.get(CellKey(model, label, ALL_TASKS))) for lv, label in levels]
    pts = [(lv, c) for lv, c in got if c is not None and "mean_set_size" in c]
    if len(pts) < 3:
        return None
    xs, ys = [lv for lv, _ in pts], [float(c["mean_set_size"].mean()) for _, c in pts]
    if len(pts) < 4:
        return (
            f"{method} on {model}: set size {ys[0]:.2f} at level {xs[0]:g} to {ys[-1]:.2f} at level "
            f"{xs[-1]:g}; {len(pts)} levels are too few to tell a jump from a trend."
        )
    jump = sweep_jump(xs, ys)
    if ys[-1] - ys[0] <= 0:
        return (
            f"{method} on {model}: set size does not grow along the sweep ({ys[0]:.2f} at level "
            f"{xs[0]:g}, {ys[-1]:.2f} at level {xs[-1]:g})."
        )
    end_key = CellKey(model, levels[-1][1], ALL_TASKS)  # the sweep's last level, measured or not
    end = next((d for d in ds if d.key == end_key and d.metric == "mean_set_size"), None)
    span = f"{ys[0]:.2f} at level {xs[0]:g} to {ys[-1]:.2f} at level {xs[-1]:g}"
    if ys[-1] - ys[0] < MIN_SIZE_CHANGE:
        return (
            f"{method} on {model}: set size barely moves along the sweep ({span}, under the "
            f"{MIN_SIZE_CHANGE} options that count as a change): no threshold to locate."
        )
    if end is not None and not end.significant:
        return (
            f"{method} on {model}: set size grows along the sweep ({span}) but the end point's change is "
            f"not significant ({end.ci_low:+.2f} to {end.ci_high:+.2f}): too noisy to locate a threshold; "
            f"{undetectable([end], at)}."
        )
    # jump_score is NaN when a line fits exactly: then only the last step's share decides
    jumps = jump.last_step_share > 0.5 or (not math.isnan(jump.jump_score) and jump.jump_score > 0.8)
    shape = "jumps" if jumps else "grows gradually"
    return (
        f"{method} on {model}: set size {shape} along the sweep; largest step {jump.largest_step:+.2f} "
        f"ending at level {jump.largest_step_at:g}, last step {100 * jump.last_step_share:.0f}% of the total change."
    )


def scale_findings(scale: list[ScaleRow]) -> list[str]:
    """Per compression and metric: the change at each model size, and whether the smaller is hurt more."""
    out = []
    for row in scale:
        sizes = ", ".join(f"{m} {d.value * (100 if row.metric == 'accuracy' else 1):+.2f}" for m, _, d in row.by_size)
        verdict = "the smaller model is hurt more" if row.smaller_hurts_more else "the smaller model is not hurt more"
        out.append(f"Scale, {row.compression}, {row.metric.replace('_', ' ')} change: {sizes}: {verdict}.")
    return out


def no_deltas(ds: list[Delta]) -> list[str]:
    """Says so when no compressed cell has an uncompressed baseline to compare with."""
    if ds:
        return []
    return ["No compressed model with an uncompressed baseline in these runs: no deltas to report."]


def not_compared(refused: dict[CellKey, str]) -> list[str]:
    """One sentence per compressed cell left out of the deltas because it does not pair with its baseline."""
    return [
        f"Not compared: {_label(key)} against its uncompressed baseline, because {reason}. Paired intervals need "
        "both on the same items, seed, splits and bootstrap: run both with the same --n, --seed, --splits and "
        "data (a study plan does this for every cell)."
        for key, reason in sorted(refused.items())
    ]


__all__ = ["findings", "not_compared"]
