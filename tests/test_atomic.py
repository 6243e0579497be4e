"""Atomic writes leave no temporary file; the temporary files of dead writers are swept."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surefast import atomic
from surefast.atomic import atomic_write_bytes, remove_stale_tmp, write_errors
from surefast.errors import SurefastError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tmp(folder: Path, name: str, pid: int, age_s: float) -> Path:
    path = folder / f".{name}.{pid}.tmp"
    path.write_bytes(b"half")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_atomic_write_replaces_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two", fsync=True)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_failed_write_removes_its_tmp_and_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "part.parquet"
    target.write_bytes(b"old")

    def broken(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.parquet"]


def test_remove_stale_tmp_only_takes_dead_or_ancient_writers(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getpid()
    stale = _tmp(tmp_path, "results-a.parquet", dead, age_s=120)
    young = _tmp(tmp_path, "results-b.parquet", dead, age_s=5)  # its writer may still be renaming
    busy = _tmp(tmp_path, "results-c.parquet", live, age_s=120)
    ancient = _tmp(tmp_path, "results-d.parquet", live, age_s=atomic.MAX_TMP_AGE_S + 10)
    other = tmp_path / ".run.json.lock"
    other.write_bytes(b"")
    removed = remove_stale_tmp(tmp_path)
    assert sorted(removed) == sorted([stale, ancient])
    assert young.exists() and busy.exists() and other.exists()
    assert remove_stale_tmp(tmp_path / "missing") == []


def test_the_sweep_leaves_a_folder_it_may_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of a read-only store or cache sweeps first: it must not fail on the leftovers."""
    stale = _tmp(tmp_path, "shard-a.npz", _dead_pid(), age_s=atomic.MAX_TMP_AGE_S + 10)
    real_unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    assert remove_stale_tmp(tmp_path) == [] and stale.exists()

    def broken(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "unlink", broken)
    with pytest.raises(OSError, match="Input/output"):  # a real fault still shows
        remove_stale_tmp(tmp_path)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert remove_stale_tmp(tmp_path) == [stale]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, r"disk full while writing under {where} \(\d+\.\d GiB free\)"),
        (errno.EDQUOT, r"disk full while writing under {where} \(\d+\.\d GiB free\)"),
        (errno.EROFS, r"cannot write {where}/part: the folder is read-only \(Read-only file system\)"),
        (errno.EACCES, r"cannot write {where}/part: the folder is read-only \(Permission denied\)"),
        (errno.EPERM, r"cannot write {where}/part: the folder is read-only \(Operation not permitted\)"),
    ],
)
def test_write_errors_are_one_line(tmp_path: Path, code: int, message: str) -> None:
    where = tmp_path / "not" / "yet"  # the free space is that of the nearest existing parent
    pattern = "^" + message.format(where=re.escape(str(where)))
    with pytest.raises(SurefastError, match=pattern) as exc, write_errors(where):
        raise OSError(code, os.strerror(code), str(where / "part"))
    assert "\n" not in str(exc.value) and exc.value.hint


def test_write_errors_let_other_faults_through(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Input/output"), write_errors(tmp_path):
        raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_report_export_and_compressed_folder_writes_are_one_line(tmp_path, monkeypatch, code):
    # Every place surefast writes a user-visible file says "disk full" / "read-only" in one line.
    from surefast.bench.report import build_report
    from surefast.bench.store import Store
    from surefast.compress.saved import save_compressed

    store = Store(tmp_path / "results")
    run = store.create_run({"kind": "bench"})
    row = {"model": "m", "task": "mmlu", "strategy": "s", "score_fn": "lac", "alpha": 0.1, "split": 0}
    run.write_part("m|dense|mmlu|s", [dict(row, metric="accuracy", value=0.5)])

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(SurefastError, match=r"disk full|read-only"):
        build_report(store, [run.run_id], tmp_path / "report")

    class Model:
        def save_pretrained(self, out):
            raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr("surefast.compress.saved.fuse_experts_", lambda model: False)
    with pytest.raises(SurefastError, match=r"disk full|read-only"):
        save_compressed(Model(), None, None, tmp_path / "out")
