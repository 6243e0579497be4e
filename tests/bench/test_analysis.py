import numpy as np
import pytest

from surefast.bench.analysis import CellKey, cells_from_rows, decoupling, deltas, sweep_jump
from surefast.bench.analysis.cells import ALL_TASKS


def rows_for(model, compression, task, acc, size, cov=0.9, splits=20, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for strategy in ("base", "shared"):
        for score_fn in ("lac", "aps"):
            for s in range(splits):
                for metric, value in (("accuracy", acc), ("mean_set_size", size), ("coverage", cov)):
                    out.append(
                        {
                            "model": model,
                            "compression": compression,
                            "task": task,
                            "strategy": strategy,
                            "score_fn": score_fn,
                            "alpha": 0.1,
                            "split": s,
                            "metric": metric,
                            "value": value + noise * rng.standard_normal(),
                        }
                    )
    return out


def write_synthetic_study(store, tasks, model_params):
    """A run of two sizes of one family x {dense, gptq-w4, wanda-10..50 (a cliff at 50)} x ``tasks``."""
    run = store.create_run({"model_params": model_params})
    for i, (model, acc) in enumerate((("fam-0.5b", 0.5), ("fam-1.5b", 0.7))):
        for task in tasks:
            run.write_part(f"{model}-dense-{task}", rows_for(model, "", task, acc, 2.0, seed=i))
            run.write_part(f"{model}-gptq-{task}", rows_for(model, "gptq-w4", task, acc, 2.6, seed=i + 10))
            for level, size in ((10, 2.02), (20, 2.05), (30, 2.1), (40, 2.2), (50, 3.4)):
                rows = rows_for(model, f"wanda-{level}", task, acc - level / 1000, size, seed=level + i)
                run.write_part(f"{model}-wanda{level}-{task}", rows)
    return run


def test_cells_average_strategies_scores_and_tasks():
    rows = rows_for("m", "", "mmlu", 0.6, 2.0, noise=0) + rows_for("m", "", "cosmosqa", 0.8, 3.0, noise=0)
    rows += [dict(r, alpha=0.05, value=99.0) for r in rows[:10]]  # another alpha is ignored
    cells = cells_from_rows(rows)
    assert cells[CellKey("m", "", "mmlu")]["accuracy"] == pytest.approx(np.full(20, 0.6))
    assert cells[CellKey("m", "", ALL_TASKS)]["mean_set_size"] == pytest.approx(np.full(20, 2.5))


def test_deltas_and_decoupling_find_both_kinds():
    rows = rows_for("m", "", "mmlu", 0.60, 2.0)
    rows += rows_for("m", "gptq", "mmlu", 0.60, 2.6, seed=1)  # accuracy holds, sets grow: hidden inflation
    rows += rows_for("m", "rtn-w2", "mmlu", 0.40, 2.0, seed=2)  # accuracy falls, sets flat: silent degradation
    rows += rows_for("m", "awq", "mmlu", 0.595, 2.02, seed=3)  # nothing happens
    ds = deltas(cells_from_rows(rows))
    by = {(d.key.compression, d.key.task, d.metric): d for d in ds}
    assert by[("gptq", "mmlu", "mean_set_size")].value == pytest.approx(0.6, abs=0.02)
    assert by[("gptq", "mmlu", "mean_set_size")].significant
    assert not by[("awq", "mmlu", "accuracy")].significant or abs(by[("awq", "mmlu", "accuracy")].value) < 0.01
    dec = decoupling(ds)
    assert CellKey("m", "gptq", "mmlu") in dec.hidden_inflation
    assert CellKey("m", "rtn-w2", "mmlu") in dec.silent_degradation
    assert CellKey("m", "awq", "mmlu") not in dec.hidden_inflation + dec.silent_degradation


def test_sweep_jump_tells_a_cliff_from_a_line():
    levels = [0, 10, 20, 30, 40, 50]
    line = sweep_jump(levels, [1.0, 1.2, 1.4, 1.6, 1.8, 2.0])
    cliff = sweep_jump(levels, [1.0, 1.01, 1.02, 1.03, 1.05, 2.0])
    assert line.last_step_share == pytest.approx(0.2)
    assert np.isnan(line.jump_score)  # a line fits exactly
    assert cliff.largest_step == pytest.approx(0.95) and cliff.largest_step_at == 50
    assert cliff.last_step_share > 0.9 and cliff.jump_score > 0.9 and cliff.changepoint == 40
    kink = sweep_jump(levels, [1.0, 1.0, 1.0, 1.5, 2.0, 2.5])
    assert kink.changepoint == 20 and kink.jump_score > 0.99


def test_scale_rows_line_up_sizes():
    from surefast.bench.analysis.scale import scale_rows

    rows = rows_for("small", "", "mmlu", 0.5, 2.0) + rows_for("small", "w4", "mmlu", 0.40, 2.8, seed=1)
    rows += rows_for("large", "", "mmlu", 0.7, 1.5, seed=2) + rows_for("large", "w4", "mmlu", 0.68, 1.6, seed=3)
    out = scale_rows(deltas(cells_from_rows(rows)), {"small": 0.5e9, "large": 1.5e9})
    by = {r.metric: r for r in out}
    assert [m for m, _, _ in by["accuracy"].by_size] == ["small", "large"]
    assert by["accuracy"].smaller_hurts_more and by["mean_set_size"].smaller_hurts_more


def test_scale_compares_sizes_of_one_family_only():
    from surefast.bench.analysis.scale import families, family_of

    assert (
        family_of("qwen2.5-coder-0.5b-instruct")
        == family_of("qwen2.5-coder-1.5b-instruct")
        == "qwen2.5-coder-*-instruct"
    )
    assert family_of("smollm2-135m-instruct") == "smollm2-*-instruct"
    assert family_of("tiny:llama@0") == "tiny:llama@0"
    sizes = {
        "qwen2.5-coder-0.5b-instruct": 0.5e9,
        "qwen2.5-coder-1.5b-instruct": 1.5e9,
        "smollm2-135m-instruct": 1.35e8,
    }
    assert families(sizes) == {"qwen2.5-coder-*-instruct": {k: v for k, v in sizes.items() if k.startswith("qwen")}}
    assert families({"smollm2-135m-instruct": 1.35e8, "qwen2.5-coder-0.5b-instruct": 0.5e9}) == {}


def test_a_large_but_insignificant_accuracy_drop_is_not_holding():
    """With few items a 13-point drop can be not significant; that is "cannot tell", not "holds"."""
    rows = rows_for("m", "", "mmlu", 0.35, 3.5) + rows_for("m", "w4a4", "mmlu", 0.22, 5.0, noise=0.2, seed=1)
    ds = deltas(cells_from_rows(rows))
    acc = next(d for d in ds if d.key.task == "mmlu" and d.metric == "accuracy")
    assert acc.value < -0.1
    dec = decoupling(ds)
    assert dec.hidden_inflation == [] and dec.n_cells == 1  # the task average is not a second cell


def test_findings_name_each_cell_once_and_few_sweep_levels_honestly():
    from surefast.bench.report.build import sweeps_from_labels
    from surefast.bench.report.findings import findings

    rows = rows_for("m", "", "mmlu", 0.60, 2.0)
    rows += rows_for("m", "gptq", "mmlu", 0.60, 2.6, seed=1)
    rows += rows_for("m", "wanda-10", "mmlu", 0.60, 2.0, seed=2) + rows_for("m", "wanda-30", "mmlu", 0.59, 2.05, seed=3)
    cells = cells_from_rows(rows)
    ds = deltas(cells)
    text = findings(cells, ds, decoupling(ds), [], sweeps_from_labels({k.compression for k in cells}), 0.1)
    assert sum("Hidden inflation" in t for t in text) == 1  # mmlu only, not again as the average
    assert any("3 levels are too few to tell a jump from a trend" in t for t in text)
    assert any(t.startswith("Significant changes") and "m with gptq: set size +0.60" in t for t in text)


def _findings(rows):
    from surefast.bench.report.build import sweeps_from_labels
    from surefast.bench.report.findings import findings

    cells = cells_from_rows(rows)
    ds = deltas(cells)
    return findings(cells, ds, decoupling(ds), [], sweeps_from_labels({k.compression for k in cells}), 0.1)


def test_a_tiny_sweep_change_is_not_called_a_jump():
    """The demo's case: +0.05 options over Wanda 0-50%, most of it in the last step. No threshold."""
    rows = rows_for("m", "", "mmlu", 0.60, 3.70)
    for level, size in ((10, 3.69), (20, 3.70), (30, 3.70), (40, 3.72), (50, 3.75)):
        rows += rows_for("m", f"wanda-{level}", "mmlu", 0.60, size, seed=level)
    text = _findings(rows)
    assert any("set size barely moves along the sweep" in t and "no threshold" in t for t in text), text
    assert not any("jumps" in t for t in text)


def test_a_noisy_sweep_is_not_called_a_jump():
    rows = rows_for("m", "", "mmlu", 0.60, 3.0, noise=0.5)
    for level, size in ((10, 3.0), (20, 3.0), (30, 3.0), (40, 3.0), (50, 3.3)):
        rows += rows_for("m", f"wanda-{level}", "mmlu", 0.60, size, noise=0.5, seed=level)
    text = _findings(rows)
    assert any("too noisy to locate a threshold" in t for t in text), text


def test_a_real_cliff_is_still_a_jump():
    rows = rows_for("m", "", "mmlu", 0.60, 2.0)
    for level, size in ((10, 2.02), (20, 2.05), (30, 2.1), (40, 2.2), (50, 3.4)):
        rows += rows_for("m", f"wanda-{level}", "mmlu", 0.60, size, seed=level)
    assert any("set size jumps along the sweep" in t for t in _findings(rows))


def test_a_baseline_near_chance_gets_a_caution():
    weak = _findings(rows_for("m", "", "mmlu", 0.27, 3.7) + rows_for("m", "gptq", "mmlu", 0.26, 3.8, seed=1))
    assert any(t.startswith("Caution: uncompressed m answers 2") and "close to chance (16.7%" in t for t in weak), weak
    strong = _findings(rows_for("m", "", "mmlu", 0.60, 2.0) + rows_for("m", "gptq", "mmlu", 0.59, 2.1, seed=1))
    assert not any(t.startswith("Caution") for t in strong)


def test_chance_follows_the_tasks_option_count():
    """An imported 4-option task's chance is 25%, not 1/6: 0.40 is near chance there, far above it at 6."""

    def with_hist(rows, k):
        extra = [
            {**r, "metric": f"set_size_hist_{s}", "value": 1.0 / (k + 1)}
            for r in rows
            if r["metric"] == "coverage"
            for s in range(k + 1)
        ]
        return rows + extra

    four = with_hist(rows_for("m", "", "arc", 0.40, 2.0), 4) + with_hist(
        rows_for("m", "gptq", "arc", 0.39, 2.1, seed=1), 4
    )
    assert any("close to chance (25.0% with 4 options)" in t for t in _findings(four)), _findings(four)
    six = with_hist(rows_for("m", "", "mmlu", 0.40, 2.0), 6) + with_hist(
        rows_for("m", "gptq", "mmlu", 0.39, 2.1, seed=1), 6
    )
    assert not any(t.startswith("Caution") for t in _findings(six))
    mixed = four + with_hist(rows_for("m", "", "mmlu", 0.30, 2.0, seed=2), 6)
    mixed += with_hist(rows_for("m", "gptq", "mmlu", 0.29, 2.1, seed=3), 6)
    assert any("20.8%, the mean over its tasks of 4 to 6 options" in t for t in _findings(mixed)), _findings(mixed)
