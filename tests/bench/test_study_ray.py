"""`surefast study run --executor ray` on a local Ray instance: the jobs run in Ray workers and
land in the same store with exactly the rows of a local run.

Ray is the optional ``cluster`` extra (``pip install 'surefast[cluster]'``), not part of ``dev``;
without it this test skips. A local Ray start costs about 5 s here.
"""

from __future__ import annotations

import subprocess

import pytest

from surefast.bench.plan import load_plan
from surefast.bench.store import Run, Store

from .study_helpers import COMPRESSIONS, MODELS, N_PARTS, assert_rows_close, env, rows_of, study_cmd

pytest.importorskip("ray", reason="Ray is not installed (pip install 'surefast[cluster]')")


def test_ray_executor_runs_every_job_in_a_worker(plan_path, uninterrupted_rows, isolated_home, tmp_path):
    run_env = {**env(), "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}  # a fresh local instance, no telemetry
    proc = subprocess.Popen(
        study_cmd(plan_path, "--executor", "ray", "--report", str(tmp_path / "report")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env,
    )
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "Started a local Ray instance" in out
    run = Run(isolated_home / "results", load_plan(plan_path).run_id)
    assert len(run.parts()) == N_PARTS
    assert_rows_close(rows_of(Store(isolated_home / "results"), run.run_id), uninterrupted_rows)
    meta = run.read_meta()
    assert meta["status"] == "done" and set(meta["model_params"]) == set(MODELS)
    jobs = meta["jobs"]
    assert set(jobs) == {f"{m}|{c}" for m in MODELS for c in COMPRESSIONS}
    # Each job ran in a Ray worker process, not in the command's own process.
    assert all(job["worker"] and not job["worker"].endswith(f":{proc.pid}") for job in jobs.values()), jobs
    assert (tmp_path / "report" / "report.html").is_file()
    # Running it again finds everything done and starts nothing, not even Ray.
    again = subprocess.run(
        study_cmd(plan_path, "--executor", "ray", "--report", str(tmp_path / "report")),
        capture_output=True,
        text=True,
        env=run_env,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already done") == len(jobs) and "Ray instance" not in again.stdout + again.stderr
    assert run.read_meta()["jobs"] == jobs
