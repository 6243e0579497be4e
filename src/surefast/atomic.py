"""Atomic file writes shared by the results store and the score cache, and the sweep of the
temporary files a hard kill leaves behind.

A writer puts the bytes in ``.<name>.<pid>.tmp`` beside the target and renames it into place
(``os.replace``): readers see the old file, the new one, or none, never half of one. A kill -9
between the two steps leaves the temporary file; nothing reads it, and
:func:`remove_stale_tmp` deletes it the next time the folder is opened.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # .<name>.<pid>.tmp
# A write takes well under a second; a temporary file this old has no live writer anywhere, even
# on another host of a shared file system where its pid means nothing.
MAX_TMP_AGE_S = 3600.0


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
        with contextlib.suppress(FileNotFoundError):  # another process may sweep the same folder
            age = now - path.stat().st_mtime
            if age > MAX_TMP_AGE_S or (age > min_age_s and not _alive(int(m.group(1)))):
                path.unlink()
                removed.append(path)
    return removed
