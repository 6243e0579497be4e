"""``surefast bench run|show|export|prompt|import-lmeval``: the conformal uncertainty benchmark."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from surefast.atomic import write_errors
from surefast.bench.cost import estimate
from surefast.bench.runner import DEPTH_METRICS, STRATEGIES, BenchConfig, run_bench, start_run, summary
from surefast.bench.store import Store
from surefast.cli.progress import progress_bar
from surefast.data.items import TASKS
from surefast.errors import SurefastError
from surefast.models import DEFAULT_MODEL, load_model, parse_spec

app = typer.Typer(help="The compression-uncertainty benchmark: accuracy, coverage and set size.", no_args_is_help=True)
console = Console() if sys.stdout.isatty() else Console(width=120)  # piped: room for the whole table
DEFAULTS = BenchConfig()


def _split_list(value: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    if value == "all":
        return allowed
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for item in items:
        if item not in allowed:
            raise SurefastError(f"{flag}: unknown value {item!r}", f"choose from {', '.join(allowed)} or all")
    return items


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or value != value:  # NaN
        return "-"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def print_summary(rows: list[dict[str, Any]], title: str, options: str = "6 options") -> None:
    table = Table(title=escape(title))
    for col in ("model", "compression", "task", "Acc%", "Cov%", "SS", "UAcc%"):
        table.add_column(col, justify="left" if col.islower() else "right", no_wrap=True)
    for r in rows:
        style = "bold" if r["task"] == "avg" else None
        table.add_row(
            escape(r["model"]),
            escape(r["compression"]),
            escape(r["task"]),
            _fmt(r.get("accuracy"), True),
            _fmt(r.get("coverage"), True),
            _fmt(r.get("mean_set_size")),
            _fmt(r.get("uacc"), True),
            style=style,
        )
    console.print(table)
    console.print(
        "[dim]means over prompt strategies, LAC/APS and random calibration/test splits; "
        f"alpha = {rows[0]['alpha'] if rows else '-'}; SS = mean prediction-set size of {options}[/]"
    )


def print_depth(rows: list[dict[str, Any]], paired: list[dict[str, Any]]) -> None:
    """Error detection, selective prediction, the worst groups' coverage and the paired flips
    (docs/conformal.md explains each column)."""
    flips = {(r["model"], r["compression"], r["task"], r["metric"]): r["value"] for r in paired}
    columns = ("AUROC", "SelAcc80%", "AURC", "Brier", "NLL", "worst pos Cov%", "gap pos", "worst subj Cov%")
    table = Table(title="uncertainty in depth")
    for col in ("model", "compression", "task", *columns, "r->w", "w->r", "McNemar p"):
        table.add_column(col, justify="left" if col.islower() else "right", no_wrap=True)
    for r in rows:
        key = (r["model"], r["compression"], r["task"])
        flip = [flips.get((*key, m)) for m in ("flips_right_to_wrong", "flips_wrong_to_right", "mcnemar_p")]
        table.add_row(
            escape(r["model"]),
            escape(r["compression"]),
            escape(r["task"]),
            _fmt(r.get("auroc")),
            _fmt(r.get("selective_accuracy_80"), True),
            _fmt(r.get("aurc")),
            _fmt(r.get("brier")),
            _fmt(r.get("nll")),
            _fmt(r.get("coverage_worst@position"), True),
            _fmt(r.get("coverage_gap@position"), True),
            _fmt(r.get("coverage_worst@subject"), True),
            *("-" if v is None else f"{v:.0f}" for v in flip[:2]),
            "-" if flip[2] is None else f"{flip[2]:.3g}",
            style="bold" if r["task"] == "avg" else None,
        )
    console.print(table)
    console.print(
        "[dim]worst pos / gap pos: the lowest coverage over true-answer positions and the mean |coverage - "
        "(1 - alpha)| over them (groups with >= 20 test items); r->w / w->r: answers flipped against the dense "
        "model on the same items, pooled over strategies, with McNemar's exact p[/]"
    )


def _parse_alphas(alphas: str) -> tuple[float, ...]:
    try:
        return tuple(float(a) for a in alphas.split(","))
    except ValueError:
        raise SurefastError(
            f"--alphas {alphas!r} is not a comma list of numbers", "give error rates such as 0.1 or 0.05,0.1"
        ) from None


@app.command()
def run(
    model: Annotated[str, typer.Option(help="model spec")] = DEFAULT_MODEL,
    tasks: Annotated[str, typer.Option(help=f"comma list of {', '.join(TASKS)}, or all")] = "all",
    strategies: Annotated[str, typer.Option(help="comma list of base, shared, task, or all")] = "all",
    n: Annotated[int, typer.Option(help="items per task")] = DEFAULTS.n,
    seed: Annotated[int, typer.Option(help="sampling, shuffling and split seed")] = DEFAULTS.seed,
    shots: Annotated[
        int | None, typer.Option(help="few-shot demos (default: the reference count per task; 0 = zero-shot)")
    ] = None,
    chat: Annotated[
        bool | None, typer.Option("--chat/--no-chat", help="chat template (default: if the tokenizer has one)")
    ] = None,
    score_fns: Annotated[str, typer.Option(help="comma list of conformal scores")] = ",".join(DEFAULTS.score_fns),
    alphas: Annotated[str, typer.Option(help="comma list of error rates")] = ",".join(map(str, DEFAULTS.alphas)),
    splits: Annotated[int, typer.Option(help="random calibration/test splits")] = DEFAULTS.n_splits,
    data: Annotated[str | None, typer.Option(help="folder with task files in the documented layout")] = None,
    skip_malformed: Annotated[
        bool, typer.Option("--skip-malformed", help="skip and count rows of the task files that cannot become items")
    ] = DEFAULTS.skip_malformed,
    dtype: Annotated[str, typer.Option(help="auto (measured once per machine), bf16, fp16 or fp32")] = "auto",
    store: Annotated[Path | None, typer.Option(help="results store folder (default $SUREFAST_HOME/results)")] = None,
) -> None:
    """Score a model on the tasks under each prompt strategy and print accuracy, coverage, set size."""
    # Every flag is checked here, before the model loads (BenchConfig checks ranges and score names).
    alpha_values = _parse_alphas(alphas)
    config = BenchConfig(
        tasks=_split_list(tasks, TASKS, "--tasks"),
        strategies=_split_list(strategies, STRATEGIES, "--strategies"),
        n=n,
        seed=seed,
        n_shots=shots,
        chat=chat,
        score_fns=tuple(s.strip() for s in score_fns.split(",") if s.strip()),
        alphas=alpha_values,
        n_splits=splits,
        data=data,
        skip_malformed=skip_malformed,
    )
    spec = parse_spec(model)
    with progress_bar() as progress:
        loaded = load_model(spec, dtype=dtype, progress=progress, work="scoring")
    est = estimate(loaded, config)
    n_tasks, n_strategies = len(config.tasks), len(config.strategies)
    console.print(
        f"{n_tasks} task{'s' * (n_tasks != 1)} x {n_strategies} strateg{'ies' if n_strategies != 1 else 'y'}, "
        f"{est.items:,} items, "
        f"{est.tokens:,} tokens to score: about {est.seconds / 60:.1f} min on this machine "
        f"({est.tokens_per_s:,.0f} tokens/s measured; cached logits are free)"
    )
    results_store = Store(store)
    bench_run = start_run(results_store, config, " ".join(["surefast", *sys.argv[1:]]), [model])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            handle = bar.add_task("scoring", total=est.items)
            state: dict[str, Any] = {"label": None, "base": 0, "total": 0}

            def update(label: str, done: int, total: int) -> None:
                if label != state["label"]:  # a new unit: the previous one's items are all done
                    state.update(label=label, base=state["base"] + state["total"], total=total)
                bar.update(handle, completed=state["base"] + done, description=f"scoring {label}")

            units = run_bench(loaded, config, bench_run, progress=update)
    except KeyboardInterrupt:  # the run is over: it must not read "running" for ever
        bench_run.update_meta(status="interrupted", seconds=time.perf_counter() - start)
        raise
    except Exception as exc:  # a SurefastError or a bug: either way, say so in run.json
        error = str(exc) if isinstance(exc, SurefastError) else repr(exc)
        bench_run.update_meta(status="failed", seconds=time.perf_counter() - start, error=error)
        raise
    bench_run.update_meta(status="done", seconds=time.perf_counter() - start, units=[u.__dict__ for u in units])
    shortened = sum(u.shortened for u in units)
    if shortened:
        console.print(f"[yellow]{shortened} items had their own context shortened to fit the model[/]")
    malformed = {u.task: u.malformed for u in units if u.malformed}
    if malformed:
        console.print(
            f"[yellow]skipped {sum(malformed.values())} malformed rows "
            f"({', '.join(f'{t}: {k}' for t, k in malformed.items())})[/]"
        )
    too_long = [f"{u.task}/{u.strategy}: {u.too_long}" for u in units if u.too_long]
    if too_long:
        console.print(
            f"[yellow]left out items longer than the model's context even without their own context "
            f"({', '.join(too_long)}; their uids are in run.json)[/]"
        )
    print_summary(summary(results_store, bench_run.run_id), f"run {bench_run.run_id}")
    console.print(f"stored in {bench_run.folder}  (surefast bench show {bench_run.run_id})", markup=False)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id, unique prefix, or latest")] = "latest",
    alpha: Annotated[float | None, typer.Option(help="error rate (default: the run's first)")] = None,
    store: Annotated[Path | None, typer.Option(help="results store folder")] = None,
    depth: Annotated[
        bool, typer.Option("--depth/--no-depth", help="also error detection, worst groups and paired flips")
    ] = True,
) -> None:
    """Print a stored run's summary tables again (from the store; no model runs)."""
    results_store = Store(store)
    run_obj = results_store.run(run_id)
    rows = summary(results_store, run_obj.run_id, alpha)
    if not rows:  # an empty table with exit 0 would read as "nothing to report"
        meta = run_obj.read_meta()
        status, error = meta.get("status", "unknown"), meta.get("error")
        raise SurefastError(
            f"run {run_obj.run_id} has no results (status: {status}{f'; error: {error}' if error else ''})",
            "run its command again (it resumes)" if status != "running" else "it may still be running elsewhere",
        )
    print_summary(rows, f"run {run_obj.run_id}")
    if depth:
        from surefast.bench.analysis.paired import paired_from_store, paired_rows, pool_strategies

        a = float(rows[0]["alpha"])
        paired = paired_rows(pool_strategies(paired_from_store(results_store, [run_obj.run_id], alpha=a)))
        print_depth(summary(results_store, run_obj.run_id, a, metrics=DEPTH_METRICS), paired)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="run id, unique prefix, or latest")] = "latest",
    out: Annotated[Path, typer.Option(help="output file: .csv or .md")] = Path("summary.csv"),
    rows: Annotated[bool, typer.Option("--rows", help="every tidy row instead of the summary (CSV only)")] = False,
    store: Annotated[Path | None, typer.Option(help="results store folder")] = None,
) -> None:
    """Write a run's summary (or all its tidy rows) as CSV or Markdown."""
    results_store = Store(store)
    run_obj = results_store.run(run_id)
    if rows:
        if out.suffix != ".csv":
            raise SurefastError("--rows writes CSV", "give --out FILE.csv")
        rel = results_store.query(
            "SELECT * FROM results WHERE run_id = $run ORDER BY ALL", runs=[run_obj.run_id], run=run_obj.run_id
        )
        header = [d[0] for d in rel.description]
        data = rel.fetchall()
    else:
        table = summary(results_store, run_obj.run_id)
        header = ["model", "compression", "task", "alpha", "accuracy", "coverage", "mean_set_size", "uacc"]
        data = [[r.get(h, "") for h in header] for r in table]
    if out.suffix not in (".csv", ".md"):
        raise SurefastError(f"unknown export format {out.suffix!r}", "use a .csv or .md file name")
    with write_errors(out.parent):
        if out.suffix == ".csv":
            with out.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(header)
                writer.writerows(data)
        else:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += [
                "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in data
            ]
            out.write_text("\n".join(lines) + "\n")
    console.print(f"wrote {len(data)} rows to {out}", markup=False)


@app.command()
def prompt(
    task: Annotated[str, typer.Option(help=", ".join(TASKS))] = "mmlu",
    strategy: Annotated[str, typer.Option(help="base, shared or task")] = "shared",
    item: Annotated[int, typer.Option(help="index of the evaluated item")] = 0,
    model: Annotated[str, typer.Option(help="model spec (its tokenizer and chat template)")] = DEFAULT_MODEL,
    n: Annotated[int, typer.Option(help="items per task")] = DEFAULTS.n,
    seed: Annotated[int, typer.Option()] = DEFAULTS.seed,
    shots: Annotated[int | None, typer.Option(help="few-shot demos (default: the reference count)")] = None,
    chat: Annotated[bool | None, typer.Option("--chat/--no-chat")] = None,
    data: Annotated[str | None, typer.Option(help="folder with task files")] = None,
    skip_malformed: Annotated[
        bool, typer.Option("--skip-malformed", help="skip rows that cannot become items")
    ] = False,
) -> None:
    """Print exactly what the model sees for one item (then, dimmed, its right answer)."""
    from surefast.data import LETTERS, TaskConfig, load_task
    from surefast.prompts import PromptConfig, render_for_display

    # Only what showing a prompt needs is checked: no BenchConfig, whose conformal checks (enough
    # calibration items for alpha) have nothing to do with one item's text.
    for flag, value, allowed in (("--task", task, TASKS), ("--strategy", strategy, STRATEGIES)):
        if value not in allowed:
            raise SurefastError(f"{flag}: unknown value {value!r}", f"choose from {', '.join(allowed)}")
    tconfig = TaskConfig(
        n=n, seed=seed, n_demos=shots, skip_malformed=skip_malformed, source=None if data is None else str(Path(data))
    )
    if not 0 <= item < n:
        raise SurefastError(
            f"--item {item} is outside 0..{n - 1} (--n {n} items)",
            "items are numbered from 0 in sampling order; raise --n for a later one",
        )
    spec = parse_spec(model)
    tokenizer = _tokenizer_only(spec) if spec.kind != "tiny" else load_model(spec).tokenizer
    text = render_for_display(task, strategy, item, tokenizer, tconfig, PromptConfig(n_shots=shots, chat=chat))
    sys.stdout.write(text + "\n")
    answer = LETTERS[load_task(task, tconfig).items[item].label]
    console.print(f"[dim]--- end of prompt; the right answer is {answer}[/]")


def _tokenizer_only(spec: Any) -> Any:
    """The tokenizer of a spec without loading its weights (fast for big models)."""
    from transformers import AutoTokenizer

    from surefast.models.load import resolve_folder

    folder = resolve_folder(spec)
    return AutoTokenizer.from_pretrained(folder or spec.target)


@app.command("import-lmeval")
def import_lmeval(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="the folder lm_eval --log_samples --output_path wrote, or its results_*.json"
        ),
    ],
    model: Annotated[str | None, typer.Option(help="model label (default: model_args' pretrained=)")] = None,
    compression: Annotated[
        str, typer.Option(help="compression label of this model, to pair it with the dense model's import")
    ] = "",
    normalize: Annotated[
        bool, typer.Option("--normalize", help="divide log-likelihoods by option length, as lm-eval's acc_norm")
    ] = False,
    score_fns: Annotated[str, typer.Option(help="comma list of conformal scores")] = ",".join(DEFAULTS.score_fns),
    alphas: Annotated[str, typer.Option(help="comma list of error rates")] = ",".join(map(str, DEFAULTS.alphas)),
    splits: Annotated[int, typer.Option(help="random calibration/test splits")] = DEFAULTS.n_splits,
    bootstrap: Annotated[int, typer.Option(help="item-bootstrap replicates (0: none)")] = DEFAULTS.n_boot,
    seed: Annotated[int, typer.Option(help="split seed")] = DEFAULTS.seed,
    run_id: Annotated[str | None, typer.Option(help="id of the new run (default: a dated one)")] = None,
    store: Annotated[Path | None, typer.Option(help="results store folder (default $SUREFAST_HOME/results)")] = None,
) -> None:
    """Store an lm-evaluation-harness run's multiple-choice tasks as a run: every analysis and report reads it."""
    from surefast.bench.lmeval_import import ImportConfig, import_lmeval, read_lmeval

    config = ImportConfig(
        score_fns=tuple(s.strip() for s in score_fns.split(",") if s.strip()),
        alphas=_parse_alphas(alphas),
        n_splits=splits,
        n_boot=bootstrap,
        seed=seed,
        normalize=normalize,
        compression=compression,
    )
    parsed = read_lmeval(source, model)
    results_store = Store(store)
    command = " ".join(["surefast", *sys.argv[1:]])
    bench_run, units = import_lmeval(parsed, results_store, config, command=command, run_id=run_id)
    console.print(f"run {bench_run.run_id}: {parsed.model} from {parsed.results}", markup=False)
    for note in parsed.notes:
        console.print(f"note: {note}", style="yellow", markup=False)
    for u in units:
        theirs = "" if u.lm_eval_acc is None else f" (lm-eval {'acc_norm' if normalize else 'acc'} {u.lm_eval_acc:.4f})"
        leaves = f", {u.leaves} lm-eval tasks" if u.leaves > 1 else ""
        repeats = f", {u.repeats} repeated lines dropped" if u.repeats else ""
        console.print(
            f"{u.task}: {u.n_items} items, K={u.k}, accuracy {u.accuracy:.4f}{theirs}{leaves}{repeats}", markup=False
        )
    ks = sorted({u.k for u in units})
    options = f"{ks[0]} options" if len(ks) == 1 else f"K options (K = {', '.join(map(str, ks))} by task)"
    print_summary(summary(results_store, bench_run.run_id), f"run {bench_run.run_id}", options)
    console.print(f"stored in {bench_run.folder}  (surefast bench show {bench_run.run_id})", markup=False)
