"""Short findings in words, generated from the analysis (every sentence names its numbers)."""

from __future__ import annotations

import math

import numpy as np

from surefast.bench.analysis import CellKey, Decoupling, Delta, sweep_jump
from surefast.bench.analysis.cells import ALL_TASKS, Cells
from surefast.bench.analysis.scale import ScaleRow

N_OPTIONS = 6  # every task is six-option multiple choice
CHANCE = 1 / N_OPTIONS
NEAR_CHANCE = 2.0  # a baseline below twice chance gets a caution
MIN_SIZE_CHANGE = 0.1  # options; the set-size change that counts (as in the decoupling analysis)


def _label(key: CellKey) -> str:
    task = "on average over tasks" if key.task == ALL_TASKS else f"on {key.task}"
    return f"{key.model} with {key.compression or 'no compression'} {task}"


def findings(cells: Cells, ds: list[Delta], dec: Decoupling, scale: list[ScaleRow],
             sweeps: dict[str, list[tuple[float, str]]], alpha: float) -> list[str]:  # fmt: skip
    out: list[str] = []
    cov = [(k, float(v["coverage"].mean())) for k, v in cells.items() if "coverage" in v and k.task != ALL_TASKS]
    if cov:
        low = min(cov, key=lambda kv: kv[1])
        out.append(f"Coverage held near its {100 * (1 - alpha):.0f}% guarantee: mean {100 * np.mean([c for _, c in cov]):.1f}% "
                   f"over {len(cov)} cells, lowest {100 * low[1]:.1f}% ({_label(low[0])}).")  # fmt: skip
    for key, metrics in sorted(cells.items()):
        if key.compression == "" and key.task == ALL_TASKS and "accuracy" in metrics:
            base_acc = float(metrics["accuracy"].mean())
            if base_acc < NEAR_CHANCE * CHANCE:
                out.append(f"Caution: uncompressed {key.model} answers {100 * base_acc:.1f}% correctly, close to chance "
                           f"({100 * CHANCE:.1f}% with {N_OPTIONS} options). With little knowledge to lose, its cells "
                           "can confirm coverage but not the size of compression effects on accuracy or set size.")  # fmt: skip
    one_task = len({k.task for k in cells if k.task != ALL_TASKS}) == 1  # its average repeats it
    sig = [d for d in ds if d.key.task == ALL_TASKS and d.significant and d.metric in ("accuracy", "mean_set_size")]
    if sig:
        out.append("Significant changes against the uncompressed model (averaged over tasks): " + "; ".join(
            f"{d.key.model} with {d.key.compression}: "
            + (f"accuracy {100 * d.value:+.1f} points" if d.metric == "accuracy" else f"set size {d.value:+.2f}")
            + f" ({(100 if d.metric == 'accuracy' else 1) * d.ci_low:+.2f} to "
            f"{(100 if d.metric == 'accuracy' else 1) * d.ci_high:+.2f})" for d in sig) + ".")  # fmt: skip
    elif ds:
        out.append("No compression changed accuracy or set size significantly (averaged over tasks); more items "
                   "would narrow the intervals.")  # fmt: skip

    def shown(keys: list[CellKey]) -> list[CellKey]:
        return [k for k in keys if not (one_task and k.task == ALL_TASKS)][:5]

    for key in shown(dec.hidden_inflation):
        acc = next(d for d in ds if d.key == key and d.metric == "accuracy")
        size = next(d for d in ds if d.key == key and d.metric == "mean_set_size")
        out.append(f"Hidden inflation: {_label(key)} keeps accuracy ({100 * acc.value:+.1f} points) but its prediction "
                   f"sets grow by {size.value:+.2f} options (95% interval {size.ci_low:+.2f} to {size.ci_high:+.2f}).")  # fmt: skip
    for key in shown(dec.silent_degradation):
        acc = next(d for d in ds if d.key == key and d.metric == "accuracy")
        size = next(d for d in ds if d.key == key and d.metric == "mean_set_size")
        out.append(f"Silent degradation: {_label(key)} loses {100 * -acc.value:.1f} accuracy points while its sets "
                   f"do not grow ({size.value:+.2f} options): uncertainty does not warn of the loss.")  # fmt: skip
    if not math.isnan(dec.pearson):
        strength = "weakly" if abs(dec.pearson) < 0.5 else "strongly"
        out.append(f"Across {dec.n_cells} compressed cells, accuracy change and set-size change are {strength} "
                   f"correlated (Pearson {dec.pearson:+.2f}, Spearman {dec.spearman:+.2f}).")  # fmt: skip
    models = sorted({k.model for k in cells})
    for method, levels in sorted(sweeps.items()):
        for model in models:
            got = [(lv, cells.get(CellKey(model, label, ALL_TASKS))) for lv, label in levels]
            pts = [(lv, c) for lv, c in got if c is not None and "mean_set_size" in c]
            if len(pts) < 3:
                continue
            xs, ys = [lv for lv, _ in pts], [float(c["mean_set_size"].mean()) for _, c in pts]
            if len(pts) < 4:
                out.append(f"{method} on {model}: set size {ys[0]:.2f} at level {xs[0]:g} to {ys[-1]:.2f} at level "
                           f"{xs[-1]:g}; {len(pts)} levels are too few to tell a jump from a trend.")  # fmt: skip
                continue
            jump = sweep_jump(xs, ys)
            if ys[-1] - ys[0] <= 0:
                out.append(f"{method} on {model}: set size does not grow along the sweep ({ys[0]:.2f} at level "
                           f"{xs[0]:g}, {ys[-1]:.2f} at level {xs[-1]:g}).")  # fmt: skip
                continue
            end = next((d for d in ds if d.key == CellKey(model, levels[-1][1], ALL_TASKS)
                        and d.metric == "mean_set_size"), None)  # fmt: skip
            span = f"{ys[0]:.2f} at level {xs[0]:g} to {ys[-1]:.2f} at level {xs[-1]:g}"
            if ys[-1] - ys[0] < MIN_SIZE_CHANGE:
                out.append(f"{method} on {model}: set size barely moves along the sweep ({span}, under the "
                           f"{MIN_SIZE_CHANGE} options that count as a change): no threshold to locate.")  # fmt: skip
                continue
            if end is not None and not end.significant:
                out.append(f"{method} on {model}: set size grows along the sweep ({span}) but the end point's change is "
                           f"not significant ({end.ci_low:+.2f} to {end.ci_high:+.2f}): too noisy to locate a threshold.")  # fmt: skip
                continue
            shape = "jumps" if jump.last_step_share > 0.5 or (jump.jump_score == jump.jump_score and jump.jump_score > 0.8) \
                else "grows gradually"  # fmt: skip
            out.append(f"{method} on {model}: set size {shape} along the sweep; largest step {jump.largest_step:+.2f} "
                       f"ending at level {jump.largest_step_at:g}, last step {100 * jump.last_step_share:.0f}% of the total change.")  # fmt: skip
    for row in scale:
        sizes = ", ".join(f"{m} {d.value * (100 if row.metric == 'accuracy' else 1):+.2f}" for m, _, d in row.by_size)
        verdict = "the smaller model is hurt more" if row.smaller_hurts_more else "the smaller model is not hurt more"
        out.append(f"Scale, {row.compression}, {row.metric.replace('_', ' ')} change: {sizes}: {verdict}.")
    if not ds:
        out.append("No compressed model with an uncompressed baseline in these runs: no deltas to report.")
    return out


def not_compared(refused: dict[CellKey, str]) -> list[str]:
    """One sentence per compressed cell left out of the deltas because it does not pair with its baseline."""
    return [
        f"Not compared: {_label(key)} against its uncompressed baseline, because {reason}. Paired intervals need "
        "both on the same items, seed, splits and bootstrap: run both with the same --n, --seed, --splits and "
        "data (a study plan does this for every cell)."
        for key, reason in sorted(refused.items())
    ]


__all__ = ["findings", "not_compared"]
