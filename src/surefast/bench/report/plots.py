"""Plots for the report, as PNG bytes (matplotlib, Agg backend: no display needed).

Every label is plain text: model names, compression labels and plan names come from the user's
data, and matplotlib would read ``rtn-$\\frac$-cost`` as mathtext (and fail to draw it).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import ParamSpec

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from surefast.bench.analysis.deltas import Delta
from surefast.bench.analysis.thresholds import SweepJump

P = ParamSpec("P")


def _plain_text(plot: Callable[P, bytes]) -> Callable[P, bytes]:
    """Run ``plot`` with parse_math off (and no TeX) for every text artist it creates: titles, axis
    and tick labels, legends. Tick labels are made while the figure is saved, so the whole function
    runs under it, ``_png`` included."""

    @functools.wraps(plot)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> bytes:
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)

    return wrapper


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


@_plain_text
def delta_scatter(points: Sequence[tuple[str, str, Delta, Delta]]) -> bytes:
    """Delta accuracy (x, points) against delta set size (y): one point per (model, compression, task),
    coloured by compression, shaped by model, with 95% interval whiskers."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    compressions = sorted({c for _, c, _, _ in points})
    models = sorted({m for m, _, _, _ in points})
    colours = plt.get_cmap("tab20")
    markers = "osD^vP*X"
    for model, compression, acc, size in points:
        ax.errorbar(
            100 * acc.value,
            size.value,
            xerr=[[100 * (acc.value - acc.ci_low)], [100 * (acc.ci_high - acc.value)]],
            yerr=[[size.value - size.ci_low], [size.ci_high - size.value]],
            fmt=markers[models.index(model) % 8],
            color=colours(compressions.index(compression) % 20),
            ms=5,
            alpha=0.75,
            capsize=2,
            elinewidth=0.8,
        )
    handles = [
        plt.Line2D([], [], color=colours(i % 20), marker="o", ls="", label=c) for i, c in enumerate(compressions)
    ]
    handles += [plt.Line2D([], [], color="grey", marker=markers[i % 8], ls="", label=m) for i, m in enumerate(models)]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("Δ accuracy (points) vs uncompressed")
    ax.set_ylabel("Δ mean prediction-set size")
    ax.set_title("Accuracy and uncertainty under compression (one point per task)")
    return _png(fig)


@_plain_text
def sweep_plot(
    title: str, levels: Sequence[float], set_size: Sequence[float], accuracy: Sequence[float], jump: SweepJump
) -> bytes:
    """Set size (left axis) and accuracy (right axis) along a sweep, the largest step marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(levels, set_size, "o-", color="tab:red", label="set size")
    ax.set_xlabel("compression level")
    ax.set_ylabel("mean set size", color="tab:red")
    ax.axvspan(
        levels[list(levels).index(jump.largest_step_at) - 1],
        jump.largest_step_at,
        color="tab:red",
        alpha=0.12,
        label=f"largest step (+{jump.largest_step:.2f})",
    )
    if jump.changepoint is not None:
        ax.axvline(jump.changepoint, color="black", ls="--", lw=0.8, label=f"changepoint {jump.changepoint:g}")
    twin = ax.twinx()
    twin.plot(levels, [100 * a for a in accuracy], "s--", color="tab:blue", label="accuracy")
    twin.set_ylabel("accuracy (%)", color="tab:blue")
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, frameon=False)
    return _png(fig)


@_plain_text
def coverage_plot(labels: Sequence[str], coverage: Sequence[float], target: float) -> bytes:
    """Empirical coverage per cell against the 1 - alpha target."""
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(labels)), 4.0))
    ax.bar(range(len(labels)), [100 * c for c in coverage], color="tab:green", alpha=0.8)
    ax.axhline(100 * target, color="black", ls="--", lw=1, label=f"1 - alpha = {100 * target:.0f}%")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(max(0, 100 * min([*coverage, target]) - 10), 100)
    ax.set_ylabel("coverage (%)")
    ax.legend(fontsize=8)
    ax.set_title("Coverage against its guarantee")
    return _png(fig)
