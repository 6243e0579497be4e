"""A tiny study plan, run for real: shared by the kill, concurrency, Ray and Chromium tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data.fixtures import jsonl, mmlu_rows, write
from surefast.bench.store import Store

MODELS = ("tiny:llama@0",)
COMPRESSIONS = ("dense", "rtn-w4")
N_ITEMS = 18
N_PARTS = len(MODELS) * len(COMPRESSIONS) * 2  # x 2 strategies, one task
# Two jobs of two units each; each unit's items are scored one per batch (one shard per item),
# so a kill can land between jobs, between units and inside a unit. Zero-shot keeps it quick.
PLAN = """
name: kill9
models: [tiny:llama@0]
compressions:
  - dense
  - {{label: rtn-w4, method: rtn, bits: 4}}
tasks: [mmlu]
strategies: [base, shared]
shots: 0
n: 18
splits: 10
dtype: fp32
batch_tokens: 128
data: {data}
calibration: {{n_samples: 4, seq_len: 32}}
"""
COLUMNS = "model, model_fp, compression, compression_fp, task, strategy, score_fn, alpha, split, metric, value"


def write_data(root: Path) -> Path:
    write(root / "data" / "mmlu" / "mmlu_test.jsonl.gz", jsonl(mmlu_rows(30)))
    return root / "data"


def rows_of(store: Store, run_id: str) -> list[tuple[Any, ...]]:
    """Every stored row, sorted, NaN (a metric undefined on a split) as None so rows compare equal."""
    rows = store.query(f"SELECT {COLUMNS} FROM results WHERE run_id = $id ORDER BY ALL", id=run_id).fetchall()
    return [(*r[:-1], None if r[-1] != r[-1] else r[-1]) for r in rows]


def study_cmd(plan: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "surefast", "study", "run", str(plan), "--no-estimate", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}  # SUREFAST_HOME from the fixture; log lines unwrapped


def files(folder: Path, pattern: str) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns): an atomic rewrite (temp file + rename) changes the inode."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob(pattern)}


def uids_per_score_folder(home: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for shard in sorted((home / "scores").glob("*/shard-*.npz")):
        with np.load(shard) as data:
            out.setdefault(shard.parent.name, []).extend(data["uids"].tolist())
    return out


def scored_units(home: Path) -> int:
    """Score folders with at least one finished shard: units begun (finished or not)."""
    return sum(1 for d in (home / "scores").glob("*") if any(d.glob("shard-*.npz")))


def assert_rows_close(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """Same rows, values equal up to float rounding: a Ray worker runs torch on one thread, which
    sums in another order than the two threads of a local run (differences ~1e-8)."""
    assert [r[:-1] for r in got] == [r[:-1] for r in want]
    values = [[np.nan if r[-1] is None else r[-1] for r in rows] for rows in (got, want)]
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5, atol=1e-6, equal_nan=True)
