"""Session fixtures for the study tests: a tiny plan on disk and an uninterrupted run's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from surefast.bench.plan import load_plan
from surefast.bench.store import Store
from surefast.bench.study import run_study_local

from .study_helpers import N_PARTS, PLAN, rows_of, write_data


@pytest.fixture(scope="session")
def plan_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    path = root / "plan.yaml"
    path.write_text(PLAN.format(data=write_data(root)))
    return path


@pytest.fixture(scope="session")
def uninterrupted_rows(plan_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    """The rows of an uninterrupted run (in-process, in its own cache and store)."""
    home = tmp_path_factory.mktemp("reference-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUREFAST_HOME", str(home))
        store = Store(home / "results")
        run = run_study_local(load_plan(plan_path), store, "reference")
        assert len(run.parts()) == N_PARTS
        return rows_of(store, run.run_id)
