"""`surefast study run` as a user runs it: killed with SIGKILL and restarted, and run twice at once.

A real subprocess on tiny seeded models and tiny task files. What we check is what the issue
promises: a restart recomputes nothing that finished (stored parts keep their inode and mtime,
no item is scored twice), loses nothing, and ends with exactly the rows of an uninterrupted run;
two processes on one plan and one store finish with the same complete, readable run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from surefast.bench.plan import load_plan
from surefast.bench.store import Run, Store
from surefast.bench.study import run_study_local

from .study_helpers import (
    COMPRESSIONS,
    MODELS,
    N_ITEMS,
    N_PARTS,
    env,
    files,
    rows_of,
    scored_units,
    study_cmd,
    uids_per_score_folder,
    write_data,
)


def test_kill9_and_restart_recomputes_nothing_finished(plan_path, uninterrupted_rows, isolated_home, tmp_path):
    run_id = load_plan(plan_path).run_id
    folder = isolated_home / "results" / "runs" / run_id
    proc = subprocess.Popen(
        study_cmd(plan_path, "--report", str(tmp_path / "r1")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    # Kill once a part is stored and a later unit has begun scoring (a shard written, its part
    # not yet): the kill lands between units' work, inside a job, with a half-scored unit.
    while proc.poll() is None:
        parts = list(folder.glob("results-*.parquet"))
        if parts and (isolated_home / "scores").is_dir() and scored_units(isolated_home) > len(parts):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the study ended before it could be killed:\n{out}"
    parts_before = files(folder, "results-*.parquet")
    shards_before = files(isolated_home / "scores", "*/shard-*.npz")
    assert 1 <= len(parts_before) < N_PARTS
    assert json.loads((folder / "run.json").read_text())["status"] == "running"

    again = subprocess.run(
        study_cmd(plan_path, "--report", str(tmp_path / "r2")), capture_output=True, text=True, env=env()
    )
    assert again.returncode == 0, again.stdout + again.stderr
    parts_after = files(folder, "results-*.parquet")
    assert len(parts_after) == N_PARTS
    # Nothing finished was recomputed: every part and every score shard from before the kill
    # is the same file, untouched, and no item of any unit was scored twice.
    assert {k: parts_after[k] for k in parts_before} == parts_before
    shards_after = files(isolated_home / "scores", "*/shard-*.npz")
    assert {k: shards_after[k] for k in shards_before} == shards_before
    for name, uids in uids_per_score_folder(isolated_home).items():
        assert len(uids) == len(set(uids)) == N_ITEMS, name
    # A job whose units were all stored before the kill is not even loaded again.
    for model in MODELS:
        for comp in COMPRESSIONS:
            stored = [k for k in parts_before if k.startswith(f"results-{model.replace(':', '_')}_{comp}_")]
            assert (len(stored) == 2) == (f"{model} / {comp}: already done" in again.stdout), again.stdout
    # Nothing lost: the restarted run holds exactly an uninterrupted run's rows.
    store = Store(isolated_home / "results")
    assert rows_of(store, run_id) == uninterrupted_rows
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "done" and set(meta["model_params"]) == set(MODELS)
    assert (tmp_path / "r2" / "report.html").is_file()


def test_two_runs_of_one_plan_share_a_store(plan_path, uninterrupted_rows, isolated_home, tmp_path):
    """Started together on one store: both finish, the run is complete, readable and equal to
    an uninterrupted run (duplicated work is allowed, duplicated or torn rows are not)."""
    procs = [
        subprocess.Popen(
            study_cmd(plan_path, "--report", str(tmp_path / f"r{k}")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(),
        )
        for k in range(2)
    ]
    outs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    run = Run(isolated_home / "results", load_plan(plan_path).run_id)
    assert len(run.parts()) == N_PARTS
    assert rows_of(Store(isolated_home / "results"), run.run_id) == uninterrupted_rows
    meta = run.read_meta()
    assert set(meta["model_params"]) == set(MODELS)
    assert len(meta["jobs"]) == len(MODELS) * len(COMPRESSIONS)
    assert not list(run.folder.glob(".*.tmp")), "temporary files left behind"


def _open(root: str, plan: Any, barrier: Any, k: int) -> None:
    from surefast.bench.study import open_run

    barrier.wait()
    with open_run(Store(root), plan, "race").editing_meta() as meta:
        meta.setdefault("jobs", {})[str(k)] = k


def test_a_study_opened_by_several_processes_at_once_is_created_once(tmp_path):
    """The existence check and the creation happen under one lock; without it a creator that
    checked early but wrote late (it imports torch for the machine facts in between) replaced
    the run.json another process had already created and changed."""
    import multiprocessing as mp

    from surefast.bench.plan import plan_from_dict

    plan = plan_from_dict({"models": ["tiny:llama"], "n": 20})
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open, args=(str(tmp_path), plan, barrier, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4  # none fails with "run ... already exists"
    assert Store(tmp_path).runs() == [plan.run_id]
    # No late creator overwrote the run.json another process had already created and changed.
    assert set(Store(tmp_path).run(plan.run_id).read_meta()["jobs"]) == {"0", "1", "2", "3"}


def test_model_size_survives_a_kill_after_the_last_part(isolated_home, monkeypatch):
    """Killed after a job's parts are stored but before the job is recorded: the job is never
    loaded again, yet the report's scale analysis still needs the model's size."""
    import surefast.bench.study as study
    from surefast.bench.plan import plan_from_dict

    plan = plan_from_dict(
        {
            "models": ["tiny:llama@0"],
            "tasks": ["mmlu"],
            "strategies": ["base"],
            "shots": 0,
            "n": 18,
            "splits": 5,
            "dtype": "fp32",
            "data": str(write_data(isolated_home)),
        }
    )
    store = Store(isolated_home / "results")

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        run_study_local(plan, store, "first")
    run = Run(store.root, plan.run_id)
    assert len(run.parts()) == 1
    monkeypatch.undo()
    monkeypatch.setenv("SUREFAST_HOME", str(isolated_home))
    run_study_local(plan, store, "again")
    meta = run.read_meta()
    assert meta["jobs"]["tiny:llama@0|dense"]["skipped"]
    assert meta["model_params"]["tiny:llama@0"] > 0
