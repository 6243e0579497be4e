"""Terminal output shared by the commands: Rich progress bars behind the library's plain
``progress(what, done, total)`` callbacks, and model text written verbatim."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from surefast.models.fetch import ProgressFn


@contextmanager
def progress_bar(console: Console | None = None) -> Iterator[ProgressFn]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # descriptions name files and models: not markup
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update


def write_verbatim(text: str) -> None:
    """Model text to stdout exactly as decoded, one line break after it.

    Not through Rich: there ``arr[i]`` is markup (dropped), ``[/INST]`` a MarkupError,
    ``:smile:`` an emoji, tabs become spaces and long lines are wrapped at the console width.
    """
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
