"""Atomic cache entries: build in a temporary folder, mark complete, rename into place, under a lock.

A folder is trusted only if it holds the manifest (:data:`MANIFEST`), which is written last,
inside the temporary folder, before the rename. An interrupted pull therefore leaves either
nothing or a ``.tmp-*`` folder that the next pull of the same entry removes.

The manifest also records every file of the entry (size, mtime, sha256), so a file changed on
disk afterwards (bit rot, a stray write, NaN bytes over a tensor) is refused by
:func:`verify_entry` instead of being scored under the old fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from surefast import atomic
from surefast.atomic import disk_errors
from surefast.errors import SurefastError
from surefast.paths import surefast_home

MANIFEST = "surefast_model.json"


FILES = "files"  # the manifest key: {relative path: {"bytes", "mtime_ns", "sha256"}}


def pulled_folder(name: str = "") -> Path:
    """Where packaged model ``name`` lives once pulled (no name: the models folder), creating nothing."""
    try:
        home = surefast_home()  # creates only a missing home; an existing read-only one is fine
    except OSError:
        home = Path(os.environ.get("SUREFAST_HOME") or Path.home() / ".cache" / "surefast")
    return home / "models" / name


def is_complete(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    return data


def sha256_of(path: Path) -> str:
    """sha256 of a file's content, read in 4 MiB blocks (the one place weights are hashed)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Size, mtime and sha256 of every file of an entry but the manifest (and its temporary copies)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == MANIFEST or name.startswith(".manifest-"):
            continue
        stat = path.stat()
        files[name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(path)}
    return files


def _dump_manifest(folder: Path, data: dict[str, Any]) -> None:
    # tmp + rename: a reader (or a kill -9) never sees half a manifest, which would read as complete.
    tmp = folder / f".manifest-{os.getpid()}.json"
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, folder / MANIFEST)
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_manifest(folder: Path, info: dict[str, Any]) -> None:
    """Write ``info`` plus the record of every file as the manifest of a freshly built entry."""
    _dump_manifest(folder, {**info, FILES: record_files(folder)})


def _rewrite_manifest(folder: Path, data: dict[str, Any]) -> None:
    """Best effort: in a read-only or full cache a stale record only costs a re-hash next time."""
    with suppress(OSError):
        _dump_manifest(folder, data)


def verify_entry(folder: Path, hint: str) -> None:
    """Refuse an entry whose files differ from what the manifest recorded when it was built.

    Cheap when nothing changed: a file whose size and mtime equal the record is trusted without
    reading it; only a changed mtime costs a re-hash (and a matching hash updates the record, so
    the next load is cheap again). Manifests written before files were recorded carry no
    ``files``: those entries load as before, and their files are recorded now (trust on first use).
    ``hint`` says how to rebuild the entry.
    """
    try:
        manifest = read_manifest(folder)
    except (OSError, json.JSONDecodeError) as exc:
        raise SurefastError(f"the cache manifest {folder / MANIFEST} is unreadable ({exc})", hint) from exc
    recorded = manifest.get(FILES)
    if recorded is None:
        _rewrite_manifest(folder, {**manifest, FILES: record_files(folder)})
        return
    updated = dict(recorded)
    for name, want in recorded.items():
        path = folder / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise SurefastError(f"cached model file {path} is missing", hint) from None
        if stat.st_size != want["bytes"]:
            raise SurefastError(
                f"cached model file {path} has {stat.st_size:,} bytes, {want['bytes']:,} when it was converted", hint
            )
        if stat.st_mtime_ns == want["mtime_ns"]:
            continue  # untouched since it was recorded: trusted without reading it
        if sha256_of(path) != want["sha256"]:
            raise SurefastError(
                f"cached model file {path} changed on disk since it was converted (sha256 differs)", hint
            )
        updated[name] = {**want, "mtime_ns": stat.st_mtime_ns}  # touched or copied, same content
    if updated != recorded:
        _rewrite_manifest(folder, {**manifest, FILES: updated})


@contextmanager
def entry_lock(folder: Path, wait_s: float = 3600.0) -> Iterator[None]:
    """Hold ``<folder>.lock`` so two processes never build the same entry at once."""
    lock = FileLock(str(folder) + ".lock")
    try:
        with lock.acquire(timeout=wait_s):
            yield
    except Timeout as exc:
        raise SurefastError(
            f"timed out after {wait_s:.0f}s waiting for another process building {folder.name}",
            f"if no such process is running, delete {lock.lock_file}",
        ) from exc


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success rename it to ``final``.

    The caller writes the manifest into the temporary folder last. Stale temporary folders
    of the same entry (left by a killed process) are removed first; the caller holds the lock.
    """
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        # Everything written while building (the caller's safetensors, tokenizer files, the
        # manifest, their temporary files) lands in ``tmp``, so a full disk anywhere says so.
        with disk_errors(final.parent):
            tmp.mkdir(parents=True)
            yield tmp
        if not is_complete(tmp):
            raise RuntimeError(f"internal: {tmp} was built without a manifest")
        if final.exists():  # an untrusted leftover without a manifest
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def write_errors(where: Path) -> Iterator[None]:
    """:func:`surefast.atomic.write_errors` with the model cache's hint."""
    hint = "point SUREFAST_HOME at a writable folder, or make it writable; `surefast models list` needs no writes"
    with atomic.write_errors(where, hint):
        yield


def cache_home() -> Path:
    """:func:`surefast_home` for writers: a home that cannot be created is said in one line."""
    try:
        return surefast_home()
    except OSError as exc:
        with write_errors(Path(exc.filename) if exc.filename else Path.home()):
            raise


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so big weights are hashed once."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    index = surefast_home() / "hashes.json"
    known: dict[str, str] = {}
    if index.is_file():
        try:
            known = json.loads(index.read_text())
        except json.JSONDecodeError:
            known = {}  # a torn write of a pure cache: rebuild it
    if key in known:
        return known[key]
    known[key] = sha256_of(path)
    tmp = index.with_name(f".hashes-{os.getpid()}.json")
    try:
        tmp.write_text(json.dumps(known))
        os.replace(tmp, index)
    except OSError:  # a read-only or full cache: the hash is still right, only not remembered
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
    return known[key]
