"""Deltas pair only cells that saw the same items and splits, and their intervals cover item sampling.

The old fallback for cells with different split counts, ``1.96 * sqrt(v1/R1 + v2/R2)``, divided the
split-to-split spread by sqrt(R): under no true difference (R=100 against R=99) it called accuracy
significant 74.5% of the time. Cells that do not pair are now left out and listed.
"""

from __future__ import annotations

import numpy as np
import pytest

from surefast.bench.analysis import CellKey, cells_from_rows, deltas
from surefast.bench.analysis.cells import ALL_TASKS, MIXED
from surefast.bench.analysis.deltas import ITEMS, SPLITS_ONLY, Z95, unpaired
from surefast.bench.report import build_report
from surefast.bench.store import Store


def unit_rows(model, compression, task, acc, splits=20, boot=0, protocol="p1", seed=0, shift=0.0):
    """Rows of one unit: per-split values and, with ``boot``, per-replicate values."""
    rng = np.random.default_rng(seed)
    key = {"model": model, "compression": compression, "task": task, "strategy": "shared", "alpha": 0.1}
    key["protocol"] = protocol
    out = []
    for score_fn in ("lac", "aps"):
        for kind, count in (("splits", splits), ("bootstrap", boot)):
            for i in range(count):
                for metric, value in (("accuracy", acc), ("mean_set_size", 2.0 + shift), ("coverage", 0.9)):
                    noisy = value + 0.02 * rng.standard_normal()
                    out.append(dict(key, score_fn=score_fn, split=i, metric=metric, value=noisy, resampling=kind))
    return out


def test_different_split_counts_are_not_compared() -> None:
    rows = unit_rows("m", "", "mmlu", 0.5, splits=100) + unit_rows("m", "w4", "mmlu", 0.5, splits=99, seed=1)
    cells = cells_from_rows(rows)
    assert deltas(cells) == []  # the old fallback reported a (mostly "significant") delta here
    reasons = unpaired(cells)
    assert "different numbers of splits (99 and 100)" in reasons[CellKey("m", "w4", "mmlu")]


def test_different_protocols_are_not_compared() -> None:
    rows = unit_rows("m", "", "mmlu", 0.5, protocol="seed0") + unit_rows("m", "w4", "mmlu", 0.5, protocol="seed1")
    cells = cells_from_rows(rows)
    assert deltas(cells) == []
    assert "different items" in unpaired(cells)[CellKey("m", "w4", "mmlu")]


def test_a_cell_from_runs_with_different_protocols_is_mixed() -> None:
    rows = unit_rows("m", "", "mmlu", 0.5, protocol="a") + unit_rows("m", "", "mmlu", 0.5, protocol="b")
    assert cells_from_rows(rows)[CellKey("m", "", "mmlu")].protocol == MIXED


def test_bootstrap_interval_is_the_paired_replicate_spread() -> None:
    rows = unit_rows("m", "", "mmlu", 0.5, boot=50) + unit_rows("m", "w4", "mmlu", 0.45, boot=50, seed=1)
    cells = cells_from_rows(rows)
    base, comp = cells[CellKey("m", "", "mmlu")], cells[CellKey("m", "w4", "mmlu")]
    d = next(d for d in deltas(cells) if d.key.compression == "w4" and d.metric == "accuracy")
    assert d.variance == ITEMS
    assert d.value == pytest.approx(comp["accuracy"].mean() - base["accuracy"].mean())
    half = Z95 * np.std(comp.boot["accuracy"] - base.boot["accuracy"], ddof=1)
    assert (d.ci_low, d.ci_high) == pytest.approx((d.value - half, d.value + half))
    avg = cells[CellKey("m", "w4", ALL_TASKS)]
    assert avg.boot["accuracy"].shape == (50,)


def test_results_without_a_bootstrap_fall_back_to_split_intervals_and_say_so() -> None:
    rows = unit_rows("m", "", "mmlu", 0.5, protocol="") + unit_rows("m", "w4", "mmlu", 0.4, protocol="", seed=1)
    for row in rows:  # as stored by schema version 1
        del row["resampling"], row["protocol"]
    d = next(d for d in deltas(cells_from_rows(rows)) if d.metric == "accuracy")
    assert d.variance == SPLITS_ONLY and d.significant


def test_report_lists_what_it_did_not_compare(tmp_path) -> None:
    store = Store(tmp_path / "results")
    first = store.create_run({"kind": "bench"})
    first.write_part("m|dense|mmlu|shared", unit_rows("m", "", "mmlu", 0.5, splits=100, boot=20))
    second = store.create_run({"kind": "bench"})
    second.write_part("m|w4|mmlu|shared", unit_rows("m", "w4", "mmlu", 0.5, splits=99, boot=20, seed=1))
    html = build_report(store, [first.run_id, second.run_id], tmp_path / "report")
    md = (html.parent / "report.md").read_text()
    assert "Not compared: m with w4 on mmlu" in md
    assert "different numbers of splits" in md
    assert "paired item bootstrap" in md


def test_bench_summary_means_come_from_the_splits_only(tmp_path) -> None:
    from surefast.bench.runner import summary

    store = Store(tmp_path / "results")
    run = store.create_run({"kind": "bench", "config": {"alphas": [0.1]}})
    rows = unit_rows("m", "", "mmlu", 0.5, splits=10, boot=30)
    for row in rows:  # replicates far off the split values: any mixing would show
        if row["resampling"] == "bootstrap":
            row["value"] += 10.0
    run.write_part("m|dense|mmlu|shared", rows)
    acc = next(r for r in summary(store, run.run_id) if r["task"] == "mmlu")["accuracy"]
    splits = [r["value"] for r in rows if r["metric"] == "accuracy" and r["resampling"] == "splits"]
    assert acc == pytest.approx(np.mean(splits))


def test_bench_show_of_a_run_without_results_says_so(tmp_path, capsys) -> None:
    from surefast.cli import main

    store = Store(tmp_path / "results")
    run = store.create_run({"kind": "bench", "config": {"alphas": [0.1]}})
    run.update_meta(status="failed", error="disk full")
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "show", run.run_id, "--store", str(store.root)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "has no results (status: failed; error: disk full)" in err


def test_strategies_may_differ_in_protocol_and_still_pair() -> None:
    # A longer prompt strategy can leave out an over-long item, so its protocol differs from the
    # other strategy's; the same strategy of the dense and the compressed model still pair.
    rows = []
    for compression, seed in (("", 0), ("w4", 1)):
        for strategy, protocol in (("base", "p-base"), ("task", "p-task")):
            unit = unit_rows("m", compression, "mmlu", 0.5, boot=10, protocol=protocol, seed=seed)
            rows += [dict(r, strategy=strategy) for r in unit]
    cells = cells_from_rows(rows)
    assert cells[CellKey("m", "", "mmlu")].protocol == cells[CellKey("m", "w4", "mmlu")].protocol != MIXED
    assert {d.metric for d in deltas(cells) if d.key.task == "mmlu"} == {"accuracy", "coverage", "mean_set_size"}
