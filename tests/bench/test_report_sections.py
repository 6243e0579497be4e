"""The report's paired per-item and conditional-coverage sections, on rows and items written here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from surefast.bench.report import build_report, conditional, per_item, plots
from surefast.bench.report.build import load_rows
from surefast.bench.store import Store

from .test_analysis import rows_for, write_synthetic_study

PNG = b"\x89PNG\r\n\x1a\n"
SUBJECTS = {"astronomy": 25, "law & <order>": 30, "virology": 5}  # test items per split
POSITIONS = {"A": 30, "B": 30, "C": 30, "D": 30, "E": 25, "F": 8}
N_ITEMS = 40
SCRIPT = "<script>alert(1)</script> a | pipe"


def group_rows(model, compression, task, cov, splits=10, n_boot=20, seed=0):
    """Per-group split rows and the summaries (splits and bootstrap) as the runner stores them."""
    rng = np.random.default_rng(seed)
    out = []

    def row(strategy, score_fn, split, metric, value, resampling="splits"):
        return {
            "model": model,
            "compression": compression,
            "task": task,
            "strategy": strategy,
            "score_fn": score_fn,
            "alpha": 0.1,
            "split": split,
            "metric": metric,
            "value": value,
            "resampling": resampling,
        }

    for strategy in ("base", "shared"):
        for score_fn in ("lac", "aps"):
            for s in range(splits):
                for kind, groups in (("position", POSITIONS), ("subject", SUBJECTS)):
                    for group, n in groups.items():
                        value = cov - (0.1 if group == "E" else 0) + 0.01 * rng.standard_normal()
                        out.append(row(strategy, score_fn, s, f"coverage@{kind}={group}", value))
                        out.append(row(strategy, score_fn, s, f"set_size@{kind}={group}", 2.0))
                        out.append(row(strategy, score_fn, s, f"n@{kind}={group}", float(n)))
                    out.append(row(strategy, score_fn, s, f"coverage_worst@{kind}", cov - 0.1))
                    out.append(row(strategy, score_fn, s, f"coverage_gap@{kind}", 0.03))
                out.append(row(strategy, score_fn, s, "coverage_worst@size", math.nan))  # no group large enough
            for b in range(n_boot):
                for kind in ("position", "subject"):
                    out.append(
                        row(
                            strategy,
                            score_fn,
                            b,
                            f"coverage_worst@{kind}",
                            cov - 0.1 + 0.02 * rng.standard_normal(),
                            "bootstrap",
                        )
                    )
                    out.append(
                        row(
                            strategy,
                            score_fn,
                            b,
                            f"coverage_gap@{kind}",
                            0.03 + 0.005 * rng.standard_normal(),
                            "bootstrap",
                        )
                    )
    return out


def item_rows(model, compression, strategy, right):
    """Items with one confident answer each: the label's when ``right[i]``, else the next option."""
    out = []
    for i in range(N_ITEMS):
        label = i % 6
        logits = [0.0] * 6
        logits[label if right[i] else (label + 1) % 6] = 3.0
        out.append(
            {
                "model": model,
                "compression": compression,
                "task": "mmlu",
                "strategy": strategy,
                "uid": f"q{i}",
                "label": label,
                "logits": logits,
                "group": list(SUBJECTS)[i % 3],
                "text": SCRIPT if i == 0 else f"Question number {i}?",
            }
        )
    return out


@pytest.fixture
def study(tmp_path):
    store = Store(tmp_path / "store")
    run = store.create_run({})
    dense_right = [i < 30 for i in range(N_ITEMS)]
    comp_right = [6 <= i < 31 for i in range(N_ITEMS)]  # 6 right -> wrong (0-5), 1 wrong -> right (30)
    for compression, acc, right, cov in (("", 0.6, dense_right, 0.9), ("w4", 0.5, comp_right, 0.85)):
        label = compression or "dense"
        rows = rows_for("m", compression, "mmlu", acc, 2.0, seed=len(label))
        run.write_part(f"m|{label}|mmlu", rows + group_rows("m", compression, "mmlu", cov, seed=len(label)))
        for strategy in ("base", "shared"):
            run.write_items(f"m|{label}|mmlu|{strategy}", item_rows("m", compression, strategy, right))
    return store, run


def test_both_sections_appear_with_data(study, tmp_path):
    store, run = study
    page = build_report(store, [run.run_id], tmp_path / "report").read_text()
    md = (tmp_path / "report" / "report.md").read_text()
    for text in (page, md):
        assert "Conditional coverage" in text and "Paired per-item changes" in text
        assert per_item.NO_ITEMS not in text and conditional.NO_GROUPS not in text
    # Pooled over two strategies: 12 right -> wrong, 2 wrong -> right, p = 2 (1 + 14 + 91) / 2^14.
    assert "| m | w4 | mmlu | 80 | 12 | 2 | -12.50 | 0.0129 |" in md
    # Worst-group coverage with a bootstrap interval; a summary undefined on every split.
    assert re.search(r"\| m \| w4 \| mmlu \| 75\.00 \+- \d\.\d\d \| 3\.00 \+- \d\.\d\d \|", md), md
    assert "too few" in md
    # The question texts are listed, escaped in both formats.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "&lt;script>alert(1)&lt;/script> a \\| pipe" in md and "<script>" not in md
    assert "law &amp; &lt;order&gt;" in page
    assert "Question number 30?" in page  # the item that went wrong -> right
    for name in ("p_true_shift.png", "group_coverage_0.png", "group_coverage_1.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG)
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 2 + 3  # scatter, coverage + ours
    assert page.count("Question number") == 6  # q1-q5 and q30 (q0 is the script): only the items that changed


def test_no_items_and_no_groups_are_one_line_each(tmp_path):
    store = Store(tmp_path / "store")
    run = write_synthetic_study(store, ("mmlu",), {})
    page = build_report(store, [run.run_id], tmp_path / "report").read_text()
    md = (tmp_path / "report" / "report.md").read_text()
    for text in (per_item.NO_ITEMS, conditional.NO_GROUPS):
        assert text in md and text.replace("'", "&#x27;") in page
    assert page.count("<table>") == 2  # the main and per-task tables only


def test_small_groups_are_marked(study):
    store, run = study
    means, summaries = conditional.load_groups(store, [run.run_id], 0.1)
    cell = means[next(k for k in means if k.compression == "w4")]
    points = {p.group: p for p in conditional.group_points(cell, "position")}
    assert list(points) == list(POSITIONS)
    assert [g for g, p in points.items() if p.small] == ["F"]  # n 8 < MIN_GROUP_TEST
    assert points["E"].coverage == pytest.approx(0.75, abs=0.01) and points["A"].n == 30
    subjects = {p.group: p.small for p in conditional.group_points(cell, "subject")}
    assert subjects == {"astronomy": False, "law & <order>": False, "virology": True}
    key = next(k for k in summaries if k.compression == "w4")
    assert summaries[key].boot["coverage_worst@position"].shape == (20,)
    section = conditional.section(means, summaries, 0.1)
    assert "85.0 (n 8, too few)" in section.markdown or "(n 8, too few)" in section.markdown


def test_main_rows_leave_out_per_group_metrics(study):
    store, run = study
    rows, _ = load_rows(store, [run.run_id])
    assert rows and not any("@" in r["metric"] for r in rows)


def test_plots_are_png_bytes():
    edges = np.linspace(-1, 1, 41)
    png = plots.shift_histograms(
        [("m", [("w4", np.r_[np.zeros(20), [5, 30], np.zeros(18)]), ("gptq", np.ones(40))])], edges
    )
    assert png.startswith(PNG)
    points = [plots.GroupPoint("A", 0.9, 30, False, 0.92), plots.GroupPoint("B", 0.7, 5, True, None)]
    subject = [plots.GroupPoint(f"subject_with_a_long_name_{i}", 0.8 + i / 300, 25, False) for i in range(57)]
    grid = [[("mmlu: position", points), ("mmlu: subject", subject)], [("arc: position", points)]]
    assert plots.group_coverage("m, w4", grid, 0.9).startswith(PNG)
    # labels from user data with mathtext characters are drawn as plain text
    odd_labels = ["rtn-$\\frac$-cost", "$x^$"]
    assert plots.shift_histograms([(odd_labels[0], [(odd_labels[1], np.ones(40))])], edges).startswith(PNG)
    odd = [plots.GroupPoint(g, 0.9, 30, False) for g in odd_labels]
    assert plots.group_coverage(odd_labels[0], [[(odd_labels[1], odd)]], 0.9, 20).startswith(PNG)
