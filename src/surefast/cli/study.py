"""``surefast study plan|run PLAN.yaml``: many models x compressions, one store, one report."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from surefast.atomic import write_errors
from surefast.bench.cost import Estimate
from surefast.bench.plan import CompressionSpec, StudyPlan, load_plan
from surefast.bench.power import SCALE, UNIT, PowerPlan, Variance
from surefast.bench.store import Run, Store
from surefast.bench.study import JobOutcome, job_done, run_study_local, run_study_ray
from surefast.errors import SurefastError

app = typer.Typer(
    help="Compression studies: models x compression configs x tasks, analysed and reported.", no_args_is_help=True
)
console = Console()


def _plan(path: Path, n: int | None, data: str | None) -> StudyPlan:
    return load_plan(path, {"n": n, "data": data})


def load_tasks(plan: StudyPlan) -> dict[str, int]:
    """Load every task of the plan once, before any job (each job loads them again, from this
    process's parse cache when local): returns the malformed rows skipped per task."""
    from surefast.bench.runner import task_config
    from surefast.data import load_task

    return {task: load_task(task, task_config(plan.bench, task)).stats.malformed_skipped for task in plan.bench.tasks}


def _mark_stopped(store: Store, plan: StudyPlan, status: str, error: str | None = None) -> None:
    """Record in run.json that this process stopped the study (a rerun sets it running again)."""
    run = Run(store.root, plan.run_id)
    if (run.folder / "run.json").is_file():
        run.update_meta(status=status, stopped=time.time(), **({"error": error} if error else {}))


def estimate_jobs(plan: StudyPlan) -> dict[str, Estimate]:
    """Each model's scoring estimate (measured throughput here x tokens to score)."""
    import gc

    from surefast.bench.cost import estimate
    from surefast.models import load_model

    out = {}
    for model in plan.models:
        loaded = load_model(model, dtype=plan.dtype, work="scoring")
        out[model] = estimate(loaded, plan.bench)
        del loaded
        gc.collect()
    return out


def job_seconds(plan: StudyPlan, comp: CompressionSpec, est: Estimate) -> tuple[float, float]:
    """(scoring, compression) seconds of one job here; compression from :mod:`surefast.bench.cost`."""
    from surefast.bench.cost import compression_seconds
    from surefast.compress.calibration_data import CalibrationConfig

    calib = CalibrationConfig(**dict(plan.calibration))
    return est.seconds, compression_seconds(
        comp.method, dict(comp.options), calib.n_samples * calib.seq_len, est.tokens_per_s
    )


def print_cells(plan: StudyPlan, run: Run | None, estimates: dict[str, Estimate] | None) -> None:
    shape = f"{len(plan.jobs())} jobs x {len(plan.bench.tasks)} tasks x {len(plan.bench.strategies)} strategies"
    table = Table(title=escape(f"study {plan.name} ({plan.run_id}): {shape}, n={plan.bench.n}"))
    # Model specs and labels are what a user types next (study/report commands): never cut them.
    table.add_column("model", no_wrap=True, min_width=max(len(m) for m in plan.models))
    table.add_column("compression", no_wrap=True, min_width=max(len(c.label) for c in plan.compressions))
    for col in ("method options", "est. scoring + compression", "status"):
        table.add_column(col)
    total = [0.0, 0.0]
    for model, comp in plan.jobs():
        done = run is not None and job_done(run, plan, model, comp)
        options = ", ".join(f"{k}={v}" for k, v in comp.options) if comp.method else "-"
        cost = "-"
        if estimates is not None and not done:
            score_s, compress_s = job_seconds(plan, comp, estimates[model])
            total[0], total[1] = total[0] + score_s, total[1] + compress_s
            cost = f"{score_s / 60:.1f} + {compress_s / 60:.1f} min"
        table.add_row(
            escape(model),
            escape(comp.label),
            escape(f"{comp.method or ''} {options}".strip()),
            cost,
            "[green]done[/]" if done else "to do",
        )
    console.print(table)
    if estimates is not None:
        console.print(
            f"to do: about {sum(total) / 60:.0f} min on this machine ({total[0] / 60:.0f} min scoring at the "
            f"prefill speed measured here, model loading not included; {total[1] / 60:.0f} min compressing, "
            "a rough model good to a factor of two)"
        )


def variance_of_run(store: Store, run_id: str) -> Variance | None:
    """The variance measured on a stored run (:func:`surefast.bench.power.variance_of_rows`), at the
    items per task its run.json records; None when it has no results or no paired, bootstrapped cells."""
    from surefast.bench.power import variance_of_rows
    from surefast.bench.report.build import load_rows

    run = store.run(run_id)  # an id, a unique prefix or "latest"
    n0 = run.read_meta().get("config", {}).get("n")
    if not isinstance(n0, int) or n0 < 1:
        return None
    try:
        rows, _ = load_rows(store, [run.run_id])
    except SurefastError:  # no results stored yet
        return None
    return variance_of_rows(rows, n0, f"run {run.run_id} ({n0} items per task)")


def plan_variance(plan: StudyPlan, results: Store, pilot: str | None) -> Variance:
    """The per-item variance behind the power table: the pilot's, else the plan's own run's, else the defaults."""
    from surefast.bench.power import default_variance

    if pilot is not None:
        folder = Path(pilot)
        if (folder / "run.json").is_file():  # a run folder: <store>/runs/<id>
            where, run_id = Store(folder.parent.parent), folder.name
        elif (folder / "runs").is_dir():  # a store folder: its latest run
            where, run_id = Store(folder), "latest"
        else:
            where, run_id = results, pilot
        try:
            measured = variance_of_run(where, run_id)
        except SurefastError as exc:
            raise SurefastError(f"--pilot: {exc.message}", exc.hint) from None
        if measured is None:
            raise SurefastError(
                f"--pilot: {pilot} has no compressed cell paired with its dense one, with bootstrap replicates, "
                "to measure the variance on",
                "run a small study with bootstrap > 0, the dense model and at least one compression",
            )
        return measured
    if plan.run_id in results.runs():
        measured = variance_of_run(results, plan.run_id)
        if measured is not None:
            return measured
    return default_variance()


def print_power(power: PowerPlan) -> None:
    """The smallest change each cell can detect at the planned n, and the items the named changes need."""
    from surefast.bench.power import DEFAULT_DISCORDANCE

    z = power.config
    table = Table(title=f"smallest detectable change (two-sided {100 * z.alpha:g}% level, {100 * z.power:g}% power)")
    for col in ("cell", "items", "accuracy (points)", "set size (options)"):
        table.add_column(col)
    for row in power.rows:
        table.add_row(row.cell, str(row.items), f"{100 * row.mde['accuracy']:.1f}", f"{row.mde['mean_set_size']:.2f}")
    console.print(table)
    sds = []
    for sd in power.variance.sds.values():
        name = "accuracy" if sd.metric == "accuracy" else "set size"
        if sd.measured:
            note = f" ({sd.low:.2f} to {sd.high:.2f} over {sd.n_cells} cells)"
        else:
            note = f" (discordance {DEFAULT_DISCORDANCE:g})" if sd.metric == "accuracy" else " option"
        sds.append(f"{name} {sd.sd:.2f}{note}")
    measured = any(sd.measured for sd in power.variance.sds.values())
    where = f"measured on {power.variance.source}" if measured else f"{power.variance.source}, no run to measure it on"
    console.print(
        f"variance: {where}; per-item sd of the paired difference: {', '.join(sds)}"
        + ("" if measured else "; measure it on a pilot run with --pilot RUN (docs/study.md, Power)"),
        markup=False,
        highlight=False,
    )
    if power.needs:
        needs = Table(title="items per task to detect a change")
        cols = ["change", "one task"] + ([f"averaged over {power.n_tasks} tasks"] if power.n_tasks > 1 else [])
        for col in cols:
            needs.add_column(col)
        for need in power.needs:
            name = "accuracy" if need.metric == "accuracy" else "set size"
            change = f"{name} {SCALE[need.metric] * need.change:g} {UNIT[need.metric]}"
            needs.add_row(change, str(need.one_task), *([str(need.average)] if power.n_tasks > 1 else []))
        console.print(needs)


@app.command("plan")
def plan_cmd(
    path: Annotated[Path, typer.Argument(help="study plan (YAML)")],
    n: Annotated[int | None, typer.Option(help="override items per task")] = None,
    data: Annotated[str | None, typer.Option(help="override the task data folder")] = None,
    store: Annotated[Path | None, typer.Option(help="results store folder")] = None,
    estimate: Annotated[bool, typer.Option(help="load each model to measure its speed here")] = True,
    detect: Annotated[
        str | None,
        typer.Option(help="changes to detect, e.g. acc=2,set_size=0.2 (accuracy points, set-size options)"),
    ] = None,
    pilot: Annotated[
        str | None,
        typer.Option(help="measure the variance on this run: an id in --store, a run folder, or a store (its latest)"),
    ] = None,
) -> None:
    """List a plan's jobs, what is already done, the estimated time on this machine, and its power."""
    from surefast.bench.power import parse_detect, power_plan

    plan = _plan(path, n, data)
    targets = parse_detect(detect) if detect is not None else {}  # a bad --detect stops before any model loads
    results = Store(store if store is not None else plan.store)
    variance = plan_variance(plan, results, pilot)
    run = Run(results.root, plan.run_id) if plan.run_id in results.runs() else None
    print_cells(plan, run, estimate_jobs(plan) if estimate else None)
    print_power(power_plan(plan.bench.n, len(plan.bench.tasks), variance, targets))


@app.command("run")
def run_cmd(
    path: Annotated[Path, typer.Argument(help="study plan (YAML)")],
    n: Annotated[int | None, typer.Option(help="override items per task")] = None,
    data: Annotated[str | None, typer.Option(help="override the task data folder")] = None,
    store: Annotated[Path | None, typer.Option(help="results store folder")] = None,
    executor: Annotated[str, typer.Option(help="local (sequential) or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one)")] = None,
    gpus_per_job: Annotated[float, typer.Option(help="GPUs per Ray job")] = 0.0,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="report folder (default <store>/../reports/<run id>)")
    ] = None,
    estimate: Annotated[bool, typer.Option(help="measure and print the time estimate first")] = True,
    commit: Annotated[
        bool, typer.Option(help="git commit the plan's store and score cache after each job (a study kept in git)")
    ] = False,
) -> None:
    """Run every (model, compression) job of a plan, then write the report. Safe to kill and rerun."""
    from surefast.bench.report import build_report, default_report_dir

    plan = _plan(path, n, data)  # the whole plan is checked here, before anything runs
    if executor not in ("local", "ray"):
        raise SurefastError(f"unknown executor {executor!r}", "choose local or ray")
    malformed = load_tasks(plan)  # a missing source or a malformed row stops the study here, not in a job
    results = Store(store if store is not None else plan.store)
    existing = Run(results.root, plan.run_id) if plan.run_id in results.runs() else None
    print_cells(plan, existing, estimate_jobs(plan) if estimate else None)
    if any(malformed.values()):
        console.print(
            f"[yellow]skipped {sum(malformed.values())} malformed rows "
            f"({', '.join(f'{t}: {k}' for t, k in malformed.items() if k)})[/]"
        )
    command = " ".join(["surefast", *sys.argv[1:]])
    start = time.perf_counter()

    def on_job(outcome: JobOutcome) -> None:
        what = "already done" if outcome.skipped else f"{outcome.seconds / 60:.1f} min"
        extra = f" (compression {outcome.compression_seconds:.0f} s)" if outcome.compression_seconds else ""
        console.print(f"[green]✓[/] {escape(outcome.model)} / {escape(outcome.compression)}: {what}{extra}")
        if commit and not outcome.skipped:
            note = commit_study(plan, results, f"{outcome.model} / {outcome.compression}, {what}{extra}")
            if note:
                console.print(f"[yellow]{escape(note)}[/]")

    try:
        if executor == "ray":
            run = run_study_ray(plan, results, command, ray_address, gpus_per_job, on_job)
        else:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as bar:
                job = bar.add_task("starting", total=None)
                unit = bar.add_task("", total=None)

                def status(text: str) -> None:
                    bar.update(job, description=text)

                def progress(label: str, done: int, total: int) -> None:
                    bar.update(unit, description=f"  {label}", completed=done, total=total)

                run = run_study_local(plan, results, command, progress, status, on_job)
    except KeyboardInterrupt:  # a stopped study must not read "running" until it is run again
        _mark_stopped(results, plan, "interrupted")
        raise
    except Exception as exc:  # a SurefastError or a bug: either way, say so in run.json
        _mark_stopped(results, plan, "failed", str(exc) if isinstance(exc, SurefastError) else repr(exc))
        raise
    minutes = (time.perf_counter() - start) / 60
    console.print(f"study finished in {minutes:.1f} min; results in {run.folder}", markup=False)
    too_long = ", ".join(f"{part}: {len(uids)}" for part, uids in run.read_meta().get("too_long", {}).items())
    if too_long:  # part names hold labels from the plan: printed as plain text, not markup
        console.print(
            f"left out items longer than the model's context even without their own context ({too_long}; "
            "their uids are in run.json)",
            style="yellow",
            markup=False,
            highlight=False,
        )
    if plan.store is not None and report_dir is None:  # a study with its own folder: REPORT.md and report/
        written = write_study_report(plan, results, None, None)
        console.print(f"[bold]report:[/] {escape(str(written.resolve()))}")
        return
    folder = report_dir or default_report_dir(results, run.run_id)
    html = build_report(
        results, [run.run_id], folder, title=f"surefast study: {plan.name}", lead=see_also(plan, folder)
    )
    console.print(f"[bold]report:[/] {escape(str(html.resolve()))}")


def commit_study(plan: StudyPlan, results: Store, what: str) -> str | None:
    """``git add`` the study's store and score cache and commit them, so another clone resumes from
    here; returns a one-line warning when git refuses (the study goes on: its files are safe on disk)."""
    import subprocess

    paths = [str(results.root), *([plan.scores] if plan.scores else [])]
    where = Path(paths[0])
    try:
        subprocess.run(["git", "add", "--", *paths], cwd=where, check=True, capture_output=True, text=True)
        staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], cwd=where, capture_output=True)
        if staged.returncode == 0:
            return None  # nothing new
        message = f"study {plan.name}: {what}"
        subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", *paths], cwd=where, check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"--commit: git did not commit ({' '.join(str(detail).split())[:200]}); the results are on disk"
    return None


def see_also(plan: StudyPlan, report_dir: Path) -> list[Any]:
    """The report's first section when the plan names a fuller study's report (``see_also``)."""
    import html
    import os

    from surefast.bench.report.blocks import Section, md_text

    if plan.see_also is None:
        return []
    target = Path(plan.see_also)
    href = os.path.relpath(target, report_dir.resolve())
    shown = "/".join(target.parts[-3:])
    text = f"This is a small slice. The full example, with the power to answer its questions: {shown}"
    body = f'<p>{html.escape(text.rsplit(": ", 1)[0])}: <a href="{html.escape(href)}">{html.escape(shown)}</a></p>'
    return [Section("The full example", body, f"{md_text(text.rsplit(': ', 1)[0])}: [{md_text(shown)}]({href})")]


def _packaged_size(model: str) -> float | None:
    """A packaged model's parameter count from the registry (``"1,777M"``), before it is ever loaded."""
    from surefast.models.registry import REGISTRY

    entry = REGISTRY.get(model)
    if entry is None:
        return None
    text = entry.params.replace(",", "").strip()
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:].upper())
    try:
        return float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        return None


def write_study_report(plan: StudyPlan, results: Store, pilot: str | None, out: Path | None) -> Path:
    """``REPORT.md`` (verdicts, power, acceptance, jobs) and the HTML report under ``out/report``;
    ``out`` defaults to the folder holding the plan's store (``studies/<name>/``). Returns REPORT.md."""
    from surefast.bench.power import parse_detect, power_plan
    from surefast.bench.report import build_report, default_report_dir
    from surefast.bench.report.build import load_rows, sweeps_from_labels
    from surefast.bench.report.study_report import remaining_jobs, study_sections

    if plan.run_id not in results.runs():
        raise SurefastError(
            f"nothing stored yet for {plan.source or plan.name} in {results.root}",
            f"run `surefast study run {plan.source}` first",
        )
    run = Run(results.root, plan.run_id)
    meta = run.read_meta()
    rows, sizes = load_rows(results, [run.run_id])
    known = {m: s for m in plan.models if (s := sizes.get(m) or _packaged_size(m)) is not None}
    todo = [(m, c.label) for m, c in plan.jobs() if not job_done(run, plan, m, c)]
    variance = plan_variance(plan, results, pilot)
    power = power_plan(plan.bench.n, len(plan.bench.tasks), variance, parse_detect("acc=2,set_size=0.2"))
    sweeps = sweeps_from_labels({c.label for c in plan.compressions})
    alpha = min(plan.bench.alphas, key=lambda a: abs(a - 0.1))
    lead = study_sections(rows, sizes, sweeps, meta, remaining_jobs(todo, meta.get("jobs", {}), known), power, alpha)
    folder = out or (Path(plan.store).parent if plan.store else default_report_dir(results, run.run_id))
    # studies/<name>/ holds REPORT.md and report/; another plan sharing the store (its pilot)
    # writes REPORT-<its name>.md and report-<its name>/ beside them, never over them
    suffix = "" if folder.name == plan.name or out is not None else f"-{plan.name}"
    build_report(results, [run.run_id], folder / f"report{suffix}", title=f"surefast study: {plan.name}", lead=lead)
    done = len(plan.jobs()) - len(todo)
    intro = (
        f"Plan `{plan.source}`, run `{run.run_id}`: {done} of {len(plan.jobs())} jobs done, "
        f"n = {plan.bench.n} items per task, tasks {', '.join(plan.bench.tasks)}, strategies "
        f"{', '.join(plan.bench.strategies)}, scores {', '.join(plan.bench.score_fns)}, alpha {alpha:g}, "
        f"{plan.bench.n_splits} splits, {plan.bench.n_boot} item-bootstrap replicates. Written by "
        f"`surefast study report {plan.source}` from the stored results; the verdicts change as jobs finish."
    )
    others = sorted(p.name for p in folder.glob("REPORT*.md") if p.name != f"REPORT{suffix}.md")
    if others:  # e.g. the pilot's report beside the study's
        intro += " Also in this folder: " + ", ".join(f"[{name}]({name})" for name in others) + "."
    md = (
        f"# Study {plan.name}: the three findings\n\n{intro}\n\n"
        + "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in lead)
        + "\n\nThe full report (every cell, plots, conditional coverage, per-item diagnostics) is "
        f"[report{suffix}/report.html](report{suffix}/report.html), written beside this file by the same command "
        "(not kept in git: it is rebuilt in seconds from the stored results).\n"
    )
    path = folder / f"REPORT{suffix}.md"
    with write_errors(folder):
        path.write_text(md)
    return path


@app.command("report")
def report_cmd(
    path: Annotated[Path, typer.Argument(help="study plan (YAML)")],
    store: Annotated[Path | None, typer.Option(help="results store folder (default: the plan's store)")] = None,
    pilot: Annotated[
        str | None, typer.Option(help="measure the power's variance on this run (default: the study's own run)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="folder for REPORT.md and report/ (default: the folder of the plan's store)")
    ] = None,
) -> None:
    """The study's verdicts on the three findings (REPORT.md) and its HTML report, from what is stored."""
    plan = _plan(path, None, None)
    results = Store(store if store is not None else plan.store)
    written = write_study_report(plan, results, pilot, out)
    console.print(f"[bold]report:[/] {escape(str(written.resolve()))}")
