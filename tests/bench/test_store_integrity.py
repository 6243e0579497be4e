"""The results store under faults and hostile input: folder names that look like SQL, broken and
flipped parts, part names that sanitize alike, ``latest``, a truncated run.json, a read-only
store, a full disk. Each test failed on the store before these were handled."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from surefast import atomic
from surefast.bench.report.build import load_rows
from surefast.bench.runner import summary
from surefast.bench.store import RESULT_SCHEMA, Run, Store
from surefast.errors import SurefastError

# A run folder name that, pasted into SQL with repr(), closes the path string, turns it into a
# glob of every part (so the view still binds) and then runs COPY ... TO, writing pwned.csv into
# the current folder. No "/" in it: it is one folder name.
EVIL = (
    "zz\"'.regexp_replace($$zz.*$$, $$*$$ || chr(47) || $$results-*.parquet$$)], union_by_name=true); "
    "COPY (SELECT 42 AS pwned) TO $$pwned.csv$$; --"
)


def rows(task: str = "mmlu", n: int = 3, compression: str = "", seed: int = 0) -> list[dict[str, Any]]:
    values = np.random.default_rng(seed).random(n)
    return [
        {
            "model": "m",
            "model_fp": "fp",
            "compression": compression,
            "task": task,
            "strategy": "base",
            "score_fn": "lac",
            "alpha": 0.1,
            "split": i,
            "metric": metric,
            "value": float(values[i]),
        }
        for i in range(n)
        for metric in ("accuracy", "coverage")
    ]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``surefast ARGS`` in this process: (exit code, stdout, stderr)."""
    from surefast.cli import main

    with pytest.raises(SystemExit) as ended:
        main(list(args))
    out = capsys.readouterr()
    code = ended.value.code
    return code if isinstance(code, int) else 1, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.startswith("error:") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err  # error + hint
    for needle in needles:
        assert needle in " ".join(err.split()), err


def part_file(run: Run) -> Path:
    (path,) = run.folder.glob("results-*.parquet")
    return path


# --- 1. SQL from a folder name -------------------------------------------------------------------


def test_a_run_folder_named_like_sql_is_read_not_run(tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = Store(tmp_path / "store")
    good = store.create_run({"config": {"alphas": [0.1]}}, run_id="20260101-000000-aaaaaa")
    good.write_part("m|dense|mmlu|base", rows())
    evil = store.create_run({"config": {"alphas": [0.1]}}, run_id=EVIL)
    evil.write_part("m|dense|cosmosqa|base", rows("cosmosqa"))
    assert store.query("SELECT count(*) FROM results").fetchone() == (12,)
    assert store.query("SELECT count(*) FROM results", runs=[EVIL]).fetchone() == (6,)
    code, out, err = cli(capsys, "bench", "show", "zz", "--store", str(store.root))
    assert code == 0, err
    assert "cosmosqa" in out
    code, _, err = cli(
        capsys, "bench", "export", "zz", "--rows", "--out", str(tmp_path / "rows.csv"), "--store", str(store.root)
    )
    assert code == 0, err
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 1 + 6
    assert not list(cwd.iterdir()), "SQL from the folder name ran"


# --- 2. Read only the runs asked for; a broken part is one line ------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_broken_part_breaks_only_its_own_run(tmp_path, capsys, damage):
    store = Store(tmp_path)
    fine = store.create_run({"config": {"alphas": [0.1]}, "model_params": {"m": 1e6}}, run_id="20260101-000000-aaaaaa")
    fine.write_part("m|dense|mmlu|base", rows())
    broken = store.create_run({"config": {"alphas": [0.1]}}, run_id="20260101-000000-bbbbbb")
    broken.write_part("m|dense|mmlu|base", rows())
    path = part_file(broken)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(len(data))}[damage])

    # The other run: show, export, report and a new run's closing summary all read it as before.
    assert {r["task"] for r in summary(store, fine.run_id)} == {"mmlu", "avg"}
    rows_read, sizes = load_rows(store, [fine.run_id])
    assert len(rows_read) == 6 and sizes == {"m": 1e6}
    code, out, err = cli(capsys, "bench", "show", fine.run_id, "--store", str(tmp_path))
    assert code == 0 and "mmlu" in out, err
    code, _, err = cli(
        capsys, "bench", "export", fine.run_id, "--rows", "--out", str(tmp_path / "a.csv"), "--store", str(tmp_path)
    )
    assert code == 0, err

    # The broken run: one line naming the file, no DuckDB traceback.
    with pytest.raises(SurefastError, match=r"results part .* is unreadable") as exc:
        store.query("SELECT count(*) FROM results", runs=[broken.run_id])
    assert str(path) in exc.value.message
    code, _, err = cli(capsys, "bench", "show", broken.run_id, "--store", str(tmp_path))
    assert_one_line_error(code, err, str(path))
    with pytest.raises(SurefastError, match="unreadable"):
        load_rows(store, [broken.run_id])
    assert not broken.has_part("m|dense|mmlu|base")  # a resumed study computes it again


def test_query_refuses_unknown_runs_and_a_bare_string(tmp_path):
    store = Store(tmp_path)
    run = store.create_run({})
    run.write_part("p", rows())
    assert store.query("SELECT count(*) FROM results", runs=[run.run_id, run.run_id]).fetchone() == (6,)
    assert store.query("SELECT count(*) FROM results", runs=[]).fetchone() == (0,)
    for bad in ("nope", "..", "../runs", ""):
        with pytest.raises(SurefastError, match="not found"):
            store.query("SELECT 1", runs=[bad])
    with pytest.raises(TypeError, match="list of run ids"):
        store.query("SELECT 1", runs=run.run_id)


# --- 3. A flipped bit in a part ---------------------------------------------------------------------


def flip_a_silent_byte(path: Path) -> int:
    """Flip one bit inside the ``value`` column's data of ``path`` where Parquet still decodes the
    file, into other numbers (found by search: there are many). Returns the offset."""
    data = path.read_bytes()
    clean = pq.read_table(pa.BufferReader(data)).column("value").to_numpy()
    chunk = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0).column(RESULT_SCHEMA.names.index("value"))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    for offset in range(start, start + chunk.total_compressed_size):
        bad = bytearray(data)
        bad[offset] ^= 0x01
        try:
            values = pq.read_table(pa.BufferReader(bytes(bad))).column("value").to_numpy()
        except Exception:  # most flips do not decode: those are caught anyway
            continue
        if values.shape == clean.shape and not np.array_equal(values, clean, equal_nan=True):
            path.write_bytes(bytes(bad))
            return offset
    raise AssertionError(f"no flip of {path} decodes into other values")


def test_a_flipped_byte_in_a_part_is_refused_then_recomputed(tmp_path, caplog):
    store = Store(tmp_path)
    run = store.create_run({})
    part = "m|dense|mmlu|base"
    run.write_part(part, rows(n=40))
    want = store.query("SELECT sum(value) FROM results").fetchone()
    path = part_file(run)
    flip_a_silent_byte(path)
    with pytest.raises(SurefastError, match="does not match its checksum") as exc:
        store.query("SELECT sum(value) FROM results")
    assert str(path) in exc.value.message and exc.value.hint
    with caplog.at_level(logging.WARNING):
        assert not run.has_part(part)
    assert str(path) in caplog.text and "computed again" in caplog.text
    run.write_part(part, rows(n=40))  # what a resumed study does next: the file is replaced
    assert run.has_part(part) and store.query("SELECT sum(value) FROM results").fetchone() == want


def test_damaged_metadata_is_refused(tmp_path):
    """A part whose checksum entry is gone (a flip in its key) must not pass as an old, unchecked part."""
    store = Store(tmp_path)
    run = store.create_run({})
    run.write_part("p", rows())
    path = part_file(run)
    table = pq.read_table(path)
    meta = {k.replace(b"sha256", b"sha257"): v for k, v in table.schema.metadata.items()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SurefastError, match="has no checksum"):
        store.query("SELECT 1")


def write_old_part(run: Run, name: str, part_rows: list[dict[str, Any]]) -> Path:
    """A part as the store wrote it before checksums and keys: schema 1, no metadata, old name."""
    schema = pa.schema(_v1_fields())
    full = [
        {"compression": "", "compression_fp": "", **r, "run_id": run.run_id, "schema_version": 1} for r in part_rows
    ]
    run.folder.mkdir(parents=True, exist_ok=True)
    path = run.folder / f"results-{name}.parquet"
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path, compression="zstd")
    return path


def _v1_fields() -> list[pa.Field]:
    return [f for f in RESULT_SCHEMA if f.name not in ("resampling", "protocol")]


def test_old_parts_still_read_and_still_count_as_done(tmp_path):
    store = Store(tmp_path)
    run = store.create_run({})
    write_old_part(run, "m_dense_mmlu_base", rows())
    assert run.has_part("m|dense|mmlu|base")  # a resumed study does not recompute it
    got = store.query("SELECT count(*), min(schema_version), count(resampling) FROM results").fetchone()
    assert got == (6, 1, 0)  # version-1 rows: the new columns read as NULL
    run.write_part("m|dense|mmlu|base", rows(seed=1))  # rewriting replaces it in place
    assert len(run.parts()) == 1 and store.query("SELECT count(*) FROM results").fetchone() == (6,)


# --- 4. Two labels, one part ------------------------------------------------------------------------


def test_labels_that_sanitize_alike_are_two_parts(tmp_path):
    store = Store(tmp_path)
    run = store.create_run({"config": {"alphas": [0.1]}})
    run.write_part("m|w4 rtn|mmlu|base", rows(compression="w4 rtn"))
    assert not run.has_part("m|w4_rtn|mmlu|base")  # was "already done": never computed, never reported
    run.write_part("m|w4_rtn|mmlu|base", rows(compression="w4_rtn", seed=1))
    assert run.has_part("m|w4 rtn|mmlu|base") and run.has_part("m|w4_rtn|mmlu|base")
    assert len(run.parts()) == 2
    reported = {(r["compression"], r["task"]) for r in summary(store, run.run_id)}
    assert reported == {("w4 rtn", "mmlu"), ("w4_rtn", "mmlu"), ("w4 rtn", "avg"), ("w4_rtn", "avg")}


def test_an_old_shared_file_counts_only_for_the_label_it_holds(tmp_path):
    """A study begun before keys held one file for both labels: it is still done for the label
    whose rows it holds, and the other label is computed now, into a file of its own."""
    store = Store(tmp_path)
    run = store.create_run({})
    old = write_old_part(run, "m_w4_rtn_mmlu_base", rows(compression="w4_rtn"))
    assert run.has_part("m|w4_rtn|mmlu|base")
    assert not run.has_part("m|w4 rtn|mmlu|base")
    run.write_part("m|w4 rtn|mmlu|base", rows(compression="w4 rtn"))
    assert old.is_file() and len(run.parts()) == 2
    got = store.query("SELECT compression, count(*) FROM results GROUP BY ALL ORDER BY ALL").fetchall()
    assert got == [("w4 rtn", 6), ("w4_rtn", 6)]


def test_a_bench_run_with_both_labels_scores_and_reports_both(isolated_home):
    from data.fixtures import jsonl, mmlu_rows, write
    from surefast.bench.runner import BenchConfig, run_bench, start_run
    from surefast.models import load_model

    write(isolated_home / "data" / "mmlu" / "mmlu_test.jsonl.gz", jsonl(mmlu_rows(30)))
    config = BenchConfig(
        tasks=("mmlu",), strategies=("base",), n=18, n_shots=0, n_splits=5, data=str(isolated_home / "data")
    )
    store = Store(isolated_home / "results")
    run = start_run(store, config, "test", ["tiny:llama@0"])
    loaded = load_model("tiny:llama@0", dtype="fp32")
    first = run_bench(loaded, config, run, model_name="tiny:llama@0", compression="w4 rtn")
    second = run_bench(loaded, config, run, model_name="tiny:llama@0", compression="w4_rtn")
    assert not first[0].skipped and not second[0].skipped
    assert {r["compression"] for r in summary(store, run.run_id)} == {"w4 rtn", "w4_rtn"}


# --- 5. latest -------------------------------------------------------------------------------------


def test_latest_is_the_run_created_last(tmp_path):
    store = Store(tmp_path)
    store.create_run({"created": 1000.0}, run_id="study-0123456789ab")
    store.create_run({"created": 2000.0}, run_id="20260101-000000-abcdef")
    assert store.run("latest").run_id == "20260101-000000-abcdef"  # sorted by name: the study
    store.create_run({"created": 3000.0}, run_id="study-ffffffffffff")
    assert store.run("latest").run_id == "study-ffffffffffff"


def test_latest_falls_back_to_the_folder_time_and_runs_lists_bad_runs(tmp_path):
    store = Store(tmp_path)
    store.create_run({"created": 2000.0}, run_id="study-0123456789ab")
    bad = store.create_run({}, run_id="20250101-000000-abcdef")
    (bad.folder / "run.json").write_text('{"created": 99')  # truncated
    os.utime(bad.folder, (3000.0, 3000.0))
    assert store.runs() == ["20250101-000000-abcdef", "study-0123456789ab"]
    assert store.run("latest").run_id == bad.run_id
    os.utime(bad.folder, (1000.0, 1000.0))
    assert store.run("latest").run_id == "study-0123456789ab"


# --- 6. A truncated run.json -------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"run_id": "x", "conf', b"", b"\xff\xfe garbage", b"[1, 2]"])
def test_an_unreadable_run_json_is_one_line_naming_it(tmp_path, capsys, content):
    store = Store(tmp_path)
    run = store.create_run({"config": {"alphas": [0.1]}})
    run.write_part("m|dense|mmlu|base", rows())
    meta = run.folder / "run.json"
    meta.write_bytes(content)
    with pytest.raises(SurefastError) as exc:
        run.read_meta()
    assert str(meta) in exc.value.message and "rebuilds" in (exc.value.hint or "")
    code, _, err = cli(capsys, "bench", "show", run.run_id, "--store", str(tmp_path))
    assert_one_line_error(code, err, str(meta))
    code, _, err = cli(capsys, "report", run.run_id, "--store", str(tmp_path), "--out", str(tmp_path / "report"))
    assert_one_line_error(code, err, str(meta))


def test_a_study_rerun_rebuilds_an_unreadable_run_json_and_keeps_the_parts(isolated_home, caplog):
    from data.fixtures import jsonl, mmlu_rows, write
    from surefast.bench.plan import plan_from_dict
    from surefast.bench.study import run_study_local

    write(isolated_home / "data" / "mmlu" / "mmlu_test.jsonl.gz", jsonl(mmlu_rows(30)))
    plan = plan_from_dict(
        {
            "models": ["tiny:llama@0"],
            "tasks": ["mmlu"],
            "strategies": ["base"],
            "shots": 0,
            "n": 18,
            "splits": 5,
            "dtype": "fp32",
            "data": str(isolated_home / "data"),
        }
    )
    store = Store(isolated_home / "results")
    run = run_study_local(plan, store, "first")
    (part,) = run.folder.glob("results-*.parquet")
    before = (part.stat().st_ino, part.stat().st_mtime_ns)
    # Cut short (a copy, a disk fault): our own writes are atomic, so a kill cannot do this.
    (run.folder / "run.json").write_text('{"run_id": "' + run.run_id + '", "kind": "stu')
    with caplog.at_level(logging.WARNING):
        again = run_study_local(plan, store, "again")
    assert "run.json" in caplog.text and "rebuilt" in caplog.text
    meta = again.read_meta()
    assert meta["kind"] == "study" and meta["status"] == "done" and meta["plan"] == plan.source
    assert meta["jobs"]["tiny:llama@0|dense"]["skipped"]  # the finished job is not redone
    assert (part.stat().st_ino, part.stat().st_mtime_ns) == before


# --- 7. A read-only store, 8. a full disk ---------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_readers_write_nothing(tmp_path, monkeypatch, capsys):
    """Show, export, report rows, query, latest, a score-cache lookup: no folder, lock file or
    temporary file appears, and no mkdir is even tried (a read-only home would refuse it)."""
    from surefast.scoring import CacheKey, ScoreStore

    monkeypatch.setenv("SUREFAST_HOME", str(tmp_path))
    store = Store(tmp_path / "store")
    run = store.create_run({"config": {"alphas": [0.1]}})
    run.write_part("m|dense|mmlu|base", rows())
    before = tree(tmp_path)

    def read_only_mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if not (exist_ok and self.is_dir()):  # what mkdir does in a read-only tree
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    code, out, err = cli(capsys, "bench", "show", "latest", "--store", str(store.root))
    assert code == 0 and "mmlu" in out, err
    out_dir = tmp_path / "elsewhere"
    os.makedirs(out_dir)
    code, _, err = cli(capsys, "bench", "export", "--out", str(out_dir / "s.csv"), "--store", str(store.root))
    assert code == 0, err
    assert load_rows(store, [run.run_id])[0] and store.run("latest").read_meta()["status"] == "running"
    assert ScoreStore(CacheKey("m0", "none", "mmlu", "base", "d0"), "p0").load() == {}  # nothing cached yet
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("elsewhere")} == before


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_writers_in_a_read_only_store_say_so(tmp_path, monkeypatch, code):
    store = Store(tmp_path)
    run = store.create_run({})

    def refused(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(atomic.os, "replace", refused)
    for write in (lambda: run.write_part("p", rows()), lambda: run.write_meta({}), lambda: store.create_run({})):
        with pytest.raises(SurefastError, match="the folder is read-only") as exc:
            write()
        assert str(tmp_path) in exc.value.message and "SUREFAST_HOME" in (exc.value.hint or "")
    monkeypatch.undo()

    from filelock import FileLock

    def locked_out(self: FileLock, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(code, os.strerror(code), self.lock_file)

    monkeypatch.setattr(FileLock, "acquire", locked_out)
    with pytest.raises(SurefastError, match=r"\.run\.json\.lock: the folder is read-only"):
        run.update_meta(status="done")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_for_every_store_write(tmp_path, full_disk, code):
    store = Store(tmp_path)
    run = store.create_run({})
    writes = (lambda: run.write_part("p", rows()), lambda: run.update_meta(status="done"), lambda: store.create_run({}))
    with full_disk(code):
        for write in writes:
            with pytest.raises(SurefastError, match=r"disk full while writing under .* GiB free") as exc:
                write()
            assert str(tmp_path) in exc.value.message
    assert not list(run.folder.glob(".*.tmp")) and not list(run.folder.glob("results-*"))


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Any]:
    """``read_only(folder)`` makes a tree read-only (as chmod -R a-w) until the test ends; skips
    where permissions are not enforced (root with its usual capabilities)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").write_bytes(b"")
        pytest.skip("file permissions are not enforced for this user (root)")
    except PermissionError:
        pass
    finally:
        probe.chmod(0o755)
    made: list[Path] = []

    def make(folder: Path) -> None:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        made.append(folder)

    yield make
    for folder in made:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_home_serves_readers_and_refuses_writers(isolated_home, tmp_path, capsys, read_only):
    from data.fixtures import jsonl, mmlu_rows, write
    from surefast.scoring import CacheKey, ScoreStore

    store = Store(isolated_home / "results")
    run = store.create_run({"config": {"alphas": [0.1]}})
    run.write_part("m|dense|mmlu|base", rows())
    (run.folder / f".results-x.parquet.{2**22 + 1}.tmp").write_bytes(b"half")  # a dead writer's leftover
    key = CacheKey("m0", "none", "mmlu", "base", "d0")
    shards = ScoreStore(key, "p0")
    shards.write(["a", "b"], np.zeros((2, 6), np.float32), np.array([0, 1]), np.array([False, False]))
    stale = shards.folder / f".shard-x.npz.{2**22 + 1}.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    data = write(tmp_path / "data" / "mmlu" / "mmlu_test.jsonl.gz", jsonl(mmlu_rows(30))).parents[1]
    read_only(isolated_home)

    code, out, err = cli(capsys, "bench", "show")
    assert code == 0 and "mmlu" in out, err
    code, _, err = cli(capsys, "bench", "export", "--rows", "--out", str(tmp_path / "rows.csv"))
    assert code == 0, err
    code, out, err = cli(capsys, "bench", "prompt", "--model", "tiny:llama", "--n", "10", "--data", str(data))
    assert code == 0 and "Answer" in out, err
    assert set(ScoreStore(key, "p0").load()) == {"a", "b"} and stale.exists()

    with pytest.raises(SurefastError, match="read-only"):
        run.write_part("m|dense|mmlu|shared", rows())
    with pytest.raises(SurefastError, match="read-only"):
        run.update_meta(status="done")
    with pytest.raises(SurefastError, match="read-only"):
        ScoreStore(key, "p1").write(["c"], np.zeros((1, 6), np.float32), np.array([0]), np.array([False]))
    assert json.loads((run.folder / "run.json").read_text())["status"] == "running"
