import multiprocessing as mp

import pytest

from surefast.bench.store import SCHEMA_VERSION, Store, part_key
from surefast.errors import SurefastError


def rows(task: str, n: int = 3, value: float = 0.5):
    return [
        {
            "model": "m",
            "model_fp": "fp",
            "task": task,
            "strategy": "shared",
            "score_fn": "lac",
            "alpha": 0.1,
            "split": i,
            "metric": "coverage",
            "value": value,
        }
        for i in range(n)
    ]


def test_parts_are_stored_and_queried(tmp_path):
    store = Store(tmp_path)
    run = store.create_run({"command": "test"})
    run.write_part("m|mmlu|shared", rows("mmlu"))
    run.write_part("m|cosmosqa|shared", rows("cosmosqa", value=0.7))
    # File keys stay readable; "|" is not file-safe, so each key also carries a hash of the raw name.
    assert run.parts() == {part_key("m|mmlu|shared"), part_key("m|cosmosqa|shared")}
    assert {k.split("~")[0] for k in run.parts()} == {"m_mmlu_shared", "m_cosmosqa_shared"}
    assert len(run.parts()) == 2 and run.has_part("m|mmlu|shared")
    got = store.query(
        "SELECT task, round(avg(value), 9), min(schema_version), min(compression) FROM results GROUP BY task ORDER BY task"
    ).fetchall()
    assert got == [("cosmosqa", 0.7, SCHEMA_VERSION, ""), ("mmlu", 0.5, SCHEMA_VERSION, "")]
    # Rewriting a part replaces it: no duplicated rows.
    run.write_part("m|mmlu|shared", rows("mmlu", value=0.9))
    assert store.query("SELECT count(*), max(value) FROM results WHERE task = 'mmlu'").fetchone() == (3, 0.9)


def test_empty_store_queries_and_lookup_errors(tmp_path):
    store = Store(tmp_path)
    assert store.query("SELECT count(*) FROM results").fetchone() == (0,)
    with pytest.raises(SurefastError, match="has no runs yet"):
        store.run("latest-missing")
    run = store.create_run({}, run_id="20260101-000000-abcdef")
    assert store.run("latest").run_id == run.run_id == store.run("2026").run_id
    assert store.run("latest").read_meta()["status"] == "running"


def _writer(root: str, k: int) -> None:
    store = Store(root)
    run = store.create_run({"writer": k})
    for j in range(5):
        run.write_part(f"part{j}", rows(f"t{j}", n=20, value=k))


def test_two_processes_share_a_store(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    store = Store(tmp_path)
    assert len(store.runs()) == 2
    assert store.query("SELECT count(*) FROM results").fetchone() == (2 * 5 * 20,)


def _editor(root: str, run_id: str, k: int, barrier) -> None:
    run = Store(root).run(run_id)
    barrier.wait()
    for j in range(25):
        with run.editing_meta() as meta:
            meta.setdefault("jobs", {})[f"{k}-{j}"] = j


def test_concurrent_meta_edits_lose_nothing(tmp_path):
    """run.json is read, changed and rewritten by every job: without the lock, concurrent
    writers (a study started twice, Ray workers) silently drop each other's entries."""
    run = Store(tmp_path).create_run({})
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_editor, args=(str(tmp_path), run.run_id, k, barrier)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert len(run.read_meta()["jobs"]) == 4 * 25
