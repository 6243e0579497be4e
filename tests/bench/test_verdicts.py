"""The three findings' verdicts on synthetic cells whose truth is known, against naive computations."""

from __future__ import annotations

import numpy as np
import pytest

from surefast.bench.analysis import decoupling, deltas
from surefast.bench.analysis.cells import ALL_TASKS, Cell, CellKey, Cells
from surefast.bench.analysis.deltas import Delta
from surefast.bench.analysis.verdicts import (
    REFUTED,
    REPRODUCED,
    UNDETERMINED,
    changepoint,
    decoupling_verdict,
    pooled_difference,
    scale_differences,
    scale_verdict,
    threshold_verdict,
)

B, R = 400, 20  # bootstrap replicates, splits
SMALL, LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"


def cell(size: float, acc: float, noise: np.ndarray, acc_noise: np.ndarray | None = None) -> Cell:
    """A task-average cell: set size ``size`` and accuracy ``acc``, replicates shifted by ``noise`` [B]."""
    acc_noise = np.zeros(B) if acc_noise is None else acc_noise
    splits = {"mean_set_size": np.full(R, size), "accuracy": np.full(R, acc), "coverage": np.full(R, 0.9)}
    boot = {"mean_set_size": size + noise, "accuracy": acc + acc_noise, "coverage": np.full(B, 0.9)}
    return Cell(splits, boot, protocol="p")


def item_noise(rng: np.random.Generator, sd: float) -> np.ndarray:
    return rng.normal(0, sd, B)


def test_scale_difference_pairs_replicates_across_the_four_cells() -> None:
    rng = np.random.default_rng(0)
    shared = item_noise(rng, 0.3)  # item-sampling noise every cell shares: pairing cancels it
    own = [item_noise(rng, 0.02) for _ in range(4)]
    cells: Cells = {
        CellKey(SMALL, "", ALL_TASKS): cell(2.0, 0.5, shared + own[0]),
        CellKey(SMALL, "rtn", ALL_TASKS): cell(2.5, 0.45, shared + own[1]),
        CellKey(LARGE, "", ALL_TASKS): cell(1.5, 0.6, shared + own[2]),
        CellKey(LARGE, "rtn", ALL_TASKS): cell(1.6, 0.59, shared + own[3]),
    }
    (d,) = scale_differences(cells, SMALL, LARGE)
    assert d.diff.value == pytest.approx(0.5 - 0.1)
    naive = ((shared + own[1]) - (shared + own[0])) - ((shared + own[3]) - (shared + own[2]))
    assert d.diff.high - d.diff.value == pytest.approx(1.959963984540054 * naive.std(ddof=1))
    assert d.diff.high - d.diff.low < 0.2  # the shared 0.3 noise cancelled
    assert scale_verdict(cells, SMALL, LARGE).verdict == REPRODUCED
    pooled = pooled_difference(cells, SMALL, LARGE)
    assert pooled is not None and pooled.value == pytest.approx(0.4)


def test_scale_verdict_is_refuted_when_the_large_model_grows_more_and_undetermined_when_equal() -> None:
    rng = np.random.default_rng(1)

    def cells_for(small_growth: float, large_growth: float, sd: float) -> Cells:
        return {
            CellKey(SMALL, "", ALL_TASKS): cell(2.0, 0.5, item_noise(rng, sd)),
            CellKey(SMALL, "rtn", ALL_TASKS): cell(2.0 + small_growth, 0.5, item_noise(rng, sd)),
            CellKey(LARGE, "", ALL_TASKS): cell(1.5, 0.6, item_noise(rng, sd)),
            CellKey(LARGE, "rtn", ALL_TASKS): cell(1.5 + large_growth, 0.6, item_noise(rng, sd)),
        }

    assert scale_verdict(cells_for(0.1, 0.6, 0.02), SMALL, LARGE).verdict == REFUTED
    found = scale_verdict(cells_for(0.3, 0.3, 0.05), SMALL, LARGE)
    assert found.verdict == UNDETERMINED and "smallest detectable difference" in found.evidence[0]


def test_scale_refuses_cells_of_different_items() -> None:
    rng = np.random.default_rng(2)
    cells: Cells = {
        CellKey(SMALL, "", ALL_TASKS): cell(2.0, 0.5, item_noise(rng, 0.1)),
        CellKey(SMALL, "rtn", ALL_TASKS): cell(2.5, 0.5, item_noise(rng, 0.1)),
        CellKey(LARGE, "", ALL_TASKS): cell(1.5, 0.6, item_noise(rng, 0.1)),
        CellKey(LARGE, "rtn", ALL_TASKS): cell(1.6, 0.6, item_noise(rng, 0.1)),
    }
    for key in (CellKey(LARGE, "", ALL_TASKS), CellKey(LARGE, "rtn", ALL_TASKS)):
        cells[key].protocol = "other items"
    assert scale_differences(cells, SMALL, LARGE) == []
    assert scale_verdict(cells, SMALL, LARGE).verdict == UNDETERMINED


SWEEP = [
    (0.0, ""),
    (10.0, "wanda-10"),
    (20.0, "wanda-20"),
    (30.0, "wanda-30"),
    (40.0, "wanda-40"),
    (50.0, "wanda-50"),
    (60.0, "wanda-60"),
]


def sweep_cells(curve: list[float], sd: float, seed: int = 3) -> Cells:
    rng = np.random.default_rng(seed)
    shared = item_noise(rng, 0.2)
    return {
        CellKey(SMALL, label, ALL_TASKS): cell(y, 0.5, shared + item_noise(rng, sd))
        for (_, label), y in zip(SWEEP, curve, strict=True)
    }


def test_a_cliff_is_a_threshold_with_its_changepoint_inside_the_interval() -> None:
    curve = [2.0, 2.0, 2.01, 2.0, 2.02, 2.6, 3.2]  # flat, then rising after 40
    cells = sweep_cells(curve, 0.02)
    found = changepoint(cells, SMALL, SWEEP)
    assert found is not None and found.changepoint == 40.0
    assert found.interval[0] <= 40.0 <= found.interval[1]
    # naive hinge on the point estimates: the slope rise is ~0.06 per level
    x = np.array([lv for lv, _ in SWEEP])
    design = np.stack([np.ones_like(x), x, np.maximum(x - 40, 0)], axis=1)
    naive = np.linalg.lstsq(design, np.array(curve), rcond=None)[0][2]
    assert found.kink.value == pytest.approx(naive)
    assert threshold_verdict(cells, SMALL, "wanda", SWEEP).verdict == REPRODUCED


def test_linear_growth_is_gradual_and_noise_is_undetermined() -> None:
    linear = [2.0 + 0.01 * lv for lv, _ in SWEEP]
    assert threshold_verdict(sweep_cells(linear, 0.01), SMALL, "wanda", SWEEP).verdict == REFUTED
    flat = [2.0] * len(SWEEP)
    assert threshold_verdict(sweep_cells(flat, 0.05), SMALL, "wanda", SWEEP).verdict == UNDETERMINED
    few = {k: v for k, v in sweep_cells(flat, 0.05).items() if k.compression in ("", "wanda-10", "wanda-20")}
    assert threshold_verdict(few, SMALL, "wanda", SWEEP).verdict == UNDETERMINED


def per_task(compression: str, size: float, acc: float, base: tuple[float, float], rng: np.random.Generator) -> Cells:
    out = {}
    for task in ("mmlu", "halu_dialogue"):
        out[CellKey(SMALL, "", task)] = cell(base[0], base[1], item_noise(rng, 0.01), item_noise(rng, 0.002))
        out[CellKey(SMALL, compression, task)] = cell(size, acc, item_noise(rng, 0.01), item_noise(rng, 0.002))
    return out


def test_hidden_inflation_reproduces_finding_one() -> None:
    rng = np.random.default_rng(4)
    cells = per_task("gptq", 2.5, 0.50, (2.0, 0.50), rng)  # accuracy holds, sets grow by 0.5
    ds = deltas(cells)
    found = decoupling_verdict(decoupling(ds), ds)
    assert found.verdict == REPRODUCED
    assert any(e.startswith("hidden inflation: ") for e in found.evidence)


def test_no_change_anywhere_leaves_finding_one_undetermined() -> None:
    rng = np.random.default_rng(5)
    cells = per_task("gptq", 2.0, 0.50, (2.0, 0.50), rng)
    ds = deltas(cells)
    assert decoupling_verdict(decoupling(ds), ds).verdict == UNDETERMINED


def _pair(compression: str, task: str, acc: tuple[float, float, float], size: tuple[float, float, float]):
    key = CellKey(SMALL, compression, task)
    return [Delta(key, "accuracy", *acc, baseline=0.3), Delta(key, "mean_set_size", *size, baseline=3.0)]


def test_one_nominal_cell_among_many_does_not_reproduce_finding_one() -> None:
    # accuracy holds, sets grow 0.15 (95% 0.03 to 0.27: p = 0.014 alone); 20 unchanged cells beside it
    odd = _pair("sparsegpt-50", "halu_dialogue", (0.0, -0.03, 0.03), (0.15, 0.03, 0.27))
    nulls = [d for i in range(20) for d in _pair(f"wanda-{i}", "mmlu", (0.001, -0.03, 0.032), (0.01, -0.1, 0.12))]
    alone = decoupling_verdict(decoupling(odd), odd)
    assert alone.verdict == REPRODUCED  # 2 tests: Holm-adjusted 0.028
    ds = odd + nulls
    found = decoupling_verdict(decoupling(ds), ds)
    assert found.verdict == UNDETERMINED
    assert any("none after Holm's correction over 42 tests" in e for e in found.evidence)
    assert any(e.startswith("hidden inflation: ") and "not significant once" in e for e in found.evidence)


def test_the_reports_decoupling_sentence_names_the_adjusted_p_value() -> None:
    from surefast.bench.report.findings import hidden_inflation, silent_degradation

    odd = _pair("sparsegpt-50", "halu_dialogue", (0.0, -0.03, 0.03), (0.15, 0.03, 0.27))
    loss = _pair("wanda-50", "mmlu", (-0.2, -0.25, -0.15), (0.0, -0.05, 0.05))  # p ~ 1e-15: survives
    nulls = [d for i in range(20) for d in _pair(f"wanda-{i}", "mmlu", (0.001, -0.03, 0.032), (0.01, -0.1, 0.12))]
    ds = odd + loss + nulls
    dec = decoupling(ds)
    (inflated,) = hidden_inflation(dec, ds, one_task=False)
    # raw p 0.0143, second smallest of 44: Holm multiplies it by 43
    assert "Holm-adjusted p 0.61 over 44 tests, not significant once every cell's test is counted" in inflated
    (silent,) = silent_degradation(dec, ds, one_task=False)
    assert "Holm-adjusted p" in silent and "not significant once" not in silent
    (alone,) = hidden_inflation(decoupling(odd), odd, one_task=False)
    assert "Holm" not in alone  # one cell, one test of its set size: nothing to correct for
