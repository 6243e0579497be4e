"""The study report's estimates for jobs still to run, against sums done by hand."""

from __future__ import annotations

import pytest

from surefast.bench.report.study_report import remaining_jobs

SIZES = {"a": 1e9, "b": 3e9, "c": 2e9}


def _job(model: str, comp: str, seconds: float, compression: float) -> dict:
    return {"model": model, "compression": comp, "seconds": seconds, "compression_seconds": compression}


JOBS = {
    "a|dense": _job("a", "dense", 600, 0),
    "a|rtn": _job("a", "rtn", 700, 10),
    "a|gptq": _job("a", "gptq", 1000, 300),
    "a|awq": _job("a", "awq", 800, 100),
    "b|dense": _job("b", "dense", 1800, 0),
    "b|rtn": _job("b", "rtn", 1900, 70),  # compressions take 7x a's here
    "b|skip": {"model": "b", "compression": "x", "skipped": "tokenizer"},
}


def test_a_measured_model_adds_its_scoring_time_to_the_scaled_compression_time() -> None:
    (gptq,) = remaining_jobs([("b", "gptq")], JOBS, SIZES)
    # b's scoring: mean(1800 - 0, 1900 - 70) = 1815 s; gptq on a took 300 s, b's compressions 7x a's
    assert gptq.minutes == pytest.approx((1815 + 7 * 300) / 60)
    assert "x 7.0 (median of 1 measured compression)" in gptq.basis


def test_the_ratio_is_the_median_over_shared_compressions() -> None:
    jobs = {**JOBS, "b|awq": _job("b", "awq", 2300, 500)}  # 5x: ratios 5 and 7, median 6
    (gptq,) = remaining_jobs([("b", "gptq")], jobs, SIZES)
    scoring = (1800 + 1830 + 1800) / 3
    assert gptq.minutes == pytest.approx((scoring + 6 * 300) / 60)


def test_without_a_shared_compression_the_parameter_ratio_scales_it() -> None:
    jobs = {k: v for k, v in JOBS.items() if k != "b|rtn"}
    (gptq,) = remaining_jobs([("b", "gptq")], jobs, SIZES)
    assert gptq.minutes == pytest.approx((1800 + 3 * 300) / 60)
    assert "parameter ratio" in gptq.basis


def test_other_cases_keep_their_rules() -> None:
    wanda, c_gptq, c_wanda = remaining_jobs([("b", "wanda"), ("c", "gptq"), ("c", "wanda")], JOBS, SIZES)
    assert wanda.minutes == pytest.approx((1800 + 1900) / 2 / 60)  # nobody ran wanda: b's mean job
    assert c_gptq.minutes == pytest.approx(1000 * 2 / 60)  # c has no job: a's gptq, scaled by parameters
    per_param = (600 / 1e9 + 700 / 1e9 + 1000 / 1e9 + 800 / 1e9 + 1800 / 3e9 + 1900 / 3e9) / 6
    assert c_wanda.minutes == pytest.approx(per_param * 2e9 / 60)
    (unknown,) = remaining_jobs([("d", "gptq")], {}, SIZES)
    assert unknown.minutes is None
