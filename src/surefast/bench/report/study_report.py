"""A study's own report, ``studies/<name>/REPORT.md``: the three findings' verdicts with their
evidence, the power the study has, SAGE's acceptance per compressed target, the job log (wall
time, threads, what else ran) and the jobs still to run with their estimated time.

Everything here is computed from the study's stored results and ``run.json``; the sections are
also placed at the top of the HTML report (:func:`surefast.bench.report.build.build_report`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median
from typing import Any

from surefast.bench.analysis import cells_from_rows, decoupling, deltas
from surefast.bench.analysis.cells import Cells
from surefast.bench.analysis.scale import families
from surefast.bench.analysis.verdicts import Verdict, decoupling_verdict, scale_verdict, threshold_verdict
from surefast.bench.power import SCALE, UNIT, PowerPlan
from surefast.bench.report.blocks import Section, md_text
from surefast.bench.report.blocks import table as _table


@dataclass(frozen=True)
class Remaining:
    """A job not yet done, with its estimated minutes here (None: nothing to scale from)."""

    model: str
    compression: str
    minutes: float | None
    basis: str  # how the estimate was made, in words


def verdicts(cells: Cells, sizes: Mapping[str, float], sweeps: Mapping[str, list[tuple[float, str]]]) -> list[Verdict]:
    """Finding I over all cells, II per family with two sizes, III per (sweep, model)."""
    ds = deltas(cells)
    out = [decoupling_verdict(decoupling(ds), ds)]
    fams = families(dict(sizes))
    if not fams:
        out.append(
            Verdict(
                "II",
                "larger models absorb compression-induced uncertainty better",
                "undetermined",
                ["no two sizes of one family measured yet"],
            )
        )
    for members in fams.values():
        ordered = sorted(members, key=lambda m: members[m])
        out.append(scale_verdict(cells, ordered[0], ordered[-1]))
    models = sorted({k.model for k in cells})
    if not sweeps:
        claim = "uncertainty inflates at a threshold rather than gradually"
        out.append(Verdict("III", claim, "undetermined", ["the plan has no sweep (a method at several levels)"]))
    for method, levels in sorted(sweeps.items()):
        for model in models:
            out.append(threshold_verdict(cells, model, method, list(levels)))
    return out


def verdict_section(found: list[Verdict]) -> Section:
    html_parts, md_parts = [], []
    for v in found:
        head = f"Finding {v.finding}: {v.verdict.upper()} — {v.claim}"
        html_parts.append(
            f"<h3>{html.escape(head)}</h3><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in v.evidence) + "</ul>"
        )
        md_parts.append(f"### {md_text(head)}\n\n" + "\n".join(f"- {md_text(e)}" for e in v.evidence))
    return Section("Verdicts", "".join(html_parts), "\n\n".join(md_parts))


def acceptance_section(acceptance: Mapping[str, Mapping[str, Any]]) -> Section | None:
    """SAGE with the dense draft on each job's model: tokens per target forward, relative to the dense target."""
    if not acceptance:
        return None
    header = [
        "target",
        "compression",
        "tokens / target forward",
        "vs dense target",
        "accepted / step",
        "steps accepting none",
        "prompts x tokens",
    ]
    rows = []
    for key in sorted(acceptance, key=lambda k: (k.split("|")[0], k.split("|")[1] != "dense", k)):
        model, label = key.split("|", 1)
        m = acceptance[key]
        if "skipped" in m:
            rows.append([model, label, "-", "-", "-", "-", str(m["skipped"])])
            continue
        dense = acceptance.get(f"{model}|dense", {})
        rel = (
            f"{m['tokens_per_forward'] / dense['tokens_per_forward']:.2f}x" if dense.get("tokens_per_forward") else "-"
        )
        rows.append(
            [
                model,
                label,
                f"{m['tokens_per_forward']:.2f}",
                rel,
                f"{m['mean_accepted']:.2f}",
                f"{100 * m['zero_share']:.0f}%",
                f"{m['prompts']} x {m['max_new_tokens']}",
            ]
        )
    h, md = _table(header, rows)
    draft = next((m.get("draft") for m in acceptance.values() if m.get("draft")), "the dense draft")
    note = (
        f"SAGE, greedy, draft {draft} (dense) on each compressed target; counts, not seconds, so they do not "
        "depend on the machine. The dense draft on the dense model it was made from accepts nearly everything "
        "(an upper bound, not a speed-up)."
    )
    return Section(
        "SAGE acceptance per compressed target", f"<p>{html.escape(note)}</p>{h}", f"{md_text(note)}\n\n{md}"
    )


def power_section(power: PowerPlan) -> Section:
    rows = [
        [r.cell, str(r.items), f"{100 * r.mde['accuracy']:.1f}", f"{r.mde['mean_set_size']:.3f}"] for r in power.rows
    ]
    h, md = _table(["cell", "items", "accuracy (points)", "set size (options)"], rows)
    sds = ", ".join(
        f"{'accuracy' if sd.metric == 'accuracy' else 'set size'} {sd.sd:.3f}"
        + (f" ({sd.low:.3f} to {sd.high:.3f} over {sd.n_cells} cells)" if sd.measured else " (stated default)")
        for sd in power.variance.sds.values()
    )
    text = [
        f"Smallest detectable change (two-sided 5% level, 80% power) at n = {power.n} items per task; per-item sd of the paired difference from {power.variance.source}: {sds}."
    ]
    for need in power.needs:
        name = "accuracy" if need.metric == "accuracy" else "set size"
        text.append(
            f"To detect {name} {SCALE[need.metric] * need.change:g} {UNIT[need.metric]}: {need.one_task} items for one task, "
            f"{need.average} per task averaged over {power.n_tasks} tasks."
        )
    body_html = "".join(f"<p>{html.escape(t)}</p>" for t in text) + h
    return Section("Power", body_html, "\n\n".join(md_text(t) for t in text) + "\n\n" + md)


def jobs_section(jobs: Mapping[str, Mapping[str, Any]], remaining: list[Remaining]) -> Section:
    header = [
        "model",
        "compression",
        "wall (min)",
        "compression (s)",
        "threads",
        "other load (cores)",
        "CPU",
        "started",
        "worker",
    ]
    rows = []
    for j in sorted(jobs.values(), key=lambda job: str(job.get("started", ""))):
        if j.get("skipped"):
            continue
        other = j.get("other_cores")
        rows.append(
            [
                j["model"],
                j["compression"],
                f"{j['seconds'] / 60:.1f}",
                f"{j.get('compression_seconds', 0):.0f}",
                str(j.get("threads") or "-"),
                "-" if other is None else f"{other:.2f}",
                str(j.get("cpu") or "-"),
                str(j.get("started") or "-"),
                str(j.get("worker") or "-"),
            ]
        )
    h, md = _table(header, rows)
    note = (
        "Other load: the CPU time other processes used while the job ran, in cores (0 = the job ran alone; "
        "1 = something else kept one core busy), read from /proc/stat. Jobs finished before it was recorded show '-'."
    )
    parts_h, parts_md = [f"<p>{html.escape(note)}</p>", h], [md_text(note), md]
    if remaining:
        known = [r.minutes for r in remaining if r.minutes is not None]
        total = f"about {sum(known) / 60:.1f} h" if known else "unknown"
        rh, rmd = _table(
            ["model", "compression", "estimated (min)", "basis"],
            [[r.model, r.compression, "-" if r.minutes is None else f"{r.minutes:.0f}", r.basis] for r in remaining],
        )
        head = (
            f"Still to run: {len(remaining)} jobs, {total} on a machine like the last one (rerun the plan to continue)."
        )
        parts_h += [f"<p>{html.escape(head)}</p>", rh]
        parts_md += [md_text(head), rmd]
    else:
        parts_h.append("<p>Every job of the plan is done.</p>")
        parts_md.append("Every job of the plan is done.")
    return Section("Jobs", "".join(parts_h), "\n\n".join(parts_md))


def remaining_jobs(
    todo: list[tuple[str, str]], jobs: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, float]
) -> list[Remaining]:
    """Estimates for ``todo`` (model, compression) from the measured jobs.

    A model with jobs done: its mean scoring time (a job's wall time less its compression) plus
    the compression's time on another model, times how much longer this model's compressions took
    than that model's (the median over compressions both have; the parameter ratio before any
    pair is measured). Compression does not scale with parameters: GPTQ's Hessians grow with the
    square of a layer's width (Qwen2.5-Coder 0.5B -> 1.5B: 3.1x the parameters, 6.6x GPTQ's time).
    Else this model's mean job; a model with no job yet: the same compression on another model
    scaled by parameters, else the measured mean per parameter. Rough either way."""
    done = [j for j in jobs.values() if not j.get("skipped") and j.get("seconds")]
    out = []
    for model, comp in todo:
        size = sizes.get(model)
        mine = [j for j in done if j["model"] == model]
        other = next((j for j in done if j["compression"] == comp and j["model"] != model), None)
        if mine and other is not None:
            scoring = sum(j["seconds"] - j.get("compression_seconds", 0) for j in mine) / len(mine)
            ratio, how = _compression_ratio(done, model, other["model"], sizes)
            minutes = (scoring + ratio * other.get("compression_seconds", 0)) / 60
            basis = f"{model}'s mean scoring time + {comp}'s compression on {other['model']} x {ratio:.1f} ({how})"
        elif mine:
            minutes = sum(j["seconds"] for j in mine) / len(mine) / 60
            basis = f"mean of {model}'s {len(mine)} jobs (their compression times, not this one's)"
        elif other is not None and size and sizes.get(other["model"]):
            minutes = other["seconds"] / 60 * size / sizes[other["model"]]
            basis = f"{comp} on {other['model']}, scaled by parameters"
        elif done and size and all(sizes.get(j["model"]) for j in done):
            minutes = sum(j["seconds"] / sizes[j["model"]] for j in done) / len(done) * size / 60
            basis = "mean job, scaled by parameters"
        else:
            minutes, basis = None, "no job measured yet"
        out.append(Remaining(model, comp, minutes, basis))
    return out


def _compression_ratio(
    done: list[Mapping[str, Any]], model: str, ref: str, sizes: Mapping[str, float]
) -> tuple[float, str]:
    """How many times longer ``model``'s compressions take than ``ref``'s, and how that is known."""
    seconds = {(j["model"], j["compression"]): j.get("compression_seconds", 0) for j in done}
    ratios = [
        seconds[(model, c)] / seconds[(ref, c)]
        for m, c in seconds
        if m == ref and seconds[(ref, c)] >= 1 and seconds.get((model, c), 0) >= 1
    ]
    if ratios:
        return median(ratios), f"median of {len(ratios)} measured compression{'s' if len(ratios) > 1 else ''}"
    if sizes.get(model) and sizes.get(ref):
        return sizes[model] / sizes[ref], "parameter ratio"
    return 1.0, "unscaled: no size known"


def study_sections(
    rows: list[dict[str, Any]],
    sizes: Mapping[str, float],
    sweeps: Mapping[str, list[tuple[float, str]]],
    meta: Mapping[str, Any],
    remaining: list[Remaining],
    power: PowerPlan | None,
    alpha: float = 0.1,
) -> list[Section]:
    """The study report's sections, in order: verdicts, power, acceptance, jobs."""
    cells = cells_from_rows(rows, alpha=alpha)
    out = [verdict_section(verdicts(cells, sizes, sweeps))]
    if power is not None:
        out.append(power_section(power))
    acc = acceptance_section(meta.get("acceptance", {}))
    if acc is not None:
        out.append(acc)
    out.append(jobs_section(meta.get("jobs", {}), remaining))
    return out


__all__ = ["Remaining", "remaining_jobs", "study_sections", "verdicts"]
