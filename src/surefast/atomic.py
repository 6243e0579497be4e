"""Atomic file writes shared by the results store and the score cache, and the sweep of the
temporary files a hard kill leaves behind.

A writer puts the bytes in ``.<name>.<pid>.tmp`` beside the target and renames it into place
(``os.replace``): readers see the old file, the new one, or none, never half of one. A kill -9
between the two steps leaves the temporary file; nothing reads it, and
:func:`remove_stale_tmp` deletes it the next time the folder is opened (a folder it may not
write, e.g. a read-only ``SUREFAST_HOME`` that only serves readers, is left as it is).

:func:`write_errors` turns the write failures a user fixes outside surefast (a full disk, a
read-only folder) into one-line :class:`~surefast.errors.SurefastError` messages; every writer of
the results store and the score cache wraps its writes in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from surefast.errors import SurefastError

_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp
# A write takes well under a second; a temporary file this old has no live writer anywhere, even
# on another host of a shared file system where its pid means nothing.
MAX_TMP_AGE_S = 3600.0
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (removed on errors)."""
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_RUST_IO_ERRNO = re.compile(r"\(os error (\d+)\)")  # how Rust's io::Error (safetensors' writer) shows errno


def os_errno(exc: BaseException) -> int | None:
    """The errno behind ``exc``: an OSError's, or the one a Rust writer (safetensors) put in its message.

    safetensors >= 0.4 raises ``SafetensorError("... I/O error: No space left on device (os error 28)")``
    rather than an OSError, so a full disk during ``save_pretrained`` would otherwise be a traceback.
    """
    if isinstance(exc, OSError):
        return exc.errno
    found = _RUST_IO_ERRNO.search(str(exc))
    return int(found.group(1)) if found and "I/O error" in str(exc) else None


def disk_full_error(where: Path) -> SurefastError:
    """The one-line "disk full" error, with the free space of the disk holding ``where``."""
    return SurefastError(
        f"disk full while writing under {where} ({_free(where)})",
        "free some space or point SUREFAST_HOME at a larger disk, then run the command again",
    )


@contextlib.contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """Turn a full disk met while writing under ``where`` into one line; anything else passes."""
    try:
        yield
    except Exception as exc:
        if os_errno(exc) in DISK_FULL:
            raise disk_full_error(where) from exc
        raise


@contextlib.contextmanager
def write_errors(
    where: Path, hint: str = "point SUREFAST_HOME (or --store) at a writable folder, or make it writable"
) -> Iterator[None]:
    """:func:`disk_errors`, plus a read-only folder (or one owned by someone else) in one line.

    Every writer of the model cache, the results store and the score cache wraps its writes in
    it. Any other error is a fault to see in full and passes through unchanged.
    """
    try:
        with disk_errors(where):
            yield
    except Exception as exc:
        code = os_errno(exc)
        if code in READ_ONLY:
            target = getattr(exc, "filename", None) or where
            raise SurefastError(f"cannot write {target}: the folder is read-only ({os.strerror(code)})", hint) from exc
        raise


def _free(where: Path) -> str:
    """Free space on the disk holding ``where`` (its nearest existing parent: a writer may have
    failed before creating it)."""
    path = where
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return f"{shutil.disk_usage(path).free / 2**30:.1f} GiB free"
    except OSError:
        return "free space unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def remove_stale_tmp(folder: Path, *, now: float | None = None, min_age_s: float = 60.0) -> list[Path]:
    """Delete the temporary files of dead writers in ``folder``; returns what was removed.

    Stale: older than ``min_age_s`` with a pid that no process on this machine has, or older
    than :data:`MAX_TMP_AGE_S` whatever its pid (a writer on another host).
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TMP.match(path.name)
        if m is None or not path.is_file():
            continue
        try:
            age = now - path.stat().st_mtime
            if age > MAX_TMP_AGE_S or (age > min_age_s and not _alive(int(m.group(1)))):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process swept it first
            continue
        except OSError as exc:
            # A folder we may only read (a read-only store or home): its leftovers are harmless,
            # nothing reads them, and a reader must not fail over someone else's mess.
            if exc.errno not in READ_ONLY:
                raise
    return removed
