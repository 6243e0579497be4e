"""The results store: tidy long tables in Parquet, one folder per run, queried with DuckDB.

Layout under the store root (default ``$SUREFAST_HOME/results``)::

    runs/<run_id>/run.json         run metadata: command, config, versions, machine, status
    runs/<run_id>/results-<part>.parquet
                                   one row per (model, compression, task, strategy,
                                   score_fn, alpha, split, metric) -> value; a part is one
                                   unit of work (e.g. one model x compression x task x strategy)

Each run writes only its own folder, and every file is written to a temporary name and
renamed, so two runs sharing a store never corrupt each other and a killed run leaves either
the previous complete file or none. Several processes may write one run (a study started twice,
Ray workers): parts are whole files, and ``run.json`` is only changed under a file lock
(``runs/<run_id>/.run.json.lock``), so no writer loses another's changes. Reports read this
table; they never re-run models.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from surefast import __version__
from surefast.atomic import atomic_write_bytes
from surefast.errors import SurefastError
from surefast.paths import surefast_home

SCHEMA_VERSION = 1
RESULT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("model", pa.string()), ("model_fp", pa.string()),
    ("compression", pa.string()), ("compression_fp", pa.string()), ("task", pa.string()),
    ("strategy", pa.string()), ("score_fn", pa.string()), ("alpha", pa.float64()), ("split", pa.int32()),
    ("metric", pa.string()), ("value", pa.float64()), ("schema_version", pa.int32()),
])  # fmt: skip


def default_store() -> Path:
    return surefast_home() / "results"


def new_run_id() -> str:
    """Sortable by time, unique across processes: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


_LOCKS: dict[Path, FileLock] = {}  # one per run.json, so a process may nest its own locking


def _meta_lock(folder: Path) -> FileLock:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".run.json.lock"
    if path not in _LOCKS:
        _LOCKS[path] = FileLock(str(path))
    return _LOCKS[path]


def machine_facts() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "surefast": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }  # fmt: skip


@dataclass
class Run:
    """A run's folder in a store. ``write_part`` stores one finished unit of work's rows."""

    root: Path
    run_id: str

    @property
    def folder(self) -> Path:
        return self.root / "runs" / self.run_id

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / "run.json", json.dumps(meta, indent=2, default=str).encode())

    def read_meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "run.json").read_text())
        return data

    @contextmanager
    def editing_meta(self) -> Iterator[dict[str, Any]]:
        """Read ``run.json``, let the caller change the dict, write it back, all under the run's
        lock: concurrent writers (a study started twice, Ray workers) never lose an update."""
        with _meta_lock(self.folder):
            meta = self.read_meta()
            yield meta
            self.write_meta(meta)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock (e.g. to create the run only if no other process has)."""
        with _meta_lock(self.folder):
            yield

    def update_meta(self, **changes: Any) -> None:
        with self.editing_meta() as meta:
            meta.update(changes)

    def write_part(self, part: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Store the rows of one finished unit of work atomically (rewriting the part replaces it).

        Missing compression columns default to "" (uncompressed); run_id and schema_version are set.
        """
        new = [{"compression": "", "compression_fp": "", **row, "run_id": self.run_id,
                "schema_version": SCHEMA_VERSION} for row in rows]  # fmt: skip
        table = pa.Table.from_pylist(new, schema=RESULT_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / f"results-{_safe(part)}.parquet", sink.getvalue().to_pybytes())
        return len(new)

    def parts(self) -> set[str]:
        """The (file-safe) names of the parts already stored."""
        return {p.name[len("results-") : -len(".parquet")] for p in self.folder.glob("results-*.parquet")}

    def has_part(self, part: str) -> bool:
        """Whether ``part`` is stored (a resumed run skips it)."""
        return (self.folder / f"results-{_safe(part)}.parquet").is_file()


def _safe(part: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in part)
    if not cleaned:
        raise ValueError("empty part name")
    return cleaned


class Store:
    """A results store folder: create runs, list them, query all results with DuckDB SQL."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_store()

    def create_run(self, meta: Mapping[str, Any], run_id: str | None = None) -> Run:
        run = Run(self.root, run_id or new_run_id())
        if (run.folder / "run.json").exists():
            raise SurefastError(f"run {run.run_id} already exists in {self.root}")
        run.write_meta({"run_id": run.run_id, "schema_version": SCHEMA_VERSION, "created": time.time(),
                        "machine": machine_facts(), "status": "running", **meta})  # fmt: skip
        return run

    def runs(self) -> list[str]:
        folder = self.root / "runs"
        return sorted(p.name for p in folder.iterdir() if (p / "run.json").is_file()) if folder.is_dir() else []

    def run(self, run_id: str) -> Run:
        """A run by id, by unique prefix, or ``latest``."""
        ids = self.runs()
        if run_id == "latest" and ids:
            return Run(self.root, ids[-1])
        matches = [r for r in ids if r.startswith(run_id)]
        if len(matches) != 1:
            hint = f"known runs: {', '.join(ids[-5:])}" if ids else f"the store {self.root} has no runs yet"
            what = "is ambiguous" if matches else "not found"
            raise SurefastError(f"run {run_id!r} {what}", hint)
        return Run(self.root, matches[0])

    def query(self, sql: str, **params: Any) -> Any:
        """Run DuckDB SQL where ``results`` is every run's rows; returns a DuckDB relation result."""
        import duckdb

        con = duckdb.connect()
        files = sorted(str(f) for f in self.root.glob("runs/*/results-*.parquet"))
        if not files:  # an empty table with the right columns, so queries still run
            empty = RESULT_SCHEMA.empty_table()
            con.register("results", empty)
        else:
            con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet({files!r}, union_by_name=true)")
        return con.execute(sql, params or None)
