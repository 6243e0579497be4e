"""The results store: tidy long tables in Parquet, one folder per run, queried with DuckDB.

Layout under the store root (default ``$SUREFAST_HOME/results``)::

    runs/<run_id>/run.json         run metadata: command, config, versions, machine, status
    runs/<run_id>/results-<key>.parquet
                                   one row per (model, compression, task, strategy,
                                   score_fn, alpha, split, metric) -> value; a part is one
                                   unit of work (e.g. one model x compression x task x strategy)
    runs/<run_id>/items-<key>.parquet
                                   the same unit's scored items, one row each: uid, label,
                                   option logits, subject and the question's opening (the
                                   paired per-item diagnostics read these; written before the
                                   results part, so a stored part always has its items)

Each run writes only its own folder, and every file is written to a temporary name and
renamed, so two runs sharing a store never corrupt each other and a killed run leaves either
the previous complete file or none. Several processes may write one run (a study started twice,
Ray workers): parts are whole files, and ``run.json`` is only changed under a file lock
(``runs/<run_id>/.run.json.lock``), so no writer loses another's changes. Reports read this
table; they never re-run models.

Part names. A part is named by its caller (``model|compression|task|strategy`` for bench and
study units, see :func:`surefast.bench.runner.part_name`); its file key (:func:`part_key`) is
the name with every character outside ``[A-Za-z0-9-_.@]`` replaced by ``_``, and, when that
changed anything (or the name is long), ``~`` and 12 hex digits of the name's sha256. ``~`` is
never left by the replacement, so two names never share a file ("w4 rtn" and "w4_rtn" once
did: the second unit was skipped as "already done" and never reported). Files of the old
naming (``results-<replaced name>.parquet``, no hash) are still read and still count as
stored for the part whose labels their rows hold.

Checksums. A part file's Parquet key-value metadata holds the raw part name
(``surefast.part``) and a sha256 over that name and the decoded rows (``surefast.sha256``:
every column's name, kind and values; independent of how Parquet laid out the bytes, so it
survives library upgrades). Every read decodes the rows and checks them: Parquet decodes
some flipped bytes into other numbers without any error. A part that does not match (or does
not decode) is refused in one line naming the file; :meth:`Run.has_part` counts it as missing
(and logs that), so a resumed study computes it again and replaces the file. Parts of schema
version 1 were written before checksums and are read unchecked.

Reading. :meth:`Store.query` reads only the runs asked for (a broken file of another run
does not matter), verifies the parts in Python and hands DuckDB the rows as an Arrow table:
no path is ever written into SQL (a run folder named with a quote once ran its name as SQL).
Readers create nothing (no folders, no lock files), so a read-only store can be shown and
exported; writers that meet a read-only folder or a full disk say so in one line
(:func:`surefast.atomic.write_errors`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from surefast import __version__
from surefast.atomic import atomic_write_bytes, write_errors
from surefast.errors import SurefastError
from surefast.paths import surefast_home

_log = logging.getLogger(__name__)

# Version 2 added ``resampling`` ("splits": ``split`` indexes a random calibration/test split of
# the scored items; "bootstrap": ``split`` indexes an item-bootstrap replicate, see
# :mod:`surefast.conformal.bootstrap`) and ``protocol`` (a hash of the items, seed and split
# settings: two cells pair split by split only when their protocols are equal). Version-1 parts
# read back with both columns NULL, meaning "splits" and "unknown".
SCHEMA_VERSION = 2
RESULT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("model_fp", pa.string()),
        ("compression", pa.string()),
        ("compression_fp", pa.string()),
        ("task", pa.string()),
        ("strategy", pa.string()),
        ("score_fn", pa.string()),
        ("alpha", pa.float64()),
        ("split", pa.int32()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("schema_version", pa.int32()),
        ("resampling", pa.string()),
        ("protocol", pa.string()),
    ]
)


# One row per scored item of a unit (``items-<key>.parquet``): what per-item analyses need without
# re-running a model. ``logits`` holds the unit's option logits (six for surefast's tasks, the
# task's own count for imported lm-eval runs); ``group`` the item's subject or sub-source ("" if
# none); ``text`` the opening of its question (QUESTION_CHARS) for listing the items that changed.
ITEM_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("compression", pa.string()),
        ("task", pa.string()),
        ("strategy", pa.string()),
        ("uid", pa.string()),
        ("label", pa.int32()),
        ("logits", pa.list_(pa.float32())),
        ("group", pa.string()),
        ("text", pa.string()),
        ("protocol", pa.string()),
    ]
)
QUESTION_CHARS = 240


def default_store() -> Path:
    return surefast_home() / "results"


def new_run_id() -> str:
    """Sortable by time, unique across processes: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


PART_KEY = b"surefast.part"  # Parquet key-value metadata: the raw part name (file keys are sanitized)
SHA_KEY = b"surefast.sha256"  # sha256 over the part name and the decoded rows, see _rows_sha
_KEY_CHARS = 120  # of the readable part of a file key: file names end at 255 bytes
_BROKEN_HINT = (
    "a study rerun computes the part again; a `bench run` must be run again "
    "(or move the file away to read the run without it)"
)

_LOCKS: dict[Path, FileLock] = {}  # one per run.json, so a process may nest its own locking


@contextmanager
def _meta_lock(folder: Path) -> Iterator[None]:
    """Hold the run's lock. Creating the folder or the lock file in a read-only store or on a full
    disk fails in one line; only writers take the lock, so readers never need to write."""
    path = folder / ".run.json.lock"
    with write_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if path not in _LOCKS:
            _LOCKS[path] = FileLock(str(path))
        lock = _LOCKS[path]
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def machine_facts() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "surefast": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@dataclass
class Run:
    """A run's folder in a store. ``write_part`` stores one finished unit of work's rows."""

    root: Path
    run_id: str

    @property
    def folder(self) -> Path:
        return self.root / "runs" / self.run_id

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        with write_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.folder / "run.json", json.dumps(meta, indent=2, default=str).encode())

    def read_meta(self) -> dict[str, Any]:
        """``run.json`` as a dict; a missing, truncated or foreign file is one line naming it."""
        path = self.folder / "run.json"
        hint = "a study rerun rebuilds it from the plan; a bench run's metadata is lost (its parts are kept)"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise SurefastError(f"run {self.run_id} has no {path}", hint) from None
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
            raise SurefastError(f"{path} is unreadable ({exc})", hint) from None
        if not isinstance(data, dict):
            raise SurefastError(f"{path} is not a JSON object", hint)
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
        """Store the rows of one finished unit of work atomically (rewriting the part replaces it),
        with its name and checksum in the file's metadata.

        Missing compression columns default to "" (uncompressed); run_id and schema_version are set.
        """
        new = [
            {
                "compression": "",
                "compression_fp": "",
                "resampling": "splits",
                "protocol": "",
                **row,
                "run_id": self.run_id,
                "schema_version": SCHEMA_VERSION,
            }
            for row in rows
        ]
        table = pa.Table.from_pylist(new, schema=RESULT_SCHEMA)
        self._write_table(self._file_of(part), part, table)
        return len(new)

    def write_items(self, part: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Store the scored items of one unit (:data:`ITEM_SCHEMA`), checked like a results part.

        Missing ``compression``, ``group``, ``text`` and ``protocol`` default to ""; run_id is set.
        """
        new = [
            {"compression": "", "group": "", "text": "", "protocol": "", **row, "run_id": self.run_id} for row in rows
        ]
        table = pa.Table.from_pylist(new, schema=ITEM_SCHEMA)
        self._write_table(self._items_file(part), part, table)
        return len(new)

    def _write_table(self, path: Path, part: str, table: pa.Table) -> None:
        table = table.replace_schema_metadata({PART_KEY: part.encode(), SHA_KEY: _rows_sha(part, table).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        with write_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, sink.getvalue().to_pybytes())

    def _items_file(self, part: str) -> Path:
        return self.folder / f"items-{part_key(part)}.parquet"

    def parts(self) -> set[str]:
        """The file keys (:func:`part_key`, or an old file's sanitized name) of the parts stored."""
        return {p.name[len("results-") : -len(".parquet")] for p in self.folder.glob("results-*.parquet")}

    def has_part(self, part: str) -> bool:
        """Whether ``part`` is stored and intact (a resumed run skips it). A file that fails its
        checksum or does not decode counts as missing, so it is computed again (and replaced)."""
        path = self._file_of(part)
        if not path.is_file():
            return False
        try:
            table = read_part(path)
        except SurefastError as exc:
            _log.warning("%s: treating the part as missing, so it is computed again", exc.message)
            return False
        return _belongs(table, part)

    def _file_of(self, part: str) -> Path:
        """Where ``part`` is (or is to be) stored: its key's file, unless a file of the old naming
        (no hash) holds it, which is then read and replaced in place (never duplicated)."""
        own = self.folder / f"results-{part_key(part)}.parquet"
        old = self.folder / f"results-{_safe(part)}.parquet"
        if own.is_file() or old == own or not old.is_file():
            return own
        try:
            table = read_part(old)
        except SurefastError:
            return old  # whose it was cannot be told: has_part says missing, write_part replaces it
        return old if _belongs(table, part) else own


def _safe(part: str) -> str:
    """The old file name of a part (before keys): unsafe characters replaced, no hash."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in part)
    if not cleaned:
        raise ValueError("empty part name")
    return cleaned


def part_key(part: str) -> str:
    """The file key of ``part``: readable, and never shared by two part names (module docstring)."""
    readable = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.@" else "_" for c in part)
    if not readable:
        raise ValueError("empty part name")
    if readable == part and len(part) <= _KEY_CHARS:
        return part
    return f"{readable[:_KEY_CHARS]}~{hashlib.sha256(part.encode()).hexdigest()[:12]}"


def _rows_sha(part: str, table: pa.Table) -> str:
    """sha256 over the part name and every column's name, kind, validity and decoded values.

    Computed from values, not file bytes, so it only changes when what a reader gets changes.
    """
    digest = hashlib.sha256(part.encode() + b"\0")
    for name, column in zip(table.column_names, table.columns, strict=True):
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):  # strings, and any later kind
            digest.update(f"{name}:py\0".encode() + json.dumps(col.to_pylist(), default=str).encode())
            continue
        values = np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False))
        values = values.astype(values.dtype.newbyteorder("<"))  # the same bytes on any machine
        valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        digest.update(f"{name}:{values.dtype.str}\0".encode() + np.packbits(valid).tobytes() + values.tobytes())
    return digest.hexdigest()


def read_part(path: Path) -> pa.Table:
    """The rows of one part file, checked against its checksum; a SurefastError naming the file if
    it does not decode or does not match. Schema-1 parts (no checksum yet) are read unchecked."""
    try:
        # From bytes, not a path: pyarrow would read "key=value" folders in a path as partitions.
        table = pq.read_table(pa.BufferReader(path.read_bytes()))
    except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid: truncated, empty, garbled
        raise SurefastError(f"results part {path} is unreadable ({_one_line(exc)})", _BROKEN_HINT) from None
    meta = table.schema.metadata or {}
    if SHA_KEY not in meta:
        if "resampling" in table.column_names:  # schema 2 and later always carry one
            raise SurefastError(f"results part {path} has no checksum (its metadata is damaged)", _BROKEN_HINT)
        return table
    part = meta.get(PART_KEY, b"").decode(errors="replace")
    if _rows_sha(part, table) != meta[SHA_KEY].decode(errors="replace"):
        raise SurefastError(
            f"results part {path} does not match its checksum (the file changed after it was written)",
            _BROKEN_HINT,
        )
    return table


def _belongs(table: pa.Table, part: str) -> bool:
    """Whether a part file holds ``part``: by its recorded name, or, for files written before
    names were recorded, by its rows' labels, which must all be fields of the name (the old
    file name was shared by every part that sanitizes alike: "w4 rtn" and "w4_rtn")."""
    meta = table.schema.metadata or {}
    if PART_KEY in meta:
        return bool(meta[PART_KEY].decode(errors="replace") == part)
    fields = set(part.split("|"))
    for column in ("model", "compression", "task", "strategy"):
        if column in table.column_names and not set(table.column(column).to_pylist()) - {"", None} <= fields:
            return False
    return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _conform(table: pa.Table) -> pa.Table:
    """``table`` with every column of :data:`RESULT_SCHEMA` (NULL where an older schema lacked it)."""
    table = table.replace_schema_metadata(None)
    for field in RESULT_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    return table


class Store:
    """A results store folder: create runs, list them, query all results with DuckDB SQL."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_store()

    def create_run(self, meta: Mapping[str, Any], run_id: str | None = None, *, replace: bool = False) -> Run:
        """A new run's folder and ``run.json``; ``replace``: write a fresh ``run.json`` over an
        existing (unreadable) one, keeping the parts."""
        run = Run(self.root, run_id or new_run_id())
        if not replace and (run.folder / "run.json").exists():
            raise SurefastError(f"run {run.run_id} already exists in {self.root}")
        run.write_meta(
            {
                "run_id": run.run_id,
                "schema_version": SCHEMA_VERSION,
                "created": time.time(),
                "machine": machine_facts(),
                "status": "running",
                **meta,
            }
        )
        return run

    def runs(self) -> list[str]:
        folder = self.root / "runs"
        return sorted(p.name for p in folder.iterdir() if (p / "run.json").is_file()) if folder.is_dir() else []

    def run(self, run_id: str) -> Run:
        """A run by id, by unique prefix, or ``latest`` (the one created last: ids sort by kind
        first, "study-..." after every dated bench id)."""
        ids = self.runs()
        if run_id == "latest" and ids:
            return Run(self.root, max(ids, key=lambda r: (self._created(r), r)))
        matches = [r for r in ids if r.startswith(run_id)]
        if len(matches) != 1:
            hint = f"known runs: {', '.join(ids[-5:])}" if ids else f"the store {self.root} has no runs yet"
            what = "is ambiguous" if matches else "not found"
            raise SurefastError(f"run {run_id!r} {what}", hint)
        return Run(self.root, matches[0])

    def _created(self, run_id: str) -> float:
        """When a run was created: ``created`` in its run.json, else its folder's mtime."""
        folder = self.root / "runs" / run_id
        try:
            return float(json.loads((folder / "run.json").read_bytes())["created"])
        except (OSError, ValueError, KeyError, TypeError):  # unreadable, truncated, foreign
            try:
                return folder.stat().st_mtime
            except OSError:
                return 0.0

    def query(self, sql: str, runs: Sequence[str] | None = None, **params: Any) -> Any:
        """Run DuckDB SQL where ``results`` is the rows of ``runs`` (run ids; None: every run in
        the store); returns a DuckDB relation result. Every part read is verified first (a
        broken one is a SurefastError naming the file), and DuckDB gets the rows, never a path."""
        import duckdb

        tables = [_conform(read_part(f)) for f in self._part_files(runs)]
        # permissive: a part of a later schema may hold columns (or wider types) this code does not know
        table = pa.concat_tables(tables, promote_options="permissive") if tables else RESULT_SCHEMA.empty_table()
        con = duckdb.connect()
        con.register("results", table)
        return con.execute(sql, params or None)

    def items(self, runs: Sequence[str] | None = None) -> pa.Table:
        """The stored items (:data:`ITEM_SCHEMA`) of ``runs`` (None: every run), each file checked;
        empty for runs stored before items were kept."""
        tables = [read_part(f).replace_schema_metadata(None) for f in self._part_files(runs, "items")]
        return pa.concat_tables(tables, promote_options="permissive") if tables else ITEM_SCHEMA.empty_table()

    def _part_files(self, runs: Sequence[str] | None, kind: str = "results") -> list[Path]:
        base = self.root / "runs"
        if runs is None:
            return sorted(base.glob(f"*/{kind}-*.parquet"))
        if isinstance(runs, str):  # would be read letter by letter
            raise TypeError("runs: a list of run ids, not one string")
        files: list[Path] = []
        for run_id in dict.fromkeys(runs):
            if Path(run_id).name != run_id or run_id in ("", ".", "..") or not (base / run_id).is_dir():
                raise SurefastError(f"run {run_id!r} not found in {self.root}", "give a run id from this store")
            files += sorted((base / run_id).glob(f"{kind}-*.parquet"))
        return files
