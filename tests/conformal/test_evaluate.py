"""The split protocol against a naive per-split loop, its table shape, its errors, and summarize."""

from __future__ import annotations

import math

import numpy as np
import pytest

from surefast.conformal import (
    METRICS,
    SCORES,
    evaluate,
    evaluate_splits,
    get_score,
    quantile_rank,
    softmax,
    split_indices,
    split_uniforms,
    summarize,
)
from surefast.errors import SurefastError

K = 6


def toy(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = softmax(2 * rng.normal(size=(n, K)))
    labels = np.array([rng.choice(K, p=p) for p in probs])
    return probs, labels


def naive_split(probs, labels, cal, test, name, alpha, u) -> dict[str, float]:
    """One split, one score, one alpha, item by item with Python loops: the reference."""

    def score(i: int, y: int) -> float:
        p = probs[i]
        mass = sum(q for q in p if q >= p[y])
        tied = sum(q for q in p if q == p[y])
        rank = sum(1 for q in p if q >= p[y])
        cfg = get_score(name)
        if name == "lac":
            return 1 - p[y]
        s = mass - (u[i] * tied if cfg.randomized else 0.0)
        return s + (cfg.lam * max(rank - cfg.k_reg, 0) if name.startswith("raps") else 0.0)

    cal_scores = sorted(score(i, labels[i]) for i in cal)
    k = quantile_rank(len(cal), alpha)
    qhat = cal_scores[k - 1] if k <= len(cal) else math.inf
    sets = [[y for y in range(K) if score(i, y) <= qhat + 1e-8] for i in test]
    right = [int(np.argmax(probs[i])) == labels[i] for i in test]
    size = sum(map(len, sets)) / len(test)
    out = {
        "accuracy": sum(right) / len(test),
        "coverage": sum(labels[i] in s for i, s in zip(test, sets, strict=True)) / len(test),
        "mean_set_size": size,
        "uacc": sum(right) / len(test) / size * math.sqrt(K),
        "e_share": sum(int(np.argmax(probs[i])) == 4 for i in test) / len(test),
        "f_share": sum(int(np.argmax(probs[i])) == 5 for i in test) / len(test),
    }
    ece = 0.0
    for b in range(10):
        members = [j for j, i in enumerate(test) if b / 10 < round(probs[i].max(), 9) * 1.0 <= (b + 1) / 10]
        if members:
            ece += abs(sum(right[j] for j in members) - sum(probs[test[j]].max() for j in members)) / len(test)
    out["ece"] = ece
    for s in range(K + 1):
        with_size = [labels[i] in st for i, st in zip(test, sets, strict=True) if len(st) == s]
        out[f"set_size_hist_{s}"] = len(with_size) / len(test)
        out[f"coverage_at_size_{s}"] = sum(with_size) / len(with_size) if with_size else math.nan
    return out


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_matches_naive_loop(fraction: float) -> None:
    probs, labels = toy()
    alphas = (0.1, 0.2, 0.35)
    res = evaluate_splits(
        probs, labels, score_fns=list(SCORES), alphas=alphas, n_splits=4, cal_fraction=fraction, seed=3
    )
    cal, test = split_indices(len(labels), 4, fraction, 3)
    u = split_uniforms(len(labels), 4, 3)
    for name in SCORES:
        for alpha in alphas:
            for r in range(4):
                want = naive_split(probs, labels, cal[r], test[r], name, alpha, u[r])
                got = {m: res.get(name, alpha, m)[r] for m in want}  # groups: tests/conformal/test_conditional.py
                assert got == pytest.approx(want, nan_ok=True), (name, alpha, r)


def test_rows_are_a_tidy_table() -> None:
    probs, labels = toy()
    rows = evaluate(probs, labels, alphas=(0.1, 0.2), n_splits=3)
    assert len(rows) == 2 * 2 * 3 * len(METRICS)
    assert set(rows[0]) == {"score_fn", "alpha", "split", "metric", "value", "resampling"}
    assert {r["resampling"] for r in rows} == {"splits"}
    keys = {(r["score_fn"], r["alpha"], r["split"], r["metric"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["score_fn"] for r in rows} == {"lac", "aps"}
    assert all(isinstance(r["value"], float) for r in rows)


def test_deterministic_and_splits_independent_of_scores() -> None:
    probs, labels = toy()
    a = evaluate_splits(probs, labels, score_fns=("lac",), n_splits=5, seed=7)
    b = evaluate_splits(probs, labels, score_fns=("aps_randomized", "lac"), alphas=(0.2, 0.1), n_splits=5, seed=7)
    np.testing.assert_array_equal(a.get("lac", 0.1, "coverage"), b.get("lac", 0.1, "coverage"))
    c = evaluate_splits(probs, labels, score_fns=("lac",), n_splits=5, seed=8)
    assert not np.array_equal(a.get("lac", 0.1, "accuracy"), c.get("lac", 0.1, "accuracy"))


def test_logits_flag_applies_softmax() -> None:
    rng = np.random.default_rng(1)
    logits = 3 * rng.normal(size=(40, K))
    labels = rng.integers(0, K, 40)
    from_logits = evaluate(logits, labels, n_splits=3, from_logits=True)
    from_probs = evaluate(softmax(logits), labels, n_splits=3)
    assert [r["value"] for r in from_logits] == pytest.approx([r["value"] for r in from_probs], nan_ok=True)


def test_empty_sets_count_as_size_zero_unless_filled() -> None:
    # Confident, mostly right items: deterministic APS's qhat falls below the top probability of
    # the most confident items, whose sets are then empty (LAC cannot empty a set whose top
    # probability beats the calibration items').
    probs, labels = toy(200, seed=2)
    res = evaluate_splits(probs, labels, score_fns=("aps",), alphas=(0.2,), n_splits=5)
    assert (res.get("aps", 0.2, "set_size_hist_0") > 0).all()
    assert (res.get("aps", 0.2, "coverage_at_size_0") == 0).all()
    filled = evaluate_splits(probs, labels, score_fns=("aps",), alphas=(0.2,), n_splits=5, fill_empty=True)
    assert (filled.get("aps", 0.2, "set_size_hist_0") == 0).all()
    assert (filled.get("aps", 0.2, "mean_set_size") > res.get("aps", 0.2, "mean_set_size")).all()
    assert (filled.get("aps", 0.2, "coverage") >= res.get("aps", 0.2, "coverage")).all()


def test_too_small_calibration_set_names_the_minimum() -> None:
    probs, labels = toy(36)  # 18 calibration items
    evaluate(probs, labels, alphas=(0.1,), n_splits=1)  # needs 9: fine
    with pytest.raises(SurefastError, match=r"alpha=0\.05: 18 items, need at least 19"):
        evaluate(probs, labels, alphas=(0.1, 0.05), n_splits=1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p, y: (p * 1.1, y), "sum to 1"),
        (lambda p, y: (np.where(np.arange(K) == 0, np.nan, p), y), "NaN"),
        (lambda p, y: (p, np.where(np.arange(len(y)) == 0, 6, y)), r"labels must lie in 0\.\.5"),
        (lambda p, y: (p, y - 1.0 * (y > 0) + 0.5), "integer"),
        (lambda p, y: (p, y[:-1]), "shape"),
        (lambda p, y: (p[:, :1] / p[:, :1], y * 0), "K >= 2"),  # any K >= 2 options is a task (imports)
        (lambda p, y: (-p, y), "negative|sum to 1"),
        (lambda p, y: (p[0], y), "2-D"),
    ],
)
def test_bad_inputs(change, match: str) -> None:
    probs, labels = change(*toy())
    with pytest.raises(SurefastError, match=match):
        evaluate(probs, labels, n_splits=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_fns": ("lac", "lac")}, "distinct"),
        ({"score_fns": ("apps",)}, "unknown conformity score"),
        ({"cal_fraction": 1.0}, "cal_fraction"),
        ({"n_splits": 0}, "n_splits"),
        ({"alphas": ()}, "at least one alpha"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(SurefastError, match=match):
        evaluate(*toy(), **kwargs)


def test_summarize() -> None:
    rows = [
        {"model": "m", "score_fn": "lac", "alpha": 0.1, "split": i, "metric": "coverage", "value": v}
        for i, v in enumerate([0.8, 0.9, 1.0, math.nan])
    ]
    rows += [
        {"model": "m", "score_fn": "lac", "alpha": 0.1, "split": 0, "metric": "coverage_at_size_6", "value": math.nan}
    ]
    cov, undefined = summarize(rows)
    assert cov["model"] == "m" and cov["metric"] == "coverage" and "split" not in cov and "value" not in cov
    assert cov["mean"] == pytest.approx(0.9)
    assert cov["std"] == pytest.approx(0.1)  # ddof = 1 over the three defined values
    # numpy linear percentiles of [0.8, 0.9, 1.0]: 0.8 + 0.025 * 2 * 0.1, 1.0 - 0.025 * 2 * 0.1.
    assert (cov["ci_low"], cov["ci_high"]) == pytest.approx((0.805, 0.995))
    assert cov["n_splits"] == 3
    assert undefined["n_splits"] == 0 and math.isnan(undefined["mean"])


def test_summarize_groups_every_score_alpha_metric() -> None:
    probs, labels = toy()
    table = summarize(evaluate(probs, labels, alphas=(0.1, 0.2), n_splits=5))
    assert len(table) == 2 * 2 * len(METRICS)
    acc = [t for t in table if t["metric"] == "accuracy"]
    assert len({t["mean"] for t in acc}) == 1  # accuracy does not depend on the score or alpha
