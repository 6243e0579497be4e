"""``surefast report RUN [RUN ...]``: HTML + Markdown report from stored results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from surefast.bench.report import build_report, default_report_dir
from surefast.bench.store import Store

console = Console()


def report(
    runs: Annotated[list[str] | None, typer.Argument(help="run ids, unique prefixes, or latest")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: <store>/../reports/<first run id>)")] = None,
    store: Annotated[Path | None, typer.Option(help="results store folder")] = None,
    title: Annotated[str, typer.Option()] = "surefast compression-uncertainty report",
) -> None:
    """Write a self-contained HTML report (and Markdown) from stored results; no model runs."""
    results = Store(store)
    ids = [results.run(r).run_id for r in (runs or ["latest"])]
    folder = out or default_report_dir(results, ids[0])
    path = build_report(results, ids, folder, title=title)
    console.print(f"report: {path.resolve()}  (Markdown beside it)", markup=False)
