"""A study kept inside a repository (issue 19): its store and score cache live where the plan
says (relative to the plan file), its score cache is compacted to one shard per unit, each job
records its wall time, threads and the load beside it, SAGE's acceptance is measured per job,
the report states the verdicts, and running the plan again recomputes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from surefast.bench.plan import load_plan, plan_from_dict
from surefast.bench.store import Run, Store
from surefast.bench.study import job_done, run_study_local
from surefast.errors import SurefastError

from .study_helpers import write_data

PLAN = """
name: inrepo
models: [tiny:llama@0]
compressions:
  - dense
  - {{label: rtn-w4, method: rtn, bits: 4, group_size: 32}}
tasks: [mmlu]
strategies: [base]
shots: 0
n: 18
splits: 5
bootstrap: 20
dtype: fp32
deployment: false
batch_tokens: 64
data: {data}
calibration: {{n_samples: 4, seq_len: 32}}
acceptance: {{draft: "tiny:llama@0", prompts: 2, max_new_tokens: 8}}
store: ../studies/inrepo/results
scores: ../studies/inrepo/scores
"""


@pytest.fixture
def repo_plan(isolated_home: Path, tmp_path: Path) -> Path:
    (tmp_path / "repo" / "examples").mkdir(parents=True)
    path = tmp_path / "repo" / "examples" / "inrepo.yaml"
    path.write_text(PLAN.format(data=write_data(isolated_home)))
    return path


def test_store_and_scores_are_relative_to_the_plan_file_and_not_part_of_the_run_id(repo_plan: Path) -> None:
    plan = load_plan(repo_plan)
    root = repo_plan.parent.parent / "studies" / "inrepo"
    assert plan.store == str((root / "results").resolve())
    assert plan.scores == str((root / "scores").resolve())
    moved = load_plan(repo_plan, {"store": "/elsewhere/results", "scores": "/elsewhere/scores"})
    assert moved.run_id == plan.run_id  # the same plan in another place continues the same run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"store": 3}, "store: expected a folder path"),
        ({"acceptance": {"prompts": 2}}, "acceptance: no draft given"),
        ({"acceptance": {"draft": "tiny:llama@0", "prompts": 0}}, "acceptance: prompts: expected a whole number"),
        ({"acceptance": {"draft": "tiny:llama@0", "tokens": 8}}, "acceptance: unknown key 'tokens'"),
        ({"acceptance": "tiny:llama@0"}, "acceptance: expected a mapping"),
    ],
)
def test_bad_study_keys_are_one_line(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SurefastError, match=message):
        plan_from_dict({"models": ["tiny:llama@0"], **extra}, "plan.yaml")


def test_a_study_in_the_repository_runs_resumes_and_reports(repo_plan: Path, isolated_home: Path) -> None:
    from surefast.cli.study import write_study_report

    plan = load_plan(repo_plan)
    store = Store(plan.store)
    run_study_local(plan, store, "first")
    root = Path(plan.store).parent
    assert not (isolated_home / "scores").exists()  # the cache went where the plan said
    folders = sorted((root / "scores").iterdir())
    assert len(folders) == 2  # one unit per job
    for folder in folders:  # compacted: one shard per unit, holding every item
        (shard,) = folder.glob("shard-*.npz")
        with np.load(shard) as data:
            assert len(set(data["uids"].tolist())) == 18
    meta = Run(store.root, plan.run_id).read_meta()
    for key in ("tiny:llama@0|dense", "tiny:llama@0|rtn-w4"):
        job = meta["jobs"][key]
        assert job["threads"] >= 1 and job["cpu"] and job["started"] and job["seconds"] > 0
        assert job["other_cores"] is None or job["other_cores"] >= 0
        acc = meta["acceptance"][key]
        assert acc["draft"] == "tiny:llama@0" and acc["steps"] > 0
        assert acc["tokens_per_forward"] >= 1.0
    # the dense model drafting for itself, greedy fp32: every drafted token is accepted, so no step
    # accepts nothing and it beats the compressed target it is not
    dense, rtn = meta["acceptance"]["tiny:llama@0|dense"], meta["acceptance"]["tiny:llama@0|rtn-w4"]
    assert dense["zero_share"] == 0.0
    assert dense["tokens_per_forward"] >= rtn["tokens_per_forward"]
    assert all(job_done(Run(store.root, plan.run_id), plan, m, c) for m, c in plan.jobs())

    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    run_study_local(plan, store, "again")  # recomputes nothing: no file of the study changes
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "run.json"}
    assert after == {p: t for p, t in before.items() if p.name != "run.json"}

    report = write_study_report(plan, store, None, None)
    text = report.read_text()
    assert report == root / "REPORT.md"
    for head in ("## Verdicts", "Finding I:", "Finding II:", "## Power", "## SAGE acceptance", "## Jobs"):
        assert head in text
    assert "Every job of the plan is done." in text
    assert (root / "report" / "report.html").is_file()
    assert "Verdicts" in (root / "report" / "report.html").read_text()


def test_acceptance_added_to_a_finished_plan_is_measured_without_rescoring(repo_plan: Path) -> None:
    plan = load_plan(repo_plan)
    data = repo_plan.read_text().replace('acceptance: {draft: "tiny:llama@0", prompts: 2, max_new_tokens: 8}\n', "")
    bare = repo_plan.with_name("bare.yaml")
    bare.write_text(data)
    first = load_plan(bare)
    assert first.acceptance is None and first.run_id == plan.run_id
    store = Store(first.store)
    run_study_local(first, store, "first")
    parts = {p: p.stat().st_mtime_ns for p in Run(store.root, plan.run_id).folder.glob("*.parquet")}
    run = Run(store.root, plan.run_id)
    assert not any(job_done(run, plan, m, c) for m, c in plan.jobs())  # acceptance missing
    run_study_local(plan, store, "with acceptance")
    assert set(run.read_meta()["acceptance"]) == {"tiny:llama@0|dense", "tiny:llama@0|rtn-w4"}
    assert {p: p.stat().st_mtime_ns for p in run.folder.glob("*.parquet")} == parts  # nothing scored again


def test_commit_study_commits_only_the_study_and_says_when_git_refuses(repo_plan: Path, monkeypatch: Any) -> None:
    import subprocess

    from surefast.cli.study import commit_study

    plan = load_plan(repo_plan)
    store = Store(plan.store)
    run_study_local(plan, store, "first")
    refused = commit_study(plan, store, "no repository")  # not a git repository: one line, no traceback
    assert refused is not None and refused.startswith("--commit: git did not commit")
    repo = repo_plan.parent.parent
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "other.txt").write_text("not the study's")
    subprocess.run([*git, "add", "other.txt"], cwd=repo, check=True)
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(key, "t")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, "t@t")
    assert commit_study(plan, store, "tiny / dense, 0.1 min") is None
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert log.strip() == "study inrepo: tiny / dense, 0.1 min"
    committed = subprocess.run(
        ["git", "show", "--name-only", "--format=", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert committed and all(p.startswith("studies/inrepo/") for p in committed)  # other.txt stays staged, uncommitted
    assert any(p.startswith("studies/inrepo/scores/") for p in committed)
    assert commit_study(plan, store, "again") is None  # nothing new: no empty commit
    assert (
        len(subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True).stdout.split("\n"))
        == 2
    )


def test_see_also_links_the_fuller_study_from_the_top_of_the_report(repo_plan: Path) -> None:
    from surefast.cli.study import see_also

    plan = load_plan(repo_plan, {"see_also": "../studies/findings/REPORT.md"})
    assert plan.see_also == str((repo_plan.parent.parent / "studies" / "findings" / "REPORT.md").resolve())
    report_dir = repo_plan.parent.parent / "reports" / "demo"
    report_dir.mkdir(parents=True)
    (section,) = see_also(plan, report_dir)
    assert "[studies/findings/REPORT.md](../../studies/findings/REPORT.md)" in section.markdown
    assert 'href="../../studies/findings/REPORT.md"' in section.html
    assert see_also(load_plan(repo_plan), report_dir) == []
    with pytest.raises(SurefastError, match="see_also: expected a file path"):
        plan_from_dict({"models": ["tiny:llama@0"], "see_also": 3}, "plan.yaml")
