"""The compression-time model and the estimate `surefast study plan` prints."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from surefast.bench import cost
from surefast.bench.cost import CALIBRATION_PASSES, FIXED_TOKENS, compression_seconds
from surefast.compress import method_names
from surefast.compress.api import config_class


def test_every_builtin_method_has_a_measured_cost() -> None:
    builtin = {n for n in method_names() if config_class(n).__module__.startswith("surefast.")}  # not test plugins
    assert builtin and builtin <= set(FIXED_TOKENS)


def test_dense_is_free_and_data_methods_pay_for_their_calibration_passes() -> None:
    assert compression_seconds(None, {}, 4096, 100.0) == 0.0
    rtn = compression_seconds("rtn", {"bits": 4}, 4096, 100.0)  # reads no data
    assert rtn == pytest.approx(FIXED_TOKENS["rtn"] / 100.0)
    wanda = compression_seconds("wanda", {"sparsity": 0.5}, 4096, 100.0)
    assert wanda == pytest.approx((FIXED_TOKENS["wanda"] + CALIBRATION_PASSES * 4096) / 100.0)
    assert compression_seconds("wanda", {"sparsity": 0.5}, 4096, 200.0) == pytest.approx(wanda / 2)  # faster machine


def test_unmeasured_method_gets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(cost.FIXED_TOKENS, "magnitude")
    assert compression_seconds("magnitude", {}, 0, 1.0) == cost.DEFAULT_FIXED_TOKENS


def test_study_plan_prints_scoring_and_compression_estimates(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bench.study_helpers import PLAN, write_data
    from surefast.cli.study import app

    monkeypatch.setenv("SUREFAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(data=write_data(tmp_path)))
    result = CliRunner().invoke(app, ["plan", str(plan)])
    assert result.exit_code == 0, result.output
    assert "est. scoring + compression" in result.output
    assert "min scoring" in result.output and "min compressing" in result.output
