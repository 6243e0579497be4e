"""The report's "Conditional coverage" section: coverage per group of test items, not only on average.

Split conformal guarantees ``1 - alpha`` on average over items; a compressed model can keep that
while under-covering one answer position or one subject. The stored rows hold, per split, the
coverage of each group (``coverage@<kind>=<group>``, with ``set_size@...`` and ``n@...``, the
group's test items in that split) and two summaries per kind with bootstrap replicates:
``coverage_worst@<kind>`` (the lowest group coverage) and ``coverage_gap@<kind>`` (the mean
``|coverage_g - (1 - alpha)|``), both over groups with at least :data:`MIN_GROUP_TEST` test items.

Reading them. Per-group rows are many (one per MMLU subject and split), so they are averaged in
DuckDB (over splits, strategies and scores, NaN splits left out) and never fetched one by one;
the summaries are read as rows and become cells with intervals like every other metric.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

from surefast.bench.analysis.cells import ALL_TASKS, CellKey, Cells, cells_from_rows
from surefast.bench.report import plots
from surefast.bench.report.blocks import Section, image, paragraph, pm, table
from surefast.bench.store import Store
from surefast.conformal.conditional import MIN_GROUP_TEST  # the stored summaries' rule

TITLE = "Conditional coverage"
KIND_ORDER = ("position", "subject", "size")  # kinds shown first, in this order; others follow by name
NO_GROUPS = (
    "No per-group coverage stored for these runs (they were stored before conditional coverage was "
    "computed): run them again to see coverage per answer position and per subject."
)
_GROUP = re.compile(r"^(?P<stat>coverage|set_size|n)@(?P<kind>[^=]+)=(?P<group>.*)$", re.S)
_SUMMARY = re.compile(r"^coverage_(?P<stat>worst|gap)@(?P<kind>[^=]+)$")

GroupMeans = dict[CellKey, dict[str, float]]  # cell -> per-group metric -> mean


def load_groups(store: Store, run_ids: list[str], alpha: float) -> tuple[GroupMeans, Cells]:
    """Per-group means and the summary cells (with their bootstrap) of ``run_ids`` at ``alpha``."""
    where = "list_contains($ids, run_id) AND contains(metric, '@') AND abs(alpha - $alpha) < 1e-9"
    rel = store.query(
        "SELECT model, coalesce(compression, '') AS compression, task, metric, "
        "avg(value) FILTER (WHERE NOT isnan(value)) AS value FROM results "
        f"WHERE {where} AND contains(metric, '=') AND coalesce(resampling, 'splits') = 'splits' GROUP BY ALL",
        runs=run_ids,
        ids=run_ids,
        alpha=alpha,
    )
    means: GroupMeans = defaultdict(dict)
    for model, compression, task, metric, value in rel.fetchall():
        means[CellKey(model, compression, task)][metric] = math.nan if value is None else float(value)
    rel = store.query(
        "SELECT model, compression, task, strategy, score_fn, alpha, split, metric, value, resampling, protocol "
        f"FROM results WHERE {where} AND NOT contains(metric, '=')",
        runs=run_ids,
        ids=run_ids,
        alpha=alpha,
    )
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    names = tuple(sorted({r["metric"] for r in rows if _SUMMARY.match(r["metric"])}))
    summaries = cells_from_rows(rows, alpha=alpha, metrics=names) if names else {}
    return dict(means), {k: c for k, c in summaries.items() if k.task != ALL_TASKS}


def _kinds(names: set[str]) -> list[str]:
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    return sorted(names, key=lambda k: (order.get(k, len(order)), k))


def group_points(
    means: dict[str, float], kind: str, baseline: dict[str, float] | None = None
) -> list[plots.GroupPoint]:
    """The groups of one kind in a cell, in order (positions and sizes as stored, subjects by name)."""
    out = []
    for metric, value in means.items():
        m = _GROUP.match(metric)
        if not m or m["stat"] != "coverage" or m["kind"] != kind:
            continue
        group = m["group"]
        n = means.get(f"n@{kind}={group}", math.nan)
        base = None if baseline is None else baseline.get(metric)
        out.append(plots.GroupPoint(group, value, n, not n >= MIN_GROUP_TEST, base))
    return sorted(out, key=lambda p: (_number(p.group), p.group))


def _number(group: str) -> float:
    try:
        return float(group)
    except ValueError:
        return math.inf


def section(means: GroupMeans, summaries: Cells, alpha: float) -> Section:
    """A plot of per-group coverage per (model, compression), a table of worst-group coverage
    and coverage gap with 95% intervals, and the per-group values."""
    if not means and not summaries:
        h, m = paragraph(NO_GROUPS)
        return Section(TITLE, h, m)
    kinds = _kinds(
        {g["kind"] for c in means.values() for g in map(_GROUP.match, c) if g}
        | {s["kind"] for c in summaries.values() for s in map(_SUMMARY.match, c) if s}
    )
    note = (
        f"Coverage per group of test items: by the letter of the right answer (position), by subject or "
        f"sub-source (subject), by prediction-set size (size). Worst: the lowest group coverage; gap: the mean "
        f"distance |coverage - {100 * (1 - alpha):.0f}%| over groups, in points; both only over groups with at "
        f"least {MIN_GROUP_TEST} test items per split (smaller groups are too few to judge: hollow grey in the "
        "plots). Group values are means over splits, strategies and scores; n is the group's mean test items "
        "per split."
    )
    parts_h, parts_m = [paragraph(note)[0]], [paragraph(note)[1]]
    images: list[tuple[str, bytes]] = []
    if summaries:
        h, m = _summary_table(summaries, kinds)
        parts_h.append(h)
        parts_m.append(m)
    models = sorted({(k.model, k.compression) for k in means})
    for i, (model, compression) in enumerate(models):
        grid = []
        for task in sorted({k.task for k in means if (k.model, k.compression) == (model, compression)}):
            cell = means[CellKey(model, compression, task)]
            dense = means.get(CellKey(model, "", task)) if compression else None
            row = [(f"{task}: {kind}", pts) for kind in kinds if (pts := group_points(cell, kind, dense))]
            if row:
                grid.append(row)
        if not grid:
            continue
        name = f"group_coverage_{i}.png"
        label = f"{model}, {compression or 'dense'}"
        png = plots.group_coverage(f"Coverage per group: {label}", grid, 1 - alpha, MIN_GROUP_TEST)
        h, m = image(name, png, f"coverage per group: {label}")
        parts_h.append(h)
        parts_m.append(m)
        images.append((name, png))
    if means:
        h, m = _group_table(means, kinds)
        parts_h.append(f"<details><summary>Coverage of every group</summary>{h}</details>")
        parts_m.append(f"Coverage of every group:\n\n{m}")
    return Section(TITLE, "".join(parts_h), "\n\n".join(parts_m), images)


def _summary_table(summaries: Cells, kinds: list[str]) -> tuple[str, str]:
    header = ["model", "compression", "task"]
    for kind in kinds:
        header += [f"worst {kind} (%)", f"gap {kind} (pts)"]
    rows = []
    for key in sorted(summaries):
        cell = summaries[key]
        row = [key.model, key.compression or "dense", key.task]
        for kind in kinds:
            for metric in (f"coverage_worst@{kind}", f"coverage_gap@{kind}"):
                undefined = metric in cell and all(v != v for v in cell[metric].tolist())
                row.append("too few" if undefined else pm(cell, metric, pct=True))
        rows.append(row)
    return table(header, rows)


def _group_table(means: GroupMeans, kinds: list[str]) -> tuple[str, str]:
    """One row per (model, task, kind, group), one column per compression: coverage (n)."""
    compressions = sorted({k.compression for k in means})
    header = ["model", "task", "kind", "group", *[c or "dense" for c in compressions]]
    rows: list[list[str]] = []
    for model in sorted({k.model for k in means}):
        for task in sorted({k.task for k in means if k.model == model}):
            for kind in kinds:
                by: dict[str, dict[str, plots.GroupPoint]] = defaultdict(dict)
                order: dict[str, Any] = {}
                for comp in compressions:
                    for p in group_points(means.get(CellKey(model, comp, task), {}), kind):
                        by[p.group][comp] = p
                        order.setdefault(p.group, (_number(p.group), p.group))
                for group in sorted(by, key=order.__getitem__):
                    rows.append([model, task, kind, group, *(_point(by[group].get(c)) for c in compressions)])
    return table(header, rows)


def _point(p: plots.GroupPoint | None) -> str:
    if p is None:
        return "-"
    cov = "-" if p.coverage != p.coverage else f"{100 * p.coverage:.1f}"
    n = "?" if p.n != p.n else f"{p.n:.0f}"
    return f"{cov} (n {n}{', too few' if p.small else ''})"
