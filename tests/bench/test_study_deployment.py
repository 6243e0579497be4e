"""The study reports deployment: each job's model packed where its codes pack, its weight bytes and
decode speed measured once, kept in the run, and shown in the report's main table."""

from __future__ import annotations

from typing import Any

import pytest

from surefast.bench import study
from surefast.bench.plan import plan_from_dict
from surefast.bench.report.build import build_report
from surefast.bench.store import Run, Store
from surefast.bench.study import run_study_local
from surefast.compress import compress_, make_config
from surefast.compress.lowbit.deploy import measure_deployment, resident_bytes
from surefast.errors import SurefastError

from .study_helpers import write_data


def tiny_plan(home: Any, **extra: Any) -> Any:
    return plan_from_dict(
        {
            "models": ["tiny:llama@0"],
            "compressions": [
                "dense",
                {"label": "rtn-w4", "method": "rtn", "bits": 4, "group_size": 32},
                {"label": "wanda-50", "method": "wanda", "sparsity": 0.5},
            ],
            "tasks": ["mmlu"],
            "strategies": ["base"],
            "shots": 0,
            "n": 18,
            "splits": 5,
            "dtype": "fp32",
            "calibration": {"n_samples": 4, "seq_len": 32},
            "data": str(write_data(home)),
            **extra,
        }
    )


def test_a_study_measures_deployment_once_and_reports_it(isolated_home, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")  # the tiny layers: no kernel timing here
    plan = tiny_plan(isolated_home)
    store = Store(isolated_home / "results")
    run_study_local(plan, store, "first")
    measured = Run(store.root, plan.run_id).read_meta()["deployment"]
    assert set(measured) == {"tiny:llama@0|dense", "tiny:llama@0|rtn-w4", "tiny:llama@0|wanda-50"}
    dense, rtn, wanda = (measured[f"tiny:llama@0|{c}"] for c in ("dense", "rtn-w4", "wanda-50"))
    assert not dense["packed"] and dense["note"] is None
    assert rtn["packed"] and rtn["formats"] == {"int4": 14} and rtn["weight_bytes"] < dense["weight_bytes"]
    assert not wanda["packed"] and wanda["note"] == "not packed: wanda does not quantize weights"
    assert all(m["decode_tok_s"] > 0 and m["threads"] >= 1 for m in measured.values())

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("measured again")

    monkeypatch.setattr("surefast.compress.lowbit.deploy.measure_deployment", never)
    run_study_local(plan, store, "again")  # every job done: nothing loaded, nothing measured

    html = build_report(store, [plan.run_id], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| weights (MB) | decode tok/s | runs as |" in md and "weights (MB)" in html.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| tiny:llama@0 | rtn-w4 |"))
    assert row.rstrip(" |").endswith("int4")
    assert "bf16 (not packed)" in next(line for line in md.splitlines() if "| wanda-50 |" in line)


def test_deployment_false_measures_nothing(isolated_home, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(study, "_deployment", lambda *a: (_ for _ in ()).throw(AssertionError("measured")))
    plan = tiny_plan(isolated_home, deployment=False, compressions=["dense"])
    store = Store(isolated_home / "results")
    run_study_local(plan, store, "off")
    assert "deployment" not in Run(store.root, plan.run_id).read_meta()
    build_report(store, [plan.run_id], tmp_path / "report")
    assert "weights (MB)" not in (tmp_path / "report" / "report.md").read_text()


def test_a_bad_deployment_key_is_one_line(isolated_home) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SurefastError, match="deployment: expected true or false, got 3"):
        tiny_plan(isolated_home, deployment=3)


def test_measure_deployment_packs_what_packs(tiny, tiny_tok, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    dense = tiny("llama")
    before = resident_bytes(dense)
    model = tiny("llama")
    config = make_config("rtn", bits=4, group_size=32)
    compress_(model, config)
    got = measure_deployment(model, tiny_tok, config, tokens=4, warmup=1)
    assert got["packed"] and got["weight_bytes"] == resident_bytes(model) < before
    assert measure_deployment(dense, tiny_tok, None, tokens=4, warmup=1)["weight_bytes"] == before
