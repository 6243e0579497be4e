"""Plots for the report, as PNG bytes (matplotlib, Agg backend: no display needed).

Every label is plain text: model names, compression labels and plan names come from the user's
data, and matplotlib would read ``rtn-$\\frac$-cost`` as mathtext (and fail to draw it).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import NamedTuple, ParamSpec

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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


@_plain_text
def shift_histograms(panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], edges: np.ndarray) -> bytes:
    """Histograms of the true option's probability shift, one panel per model, one outline per
    compression: ``panels`` = ``[(model, [(compression, counts [B]), ...]), ...]`` on shared
    ``edges`` ``[B + 1]``. Shares of items on a log axis, so the few items that changed a lot show."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 1, figsize=(7.2, 2.2 + 1.8 * n), squeeze=False)
    compressions = sorted({c for _, series in panels for c, _ in series})
    colours = plt.get_cmap("tab10" if len(compressions) <= 10 else "tab20")
    for ax, (model, series) in zip(axes[:, 0], panels, strict=False):
        for compression, counts in series:
            share = np.asarray(counts, dtype=np.float64) / max(1, int(np.sum(counts)))
            ax.stairs(
                np.where(share > 0, share, np.nan),
                edges,
                color=colours(compressions.index(compression) % colours.N),
                lw=1.3,
                label=compression,
            )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yscale("log")
        # plain tick labels: the log axis would write mathtext ("$10^{-1}$"), drawn raw without parse_math
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(float(edges[0]), float(edges[-1]))
        ax.set_ylabel("share of items")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    axes[-1, 0].set_xlabel("p(true option), compressed - dense")
    fig.suptitle("Shift of the true option's probability (paired items)", fontsize=10)
    return _png(fig)


class GroupPoint(NamedTuple):
    group: str
    coverage: float  # mean over splits, in [0, 1]
    n: float  # mean test items of the group per split
    small: bool  # too few test items to judge
    baseline: float | None = None  # the dense model's coverage of the group (for a compressed model)


@_plain_text
def group_coverage(
    title: str, grid: Sequence[Sequence[tuple[str, Sequence[GroupPoint]]]], target: float, min_n: int | None = None
) -> bytes:
    """Per-group coverage against 1 - alpha: ``grid`` rows (tasks) of panels (group kinds), each
    ``(panel title, points)``. Groups with too few test items (fewer than ``min_n``, as the
    legend says) are hollow and grey; the dense model's coverage of each group, where given, is a
    grey cross."""
    n_rows = max(1, len(grid))
    n_cols = max(1, max((len(r) for r in grid), default=1))
    widths = [max(4, max((len(r[c][1]) for r in grid if c < len(r)), default=4)) for c in range(n_cols)]
    fig = plt.figure(figsize=(min(16.0, max(6.4, 1.5 + 0.2 * sum(widths))), 1.2 + 3.0 * n_rows))
    spec = fig.add_gridspec(n_rows, n_cols, width_ratios=widths)
    low = 100 * target
    for r, row in enumerate(grid):
        for c, (name, points) in enumerate(row):
            ax = fig.add_subplot(spec[r, c])
            xs = np.arange(len(points))
            cov = np.array([100 * p.coverage for p in points], dtype=np.float64)
            small = np.array([p.small for p in points], dtype=bool)
            ax.plot(xs[~small], cov[~small], "o", color="tab:blue", ms=5, label="judged")
            few = "too few" if min_n is None else f"too few (n < {min_n})"
            ax.plot(xs[small], cov[small], "o", mfc="none", color="grey", ms=5, label=few)
            base = np.array([np.nan if p.baseline is None else 100 * p.baseline for p in points], dtype=np.float64)
            if np.isfinite(base).any():
                ax.plot(xs, base, "x", color="grey", ms=4, label="dense")
            ax.axhline(100 * target, color="black", ls="--", lw=1, label=f"1 - alpha = {100 * target:.0f}%")
            labels = [p.group if len(p.group) <= 28 else p.group[:27] + "…" for p in points]
            many, wordy = len(points) > 8, max((len(t) for t in labels), default=0) > 3
            ax.set_xticks(
                xs,
                labels,
                rotation=90 if many else 35 if wordy else 0,
                ha="center" if many or not wordy else "right",
                fontsize=6 if many else 8,
            )
            ax.set_xlim(-0.6, max(len(points), 4) - 0.4)
            ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel("coverage (%)")
            finite = np.concatenate([cov[np.isfinite(cov)], base[np.isfinite(base)]])
            low = min(low, float(finite.min()) if finite.size else low)
    for ax in fig.axes:
        ax.set_ylim(max(0.0, low - 5), 101)
    if fig.axes:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="upper right", ncol=4, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    return _png(fig)
