"""The import graph of ``src/surefast``, read with ``ast`` (nothing is imported): layers point down only.

Edges are every ``import surefast...`` / ``from surefast... import ...`` and every relative
import, at the top of a module or inside a function: a function-local import is still an arrow
between layers, it only moves the moment the circle bites (a half-initialised module at call
time instead of at import time). ``from pkg import name`` points at the submodule ``pkg.name``
when that is a module of the tree, else at ``pkg``. Parent packages are not edges of their own
(Python initialises them first either way), and imports under ``if TYPE_CHECKING:`` are left
out: they never run.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "surefast"


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/surefast`` (packages by their ``__init__``)."""
    out = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (resolving ``from ..x import y``)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the ``surefast`` modules it imports (see the module docstring for what counts)."""
    names = module_names(src)
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            base = _base(module, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in names else base)
        graph[module] = {t for t in targets if t in names and t != module}
    return graph


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """The knots of mutually importing modules, each sorted: the strongly connected components
    of more than one module (Tarjan's algorithm). ``[]`` when the graph has no circle."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in order:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:  # node roots a component: pop it off the stack
            knot = []
            while (top := stack.pop()) != node:
                knot.append(top)
            if knot:
                found.append(sorted([node, *knot]))

    for start in sorted(graph):
        if start not in order:
            connect(start)
    return sorted(found)


def circle(graph: dict[str, set[str]], knot: list[str]) -> list[str]:
    """A shortest import circle ``[a, b, ..., a]`` through ``knot[0]`` inside ``knot`` (breadth-first)."""
    start, inside = knot[0], set(knot)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & inside):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{knot} is not a strongly connected component")


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def arrows(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """``a -> b`` for every import from package ``source`` into package ``target``."""
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if _in(a, source) for b in bs if _in(b, target))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_the_whole_tree(graph) -> None:  # type: ignore[no-untyped-def]
    # Guards the test itself: a parser that found no edges would pass every check below.
    assert {"surefast.models.load", "surefast.compress.api", "surefast.cli"} <= set(graph)
    assert "surefast.models.spec" in graph["surefast.models.load"]  # absolute, top level
    assert "surefast.models.tiny" in graph["surefast.models.load"]  # function-local


def test_no_import_circles(graph) -> None:  # type: ignore[no-untyped-def]
    found = knots(graph)
    lines = [f"{' -> '.join(circle(graph, knot))} (the knot: {', '.join(knot)})" for knot in found]
    assert found == [], "import circles:\n" + "\n".join(lines)


def test_the_model_layer_does_not_import_compression(graph) -> None:  # type: ignore[no-untyped-def]
    assert arrows(graph, "surefast.models", "surefast.compress") == []


def test_the_model_layer_imports_only_itself_and_the_base_modules(graph) -> None:  # type: ignore[no-untyped-def]
    # models/ is the bottom layer both halves share: besides itself, only the single files
    # right under surefast/ (errors, paths, atomic, ...) and surefast/__init__ (__version__).
    files = {name for name, path in module_names().items() if path.parent.name == ROOT and path.stem != "__main__"}

    def allowed(target: str) -> bool:
        return target in files or _in(target, "surefast.models")

    assert [arrow for arrow in arrows(graph, "surefast.models", ROOT) if not allowed(arrow.split(" -> ")[1])] == []


# Every top-level package and module but the CLI and ``python -m surefast``, which sit above it.
LOWER_LAYERS = sorted({name.split(".")[1] for name in module_names() if "." in name} - {"cli", "__main__"})


def test_the_lower_layers_are_found() -> None:
    assert {"models", "compress", "data", "scoring", "conformal", "speculate", "bench", "errors"} <= set(LOWER_LAYERS)


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_never_import_the_cli(graph, layer) -> None:  # type: ignore[no-untyped-def]
    assert arrows(graph, f"surefast.{layer}", "surefast.cli") == []


# --- the graph builder on a made-up tree -----------------------------------------------------------


def test_graph_resolves_relative_and_local_imports_and_skips_type_checking(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / ROOT
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from .x import f\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from ..b import g\n    return g\n")
    (pkg / "a" / "y.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import surefast.b\n")
    (pkg / "b.py").write_text("from surefast import a\nimport os\n")
    found = import_graph(tmp_path)
    assert found == {
        "surefast": set(),
        "surefast.a": {"surefast.a.x"},
        "surefast.a.x": {"surefast.b"},
        "surefast.a.y": set(),
        "surefast.b": {"surefast.a"},
    }
    assert knots(found) == [["surefast.a", "surefast.a.x", "surefast.b"]]
    assert circle(found, knots(found)[0]) == ["surefast.a", "surefast.a.x", "surefast.b", "surefast.a"]
    assert knots({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert knots({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "e"}, "e": set()}) == [["a", "b"], ["c", "d"]]
    assert arrows(found, "surefast.a", "surefast.b") == ["surefast.a.x -> surefast.b"]


# --- the post-load hook that replaces the arrow models -> compress ----------------------------------

LOAD_IN_A_FRESH_INTERPRETER = """
import sys
import torch
from surefast.models import load_model
assert "surefast.compress" not in sys.modules, "importing the model layer imported compression"
lm = load_model(sys.argv[1], dtype="fp32", device="cpu")
assert "surefast.compress" in sys.modules, "the recipe file did not bring the compression layer in"
from surefast.compress.quant.fake import input_transforms
with torch.no_grad():
    logits = lm.model(torch.load(sys.argv[2])).logits
torch.save({"inputs": sorted(input_transforms(lm.model)), "logits": logits}, sys.argv[3])
"""


def test_a_compressed_folder_loads_with_its_activation_quantizers(tiny, tiny_tok, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # In a fresh interpreter: here, other tests have imported surefast.compress long ago.
    import subprocess
    import sys

    import torch

    from surefast.compress import compress_, make_config, save_compressed

    calib_ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))  # byte tokens
    probe_ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    model = tiny("llama")
    result = compress_(model, make_config("rtn", bits=4, group_size=32, act_bits=4), calib_ids)
    save_compressed(model, tiny_tok, result, tmp_path / "w4a4")
    torch.save(probe_ids, tmp_path / "ids.pt")
    script = [sys.executable, "-c", LOAD_IN_A_FRESH_INTERPRETER]
    paths = [str(tmp_path / name) for name in ("w4a4", "ids.pt", "out.pt")]
    out = subprocess.run([*script, *paths], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    loaded = torch.load(tmp_path / "out.pt")
    assert loaded["inputs"] == sorted(result.recipe["inputs"]) and loaded["inputs"]  # the W4A4 quantizers
    with torch.no_grad():
        assert (loaded["logits"] - model(probe_ids).logits).abs().max() < 1e-5


def test_post_load_hooks_run_for_the_files_a_folder_holds(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from surefast.models import hooks

    seen: list[tuple[object, Path]] = []
    monkeypatch.setattr(hooks, "_HOOKS", {})
    monkeypatch.setattr(hooks, "PROVIDERS", {})
    hooks.register_post_load("recipe.json", lambda model, folder: seen.append((model, folder)))
    assert hooks.post_load_files() == ("recipe.json",)
    assert hooks.run_post_load_hooks("model", tmp_path) == [] and seen == []  # no such file: nothing runs
    (tmp_path / "recipe.json").write_text("{}")
    assert hooks.run_post_load_hooks("model", tmp_path) == ["recipe.json"] and seen == [("model", tmp_path)]


def test_a_provider_that_registers_no_hook_is_one_line(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from surefast.errors import SurefastError
    from surefast.models import hooks

    monkeypatch.setattr(hooks, "_HOOKS", {})
    monkeypatch.setattr(hooks, "PROVIDERS", {"recipe.json": "surefast.errors"})  # imports, registers nothing
    (tmp_path / "recipe.json").write_text("{}")
    with pytest.raises(SurefastError, match=r"recipe\.json needs surefast\.errors"):
        hooks.run_post_load_hooks("model", tmp_path)
