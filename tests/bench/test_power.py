"""Power of a study (surefast.bench.power): goldens, a Monte-Carlo reference, the bootstrap, the CLI, the report."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from surefast.bench.analysis import CellKey, cells_from_rows, decoupling, deltas
from surefast.bench.analysis.cells import ALL_TASKS
from surefast.bench.analysis.deltas import ITEMS, SPLITS_ONLY, Z95, Delta
from surefast.bench.power import (
    PowerConfig,
    default_variance,
    items_needed,
    mde,
    mde_of,
    measured_variance,
    parse_detect,
    power_plan,
    se_of,
    variance_of_rows,
)
from surefast.errors import SurefastError

from .test_analysis import rows_for

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}


def delta(metric: str, lo: float, hi: float, task: str = "mmlu", variance: str = ITEMS, comp: str = "w4") -> Delta:
    return Delta(CellKey("m", comp, task), metric, (lo + hi) / 2, lo, hi, 0.5, variance)


def test_goldens_by_hand():
    assert PowerConfig().z == pytest.approx(Z, abs=1e-12) == pytest.approx(2.8016, abs=1e-4)
    assert PowerConfig(alpha=0.01, power=0.9).z == pytest.approx(2.5758 + 1.2816, abs=1e-4)
    # Defaults: sd = sqrt(0.25) = 0.5 for accuracy, 1 option for set size.
    assert mde(0.5, 80) == pytest.approx(Z * 0.5 / math.sqrt(80)) == pytest.approx(0.15661, abs=1e-5)
    assert mde(1.0, 300) == pytest.approx(0.16175, abs=1e-5)
    # (2.8016 * 0.5 / 0.02)^2 = 4905.55 -> 4906; (2.8016 * 1 / 0.2)^2 = 196.22 -> 197
    assert items_needed(0.5, 0.02) == 4906 and items_needed(1.0, 0.2) == 197 and items_needed(1.0, -0.2) == 197
    assert items_needed(10 / Z, 1.0) == 100  # an exact integer is not rounded up to 101 by float error


@pytest.mark.parametrize(("sd", "change"), [(0.5, 0.02), (0.31, 0.05), (1.0, 0.2), (2.9, 0.1)])
def test_items_needed_is_the_smallest_n_whose_mde_is_the_change(sd, change):
    n = items_needed(sd, change)
    assert mde(sd, n) <= change < mde(sd, n - 1)
    for n0 in (40, 80, 1000):  # n = n0 (MDE(n0) / delta)^2 from any pilot size
        assert n == math.ceil(n0 * (mde(sd, n0) / change) ** 2 - 1e-9)


def test_mde_of_a_delta_comes_from_its_own_interval():
    d = delta("accuracy", -0.008, 0.012)  # -0.8 to +1.2 points
    assert se_of(d) == pytest.approx(0.02 / (2 * Z95))
    assert mde_of(d) == pytest.approx(Z * 0.02 / (2 * Z95)) == pytest.approx(0.014294, abs=1e-6)


def test_measured_variance_pools_per_task_bootstrap_deltas():
    se1, se2 = 0.01, 0.02  # SE0 at n0 = 100: sd_item = 0.1 and 0.2
    ds = [
        delta("accuracy", -Z95 * se1, Z95 * se1),
        delta("accuracy", 0.05 - Z95 * se2, 0.05 + Z95 * se2, comp="w3"),
        delta("accuracy", -9, 9, task=ALL_TASKS),  # the task average repeats its tasks: left out
        delta("accuracy", -9, 9, comp="w2", variance=SPLITS_ONLY),  # covers the split only: left out
        delta("accuracy", 0.0, 0.0, comp="same"),  # identical to its baseline: says nothing about a change
        delta("mean_set_size", -0.1, 0.3),
    ]
    var = measured_variance(ds, 100, "run r")
    assert var is not None and var.source == "run r"
    acc = var.sds["accuracy"]
    assert acc.measured and acc.n_cells == 2
    assert acc.sd == pytest.approx(math.sqrt((0.1**2 + 0.2**2) / 2))  # root mean square
    assert (acc.low, acc.high) == pytest.approx((0.1, 0.2))
    assert var.sd("mean_set_size") == pytest.approx(0.4 / (2 * Z95) * 10)
    assert measured_variance(ds[:2], 100, "r") is None  # no set-size delta: nothing to measure it on


def test_power_plan_rows_and_needs():
    plan = power_plan(300, 3, default_variance(), {"accuracy": 0.02, "mean_set_size": 0.2})
    one, avg = plan.rows
    assert (one.cell, one.items, avg.cell, avg.items) == ("one task", 300, "average over 3 tasks", 900)
    assert one.mde["accuracy"] == pytest.approx(Z * 0.5 / math.sqrt(300))  # 8.1 points
    assert avg.mde["accuracy"] == pytest.approx(Z * 0.5 / 30)  # the average counts n * T items: 4.7 points
    assert avg.mde["mean_set_size"] == pytest.approx(Z / 30)
    acc, size = plan.needs
    assert (acc.one_task, acc.average) == (4906, math.ceil(4906 / 3))
    assert (size.one_task, size.average) == (197, 66)
    assert len(power_plan(80, 1, default_variance()).rows) == 1


def test_detect_parses_points_and_options():
    assert parse_detect("acc=2,set_size=0.2") == pytest.approx({"accuracy": 0.02, "mean_set_size": 0.2})
    assert parse_detect(" set_size = -0.5 ") == {"mean_set_size": 0.5}  # two-sided: the sign does not matter


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ac=2", r"--detect: unknown metric 'ac'; choose acc or set_size"),
        ("acc", r"--detect: 'acc' is not metric=change"),
        ("acc=", r"--detect: 'acc=' is not metric=change"),
        ("acc=two", r"--detect: acc='two' is not a number"),
        ("acc=0", r"--detect: acc=0 must be above 0"),
        ("acc=nan", r"--detect: acc=nan must be above 0"),
        ("acc=150", r"at most 100 points"),
        ("set_size=7", r"at most 6 options"),
        ("acc=1,acc=2", r"--detect: acc is given twice"),
        ("", r"--detect: give metric=change"),
    ],
)
def test_bad_detect_forms_name_the_flag(text, message):
    with pytest.raises(SurefastError, match=message):
        parse_detect(text)


def test_unknown_metric_suggests_the_close_name():
    with pytest.raises(SurefastError) as err:
        parse_detect("set_sise=1")
    assert err.value.hint == "did you mean 'set_size'?"


def _paired_power(rng, n, discordance, change, sims, chunk=2000):
    """Share of ``sims`` simulated studies of ``n`` paired binary items whose 95% paired test rejects."""
    up, down = (discordance + change) / 2, (discordance - change) / 2  # P(+1), P(-1) per item
    rejected = 0
    for start in range(0, sims, chunk):
        u = rng.random((min(chunk, sims - start), n))
        d = np.where(u < up, 1.0, np.where(u < up + down, -1.0, 0.0))  # [sims, n]
        z = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
        rejected += int((np.abs(z) > Z95).sum())
    return rejected / sims


def test_power_at_the_computed_n_is_eighty_percent_by_monte_carlo():
    """Paired binary outcomes with a known discordance d and change delta: at the n the module
    computes from the per-item sd sqrt(d - delta^2), the paired test rejects in ~80% of studies.

    20,000 simulated studies give the empirical power a standard error of sqrt(0.8 * 0.2 / 20000)
    = 0.0028; rounding n up adds at most +0.001 and the normal approximation less at n ~ 1000, so
    +-0.012 is over four standard errors. The stated default uses the null variance d, which errs
    towards more items: its power is at least as high."""
    rng = np.random.default_rng(0)
    d, change = 0.2, 0.04
    n = items_needed(math.sqrt(d - change**2), change)
    assert n == 974
    assert _paired_power(rng, n, d, change, 20_000) == pytest.approx(0.8, abs=0.012)
    n_null = items_needed(math.sqrt(d), change)  # the default's formula
    assert n_null > n and _paired_power(rng, n_null, d, change, 20_000) >= 0.8 - 0.012
    assert _paired_power(rng, n // 4, d, change, 4_000) < 0.35  # a quarter of the items: MDE doubles


def _rows_of(logits, labels, model, comp, n_boot=200):
    from surefast.conformal import evaluate

    rows = evaluate(logits, labels, from_logits=True, score_fns=("lac",), n_splits=10, n_boot=n_boot, seed=3)
    common = {"model": model, "compression": comp, "task": "mmlu", "strategy": "shared", "protocol": "p"}
    return [{**common, **r} for r in rows]


def _two_models(n, discordance, seed=0):
    """Logits of a dense model right on 60% of the items and a compressed one that flips a share
    ``discordance`` of the items between right and wrong; returns them and the realised flips."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, n)
    right = rng.random(n) < 0.6
    flipped = rng.random(n) < discordance
    logits = []
    for correct in (right, right ^ flipped):
        x = rng.normal(0, 1, (n, 6))
        wrong = (labels + rng.integers(1, 6, n)) % 6
        top = np.where(correct, labels, wrong)
        x[np.arange(n), top] += 3.0
        logits.append(x)
    return logits, labels, right, right ^ flipped


def test_bootstrap_sd_of_the_split_protocol_matches_the_binary_formula():
    """The reported accuracy (mean over splits of test-set means) has about the item variance of
    the all-items mean: the item bootstrap's sd_item is sqrt(d - delta^2) of the items scored
    (200 replicates: about 5% sampling error; 10 splits at c = 1/2 add c / ((1 - c) R) = 10% to the
    variance, 5% to the sd)."""
    n = 250
    (dense, comp), labels, a, b = _two_models(n, 0.3)
    rows = _rows_of(dense, labels, "m", "") + _rows_of(comp, labels, "m", "w4")
    var = variance_of_rows(rows, n, "synthetic")
    assert var is not None
    diff = b.astype(float) - a.astype(float)
    expected = math.sqrt(np.mean(diff != 0) - diff.mean() ** 2)
    assert var.sd("accuracy") == pytest.approx(expected, rel=0.15)
    assert var.sds["mean_set_size"].measured and var.sd("mean_set_size") > 0  # the calibration quantile in it too
    # The report's MDE of the same delta is the planner's MDE at the run's n, from the same variance.
    (acc,) = [d for d in deltas(cells_from_rows(rows)) if d.metric == "accuracy" and d.key.task == "mmlu"]
    assert mde_of(acc) == pytest.approx(mde(var.sd("accuracy"), n))


# --- the CLI and the report ---------------------------------------------------------------------

PLAN = """
name: power
models: [tiny:llama]
compressions: [dense, {label: rtn-w4, method: rtn, bits: 4}]
tasks: [mmlu, cosmosqa]
strategies: shared
n: 300
splits: 10
"""


def _plan_cmd(tmp_path, capsys, *extra):
    """``surefast study plan`` on :data:`PLAN`: (exit code, stdout, stderr), whitespace collapsed."""
    from surefast.cli import main

    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    with pytest.raises(SystemExit) as exit_:
        main(["study", "plan", str(path), "--no-estimate", "--store", str(tmp_path / "store"), *extra])
    out, err = capsys.readouterr()
    return exit_.value.code or 0, re.sub(r"\s+", " ", out), " ".join(err.split())


def _plan_out(tmp_path, capsys, *extra):
    code, out, err = _plan_cmd(tmp_path, capsys, *extra)
    assert code == 0, err
    return out


def test_study_plan_prints_the_mde_table_with_the_defaults(tmp_path, capsys, isolated_home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = _plan_out(tmp_path, capsys)
    assert "smallest detectable change (two-sided 5% level, 80% power)" in out
    assert re.search(r"one task │ 300 │ 8\.1 │ 0\.16", out) and re.search(
        r"average over 2 tasks │ 600 │ 5\.7 │ 0\.11", out
    )
    assert "variance: stated defaults" in out and "accuracy 0.50 (discordance 0.25), set size 1.00" in out
    assert "items per task to detect" not in out
    out = _plan_out(tmp_path, capsys, "--detect", "acc=2,set_size=0.2")
    assert re.search(r"accuracy 2 points │ 4906 │ 2453", out) and re.search(r"set size 0\.2 options │ 197 │ 99", out)


def test_study_plan_refuses_a_bad_detect_in_one_line(tmp_path, capsys, isolated_home):
    code, _, err = _plan_cmd(tmp_path, capsys, "--detect", "ac=2")
    assert code == 2
    assert (
        err.startswith("error: --detect: unknown metric 'ac'; choose acc or set_size") and "did you mean 'acc'" in err
    )


def _pilot_store(root, n=120):
    from surefast.bench.store import Store

    store = Store(root)
    run = store.create_run({"config": {"n": n}})
    (dense, comp), labels, _, _ = _two_models(n, 0.3, seed=1)
    run.write_part("m-dense-mmlu", _rows_of(dense, labels, "m", "", n_boot=50))
    run.write_part("m-w4-mmlu", _rows_of(comp, labels, "m", "w4", n_boot=50))
    return store, run


def test_study_plan_measures_the_variance_on_a_pilot(tmp_path, capsys, isolated_home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    store, run = _pilot_store(tmp_path / "pilot")
    for pilot in (str(store.root), str(run.folder)):
        out = _plan_out(tmp_path, capsys, "--pilot", pilot)
        assert f"variance: measured on run {run.run_id} (120 items per task)" in out and "over 1 cells" in out
    code, _, err = _plan_cmd(tmp_path, capsys, "--pilot", "no-such-run")
    assert code == 2 and err.startswith("error: --pilot: run 'no-such-run' not found")


def test_every_not_significant_finding_states_its_mde():
    from surefast.bench.report.build import sweeps_from_labels
    from surefast.bench.report.findings import findings

    rows = rows_for("m", "", "mmlu", 0.60, 2.0, noise=0.05) + rows_for(
        "m", "awq", "mmlu", 0.60, 2.0, noise=0.05, seed=1
    )
    cells = cells_from_rows(rows)
    ds = deltas(cells)
    acc = next(d for d in ds if d.metric == "accuracy" and d.key.task == ALL_TASKS)
    assert not acc.significant
    text = findings(cells, ds, decoupling(ds), [], sweeps_from_labels(set()), 0.1, n_items=80)
    (line,) = [t for t in text if t.startswith("No compression changed")]
    assert f"at these 80 items a change smaller than {100 * mde_of(acc):.1f} points in accuracy" in line
    assert "could not be detected with 80% power" in line
    unknown = findings(cells, ds, decoupling(ds), [], {}, 0.1)
    assert any("at this run's number of items a change smaller than" in t for t in unknown)
