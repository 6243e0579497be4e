"""Conditional coverage, the selective metrics in the split table, and K-option tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from surefast.conformal import evaluate_splits
from surefast.conformal.conditional import MIN_GROUP_TEST, group_metrics, item_groupings, make_grouping, worst_and_gap
from surefast.conformal.selective import aurc, auroc_correct, brier, nll, selective_accuracy, selective_metrics
from surefast.conformal.splits import split_indices
from surefast.errors import SurefastError


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_group_metrics_golden() -> None:
    # five test items in groups 0, 0, 1, 1, 1; covered T F T T F; set sizes 1 2 3 1 2
    covered = np.array([True, False, True, True, False])
    sizes = np.array([1, 2, 3, 1, 2])
    codes = np.array([0, 0, 1, 1, 1])
    cov, size, n = group_metrics(covered, sizes, codes, 3)
    np.testing.assert_allclose(cov[:2], [0.5, 2 / 3])
    np.testing.assert_allclose(size[:2], [1.5, 2.0])
    np.testing.assert_array_equal(n, [2, 3, 0])
    assert np.isnan(cov[2]) and np.isnan(size[2])  # an empty group is undefined, not 0


def test_worst_and_gap_golden() -> None:
    cov = np.array([0.8, 0.95, 0.5, np.nan])
    judged = np.array([True, True, False, True])  # the 0.5 group is too small; the NaN one is empty
    worst, gap = worst_and_gap(cov, judged, 0.9)
    assert worst == pytest.approx(0.8)
    assert gap == pytest.approx((0.1 + 0.05) / 2)
    worst, gap = worst_and_gap(cov, np.zeros(4, dtype=bool), 0.9)
    assert np.isnan(worst) and np.isnan(gap)


def test_groups_are_judged_by_expected_test_items() -> None:
    g = make_grouping("subject", ["a"] * 40 + ["b"] * 39 + [""] * 50, cal_fraction=0.5)
    assert g.labels == ("(none)", "a", "b")
    assert g.judged.tolist() == [True, True, False]  # 40 items at 50/50: 20 expected test items
    assert MIN_GROUP_TEST == 20
    # a grouping with one label is no grouping; position always is one
    names = [x.name for x in item_groupings(np.array([0, 1, 2]), 6, {"subject": ["", "", ""]}, 0.5)]
    assert names == ["position"]


def _naive_group_coverage(p, y, codes, n_groups, alpha, n_splits, seed):
    """Textbook LAC split conformal with python loops: per split, each group's test coverage."""
    cal, test = split_indices(len(y), n_splits, 0.5, seed)
    out = np.full((n_splits, n_groups), np.nan)
    for r in range(n_splits):
        scores = sorted(1.0 - p[i, y[i]] for i in cal[r])
        k = math.ceil((len(scores) + 1) * (1 - alpha))
        qhat = scores[k - 1]
        for g in range(n_groups):
            members = [i for i in test[r] if codes[i] == g]
            if members:
                hits = [1.0 - p[i, y[i]] <= qhat * (1 + 1e-12) + 1e-15 for i in members]
                out[r, g] = sum(hits) / len(members)
    return out


def test_per_group_coverage_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(3)
    n = 240
    logits = rng.normal(size=(n, 6)) * 2.0
    y = rng.integers(0, 6, n)
    subjects = [f"s{i % 4}" for i in range(n)]
    res = evaluate_splits(
        logits, y, from_logits=True, score_fns=("lac",), n_splits=7, seed=5, groups={"subject": subjects}
    )
    p = _softmax(logits)
    codes = np.array([int(s[1]) for s in subjects])
    naive = _naive_group_coverage(p, y, codes, 4, 0.1, 7, 5)
    for g in range(4):
        np.testing.assert_allclose(res.get("lac", 0.1, f"coverage@subject=s{g}"), naive[:, g])
    naive_pos = _naive_group_coverage(p, y, y, 6, 0.1, 7, 5)
    for j, letter in enumerate("ABCDEF"):
        np.testing.assert_allclose(res.get("lac", 0.1, f"coverage@position={letter}"), naive_pos[:, j])
    # the summaries are over judged groups: 60 items per subject, 30 expected test items each
    worst = np.nanmin(naive, axis=1)
    np.testing.assert_allclose(res.get("lac", 0.1, "coverage_worst@subject"), worst)
    gap = np.nanmean(np.abs(naive - 0.9), axis=1)
    np.testing.assert_allclose(res.get("lac", 0.1, "coverage_gap@subject"), gap)


def test_group_summaries_have_bootstrap_rows_and_per_group_rows_do_not() -> None:
    rng = np.random.default_rng(0)
    n = 200
    res = evaluate_splits(
        rng.normal(size=(n, 6)),
        rng.integers(0, 6, n),
        from_logits=True,
        n_splits=3,
        n_boot=4,
        groups={"subject": ["a", "b"] * 100},
    )
    boot = {r["metric"] for r in res.rows() if r["resampling"] == "bootstrap"}
    assert {"coverage_worst@subject", "coverage_gap@position", "coverage_worst@size", "auroc", "nll"} <= boot
    assert not any("=" in m for m in boot)
    assert "coverage@subject=a" in res.metrics


def test_selective_metrics_equal_the_single_functions() -> None:
    rng = np.random.default_rng(1)
    for ties in (False, True):
        z = rng.normal(size=(5, 50, 4))
        if ties:  # many equal confidences, right and wrong among them
            z = np.round(z, 0)
        p = _softmax(z)
        y = rng.integers(0, 4, (5, 50))
        got = selective_metrics(p, y, (0.5, 0.8))
        np.testing.assert_allclose(got["auroc"], auroc_correct(p, y))
        np.testing.assert_allclose(got["selective_accuracy_50"], selective_accuracy(p, y, 0.5))
        np.testing.assert_allclose(got["selective_accuracy_80"], selective_accuracy(p, y, 0.8))
        np.testing.assert_allclose(got["aurc"], aurc(p, y))
        np.testing.assert_allclose(got["brier"], brier(p, y))
        np.testing.assert_allclose(got["nll"], nll(p, y))


def test_selective_metrics_are_in_the_split_table() -> None:
    rng = np.random.default_rng(2)
    n = 100
    logits, y = rng.normal(size=(n, 6)), rng.integers(0, 6, n)
    res = evaluate_splits(logits, y, from_logits=True, n_splits=4, seed=1)
    _cal, test = split_indices(n, 4, 0.5, 1)
    p = _softmax(logits)
    np.testing.assert_allclose(res.get("lac", 0.1, "auroc"), auroc_correct(p[test], y[test]))
    np.testing.assert_allclose(res.get("aps", 0.1, "brier"), brier(p[test], y[test]))


def test_nll_of_a_confident_wrong_answer_is_not_capped() -> None:
    # A logit gap of 40 nats: -log p_y = 40. The old floor of 1e-12 reported 27.6.
    logits = np.array([[40.0, 0.0, 0.0, 0.0, 0.0, 0.0]] * 20)
    y = np.ones(20, dtype=int)
    res = evaluate_splits(logits, y, from_logits=True, n_splits=2)
    assert res.get("lac", 0.1, "nll") == pytest.approx(40.0 + math.log(1 + 5 * math.exp(-40.0)), rel=1e-9)


def test_tasks_with_four_options() -> None:
    rng = np.random.default_rng(4)
    n = 120
    res = evaluate_splits(rng.normal(size=(n, 4)), rng.integers(0, 4, n), from_logits=True, n_splits=3)
    assert "set_size_hist_4" in res.metrics and "set_size_hist_5" not in res.metrics
    assert "coverage@position=D" in res.metrics and "coverage@position=E" not in res.metrics
    assert np.all(res.get("lac", 0.1, "mean_set_size") <= 4)
    assert np.all(np.isnan(res.get("lac", 0.1, "e_share")))  # E is surefast's six-option "I don't know"
    hist = sum(res.get("aps", 0.1, f"set_size_hist_{s}") for s in range(5))
    np.testing.assert_allclose(hist, 1.0)
    with pytest.raises(SurefastError, match="K >= 2"):
        evaluate_splits(np.zeros((20, 1)), np.zeros(20, dtype=int), from_logits=True)
