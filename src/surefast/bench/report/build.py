"""Build the study report from stored results: tables, plots, findings; HTML and Markdown.

Sweeps are recognised from compression labels ending in a level, ``<method>-<level>`` (e.g.
``wanda-30`` = Wanda at 30% sparsity); the uncompressed model is level 0 of every sweep. Model
sizes for the scale analysis come from the runs' metadata (``model_params``); only sizes of one
family are compared (names equal but for the size token, :func:`~surefast.bench.analysis.scale.family_of`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surefast.atomic import write_errors
from surefast.bench.analysis import CellKey, cells_from_rows, decoupling, deltas, sweep_jump
from surefast.bench.analysis.cells import ALL_TASKS, Cells
from surefast.bench.analysis.deltas import SPLITS_ONLY, Delta, unpaired
from surefast.bench.analysis.scale import families, scale_rows
from surefast.bench.report import conditional, per_item, plots
from surefast.bench.report import findings as findings_mod
from surefast.bench.report.blocks import Section
from surefast.bench.report.blocks import fmt as _fmt
from surefast.bench.report.blocks import image as _image
from surefast.bench.report.blocks import pm as _pm
from surefast.bench.report.blocks import table as _table
from surefast.bench.store import Store
from surefast.errors import SurefastError

_LEVEL = re.compile(r"^(?P<method>.+?)-(?P<level>\d+(?:\.\d+)?)$")


def sweeps_from_labels(labels: set[str]) -> dict[str, list[tuple[float, str]]]:
    """``{method: [(level, label), ...]}`` for methods with at least two levels (dense = level 0)."""
    out: dict[str, list[tuple[float, str]]] = {}
    for label in labels:
        m = _LEVEL.match(label)
        if m:
            out.setdefault(m["method"], []).append((float(m["level"]), label))
    return {k: sorted([(0.0, ""), *v]) for k, v in out.items() if len(v) >= 2}


def load_rows(store: Store, run_ids: list[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    runs = [store.run(r) for r in run_ids]
    ids = [r.run_id for r in runs]
    rel = store.query(
        "SELECT model, compression, task, strategy, score_fn, alpha, split, metric, value, resampling, protocol "
        # Per-group metrics ("coverage@subject=...") are many: only the conditional-coverage
        # section reads them, averaged in SQL (surefast.bench.report.conditional).
        "FROM results WHERE list_contains($ids, run_id) AND NOT contains(metric, '@')",
        runs=ids,
        ids=ids,
    )
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    if not rows:
        raise SurefastError(
            f"no results stored for run(s) {', '.join(ids)}", "run `surefast bench run` or a study first"
        )
    sizes: dict[str, float] = {}
    for run in runs:
        sizes.update(run.read_meta().get("model_params", {}))
    return rows, sizes


def load_deployment(store: Store, run_ids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(model, compression label)`` -> what the study measured of serving it (``deployment`` in the
    runs' metadata, :func:`surefast.compress.lowbit.deploy.measure_deployment`); empty for bench runs."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for run_id in run_ids:
        for key, value in store.run(run_id).read_meta().get("deployment", {}).items():
            model, _, label = str(key).rpartition("|")
            if isinstance(value, dict):
                out[(model, "" if label == "dense" else label)] = value
    return out


def default_report_dir(store: Store, run_id: str) -> Path:
    """``<store>/../reports/<run id>``: beside the results (``$SUREFAST_HOME/reports`` by default),
    not in whatever folder the command ran from."""
    return store.root.parent / "reports" / run_id


def _items_per_task(store: Store, run_ids: list[str]) -> int | None:
    """The runs' items per task (``config.n``) when they all agree, else None (the findings then
    state the detectable change without a count)."""
    ns = set()
    for run_id in run_ids:
        try:
            ns.add(store.run(run_id).read_meta().get("config", {}).get("n"))
        except SurefastError:
            return None
    n = ns.pop() if len(ns) == 1 else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def build_report(
    store: Store, run_ids: list[str], out_dir: Path, title: str = "surefast report", lead: Sequence[Section] = ()
) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ PNGs) into ``out_dir``; return the HTML path.
    ``lead``: sections placed first (a study's verdicts, :mod:`surefast.bench.report.study_report`)."""
    rows, sizes = load_rows(store, run_ids)
    ids = [store.run(r).run_id for r in run_ids]  # prefixes and "latest" resolved, as load_rows does
    deployment = load_deployment(store, run_ids)
    alpha = min({float(r["alpha"]) for r in rows}, key=lambda a: abs(a - 0.1))
    cells = cells_from_rows(rows, alpha=alpha)
    ds = deltas(cells)
    refused = unpaired(cells)
    dec = decoupling(ds)
    sections = [
        _main_table(cells, deployment),
        _task_tables(cells),
        _scatter(ds),
        *_sweeps(cells),
        _coverage(cells, alpha),
        conditional.section(*conditional.load_groups(store, ids, alpha), alpha),
        per_item.section(store.items(ids), ids, alpha),
    ]
    scale = [row for members in families(sizes).values() for row in scale_rows(ds, members)]
    sweeps = sweeps_from_labels({k.compression for k in cells})
    text = findings_mod.findings(cells, ds, dec, scale, sweeps, alpha, n_items=_items_per_task(store, ids))
    text += findings_mod.not_compared(refused)
    if len(sizes) >= 2 and not scale:
        text.append(
            "Scale: not analysed, as no two models here are sizes of one family (sizes would be confounded "
            "with everything else); add e.g. qwen2.5-coder-1.5b-instruct beside the 0.5B model."
        )
    sections.insert(
        0,
        Section(
            "Findings",
            "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in text) + "</ul>",
            "\n".join(f"- {t}" for t in text),
        ),
    )
    sections[:0] = lead
    intro = (
        f"Runs: {', '.join(run_ids)}. Metrics at alpha = {alpha:g}, averaged over prompt strategies, conformal "
        "scores (LAC, APS) and random calibration/test splits. Acc = accuracy, Cov = coverage, SS = mean "
        "prediction-set size over 6 options (lower is more certain). Deltas are against the uncompressed model. "
        + interval_note(cells, ds)
    )
    body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{s.html}</section>" for s in sections)
    page = _PAGE.format(title=html.escape(title), intro=html.escape(intro), body=body)
    md = f"# {title}\n\n{intro}\n\n" + "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in sections) + "\n"
    with write_errors(out_dir):  # a full disk or a read-only folder is one line, not a traceback
        out_dir.mkdir(parents=True, exist_ok=True)
        for section in sections:
            for name, png in section.images:
                (out_dir / name).write_bytes(png)
        (out_dir / "report.html").write_text(page)
        (out_dir / "report.md").write_text(md)
    return out_dir / "report.html"


def interval_note(cells: Cells, ds: list[Delta]) -> str:
    """What the report's intervals cover, in one sentence (it depends on how the runs were stored)."""
    sizes = sorted({len(v) for c in cells.values() for v in c.boot.values()})
    boot = (
        "95% intervals (+-) come from a paired item bootstrap"
        + (f" ({', '.join(map(str, sizes))} replicates)" if sizes else "")
        + ": the items are resampled with replacement, the same items for both models, then split as before, so "
        "an interval covers which items were drawn as well as how they were split."
    )
    if any(d.variance == SPLITS_ONLY for d in ds) or not sizes:
        return (
            boot + " Results stored without a bootstrap (older runs, or bootstrap: 0) show instead the 2.5-97.5 "
            "percentiles of per-split paired differences, which cover the split only: they understate the "
            "uncertainty unless the calibration share is 1/2."
        )
    return boot


def _main_table(cells: Cells, deployment: dict[tuple[str, str], dict[str, Any]] | None = None) -> Section:
    """Accuracy, coverage and set size per (model, compression); with a study's deployment
    measurements also the weight bytes held and the decode speed, packed where the codes pack."""
    keys = sorted(k for k in cells if k.task == ALL_TASKS)
    rows = [[k.model, k.compression or "dense", *(_pm(cells[k], m, m != "mean_set_size") for m in _MAIN)] for k in keys]
    header = ["model", "compression", "Acc (%)", "Cov (%)", "SS"]
    if deployment:
        header += ["weights (MB)", "decode tok/s", "runs as"]
        for k, row in zip(keys, rows, strict=True):
            d = deployment.get((k.model, k.compression))
            if d is None:
                row += ["-", "-", "-"]
                continue
            runs_as = ", ".join(d.get("formats", {})) or ("bf16" if not k.compression else "bf16 (not packed)")
            row += [f"{d['weight_bytes'] / 1e6:,.0f}", f"{d['decode_tok_s']:.1f}", runs_as]
    h, m = _table(header, rows)
    note = ""
    if deployment:
        threads = ", ".join(str(t) for t in sorted({int(d.get("threads", 0)) for d in deployment.values()}))
        note = (
            " Weights: the bytes the model holds in memory as it runs (packed codes, scales, kernel layouts, "
            f"embeddings); decode: median one-token decode with a KV cache on this machine ({threads} threads), "
            "measured once per model after scoring."
        )
    return Section("Main table (averaged over tasks)", h + (f"<p>{html.escape(note)}</p>" if note else ""), m + note)


_MAIN = ("accuracy", "coverage", "mean_set_size")


def _task_tables(cells: Cells) -> Section:
    tasks = sorted({k.task for k in cells if k.task != ALL_TASKS})
    groups = sorted({(k.model, k.compression) for k in cells})
    header = ["model", "compression", *[f"{t} Acc/Cov/SS" for t in tasks]]
    rows = []
    for model, comp in groups:
        row = [model, comp or "dense"]
        for t in tasks:
            c = cells.get(CellKey(model, comp, t))
            row.append(
                "-"
                if c is None
                else f"{_fmt(c, 'accuracy', True)} / {_fmt(c, 'coverage', True)} / {_fmt(c, 'mean_set_size', False)}"
            )
        rows.append(row)
    h, m = _table(header, rows)
    return Section("Per task", h, m)


def _scatter(ds: list[Any]) -> Section:
    by: dict[CellKey, dict[str, Any]] = {}
    for d in ds:
        by.setdefault(d.key, {})[d.metric] = d
    pairs = [
        (k.model, k.compression, v["accuracy"], v["mean_set_size"])
        for k, v in sorted(by.items())
        if k.task != ALL_TASKS and {"accuracy", "mean_set_size"} <= set(v)
    ]
    if not pairs:
        return Section(
            "Accuracy vs uncertainty",
            "<p>No compressed cells with an uncompressed baseline.</p>",
            "No compressed cells with an uncompressed baseline.",
        )
    png = plots.delta_scatter(pairs)
    img_html, img_md = _image("delta_scatter.png", png, "delta accuracy vs delta set size")
    return Section("Accuracy vs uncertainty", img_html, img_md, [("delta_scatter.png", png)])


def _sweeps(cells: Cells) -> list[Section]:
    out = []
    models = sorted({k.model for k in cells})
    for method, levels in sorted(sweeps_from_labels({k.compression for k in cells}).items()):
        for model in models:
            got = [(lv, cells.get(CellKey(model, label, ALL_TASKS))) for lv, label in levels]
            found = [(lv, c) for lv, c in got if c is not None and "mean_set_size" in c and "accuracy" in c]
            if len(found) < 3:
                continue
            xs = [lv for lv, _ in found]
            ss = [float(c["mean_set_size"].mean()) for _, c in found]
            acc = [float(c["accuracy"].mean()) for _, c in found]
            jump = sweep_jump(xs, ss)
            name = f"sweep_{re.sub(r'[^A-Za-z0-9]+', '_', method)}_{re.sub(r'[^A-Za-z0-9]+', '_', model)}.png"
            png = plots.sweep_plot(f"{method} on {model}", xs, ss, acc, jump)
            img_html, img_md = _image(name, png, f"{method} sweep on {model}")
            out.append(Section(f"Sweep: {method} on {model}", img_html, img_md, [(name, png)]))
    return out


def _coverage(cells: Cells, alpha: float) -> Section:
    keys = sorted(k for k in cells if k.task != ALL_TASKS and "coverage" in cells[k])
    labels = [f"{k.model.split('-')[0]}/{k.compression or 'dense'}/{k.task}" for k in keys]
    png = plots.coverage_plot(labels, [float(cells[k]["coverage"].mean()) for k in keys], 1 - alpha)
    img_html, img_md = _image("coverage.png", png, "coverage against 1 - alpha")
    return Section("Coverage", img_html, img_md, [("coverage.png", png)])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; }} section {{ margin-bottom: 2em; }}
</style></head>
<body><h1>{title}</h1><p>{intro}</p>{body}</body></html>
"""
