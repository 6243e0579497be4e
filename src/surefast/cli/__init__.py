"""The ``surefast`` command: thin wrappers over the library API, one module per command group."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.text import Text

from surefast.errors import SurefastError

app = typer.Typer(
    help="surefast: compress LLMs, measure what they still know (conformal), decode them fast (SAGE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


@functools.cache  # once per process: each call added every command again, and main() ran slower each time
def _register() -> None:
    from surefast.cli import bench, compress, demo, models, report, speculate, study

    app.add_typer(models.app, name="models")
    app.add_typer(bench.app, name="bench")
    app.add_typer(study.app, name="study")
    app.command("demo")(demo.demo)
    app.command("generate")(demo.generate)
    app.command("report")(report.report)
    app.command("compress")(compress.compress)
    app.command("speculate")(speculate.speculate)


EXIT_USER_ERROR = 2  # a SurefastError: something the user can fix (click's usage errors exit 2 too)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
# Anything else (a bug) leaves with Python's own traceback and exit code 1.


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning :class:`SurefastError` into a one-line message and exit code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except SurefastError as exc:
        # Text, not markup: messages quote paths, data rows and model text, where "[/x]" would
        # crash Rich's markup parser and "[i]" would vanish. soft_wrap: one line, never cut at 80.
        err_console.print(Text.assemble(("error:", "bold red"), " ", exc.message), soft_wrap=True)
        if exc.hint:
            err_console.print(Text.assemble(("hint:", "yellow"), " ", exc.hint), soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished work is kept in the cache; run the command again to resume")
        sys.exit(EXIT_INTERRUPTED)
