"""Post-load hooks: what an extra file in a model folder asks :func:`~surefast.models.load_model` to redo.

The model layer knows no compression method. A layer above it that saves a model folder with
an extra file beside the weights (``surefast compress`` writes ``surefast_compression.json``:
activation quantizers, online rotations, KV quantizers that weights cannot hold) registers a
hook for that file name with :func:`register_post_load` when it is imported. ``load_model``
calls :func:`run_post_load_hooks` after ``from_pretrained``: for every registered file the
folder holds, the hook runs on the loaded model.

Nobody may have imported that layer yet (``surefast bench run --model out/``), so
:data:`PROVIDERS` names, as a string, the module whose import registers the hook; it is
imported only when a folder holds the file. That keeps the import graph pointing down
(``compress`` imports ``models``, never the reverse; ``tests/test_imports.py`` checks it) while
a folder written by ``surefast compress`` still loads compressed without the caller knowing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from surefast.errors import SurefastError

PostLoadHook = Callable[[Any, Path], object]  # (loaded model, its folder) -> ignored; changes the model in place
COMPRESSION_JSON = "surefast_compression.json"
# file name -> the module whose import registers its hook (a name, not an import: see above)
PROVIDERS: dict[str, str] = {COMPRESSION_JSON: "surefast.compress"}
_HOOKS: dict[str, PostLoadHook] = {}


def register_post_load(file_name: str, hook: PostLoadHook) -> None:
    """Run ``hook(model, folder)`` after loading any folder that holds ``file_name``.

    Registering the same file again replaces its hook (a reloaded module registers anew).
    """
    _HOOKS[file_name] = hook


def post_load_files() -> tuple[str, ...]:
    """Every file name a hook reads: part of what identifies a model folder (they change its function)."""
    return tuple(sorted(set(PROVIDERS) | set(_HOOKS)))


def run_post_load_hooks(model: Any, folder: Path) -> list[str]:
    """Run the hook of every registered file ``folder`` holds, in name order; returns those names."""
    ran = []
    for name in post_load_files():
        if not (folder / name).is_file():
            continue
        if name not in _HOOKS and name in PROVIDERS:
            importlib.import_module(PROVIDERS[name])  # registers the hook as it is imported
        if name not in _HOOKS:
            raise SurefastError(
                f"{folder / name} needs {PROVIDERS.get(name, 'a module')} to load, which registered no hook for it",
                "reinstall surefast, or remove the file to load the plain weights",
            )
        _HOOKS[name](model, folder)
        ran.append(name)
    return ran
