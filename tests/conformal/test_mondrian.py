"""Mondrian (group-conditional) calibration: goldens, a textbook loop, per-group coverage, errors."""

from __future__ import annotations

import importlib
import math
from fractions import Fraction

import numpy as np
import pytest

from surefast.conformal import (
    LACConfig,
    MondrianConfig,
    RAPSConfig,
    at_labels,
    class_scores,
    conformal_quantile,
    evaluate,
    evaluate_splits,
    get_score,
    grouped_quantile,
    prediction_sets,
    softmax,
    split_indices,
)
from surefast.conformal.conditional import make_grouping
from surefast.conformal.mondrian import mondrian_sets
from surefast.errors import SurefastError

from .test_textbook import ACROSS_LEVELS, AMBIGUOUS, confident_logits, exact_probs, exact_scores

SUBJECTS = ("a", "b", "c")


def _scores(name: str, probs: np.ndarray, labels: np.ndarray, cal: np.ndarray, test: np.ndarray, u_cal, u_test):
    """True-label calibration scores ``[R, n_cal]`` and test scores ``[R, T, K]`` at item indices."""
    config = get_score(name)
    cal_s = at_labels(class_scores(config, probs[cal], u_cal), labels[cal])
    return cal_s, class_scores(config, probs[test], u_test)


# --- goldens -----------------------------------------------------------------------------------

# alpha = 0.5. Calibration (true label 0 for subject a, 1 for subject b), LAC scores 1 - p_y:
#   a: 0.1, 0.3, 0.5       n = 3, k = ceil(4 * 0.5) = 2 -> qhat_a = 0.3
#   b: 0.4, 0.6, 0.7, 0.8  n = 4, k = ceil(5 * 0.5) = 3 -> qhat_b = 0.7
#   c: none                                          -> qhat_c = +inf
#   all seven: k = ceil(8 * 0.5) = 4 -> the marginal qhat = 0.5
GOLDEN_CAL = [
    [0.9, 0.05, 0.05],
    [0.7, 0.15, 0.15],
    [0.5, 0.25, 0.25],
    [0.2, 0.6, 0.2],
    [0.3, 0.4, 0.3],
    [0.35, 0.3, 0.35],
    [0.4, 0.2, 0.4],
]
GOLDEN_TEST = [0.5, 0.35, 0.15]  # LAC scores 0.5, 0.65, 0.85


def _golden() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    probs = np.array([*GOLDEN_CAL, GOLDEN_TEST, GOLDEN_TEST, GOLDEN_TEST])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1, 2])
    return probs, labels, np.arange(7)[None], np.arange(7, 10)[None]  # one split: [1, 7], [1, 3]


def test_golden_thresholds_per_group() -> None:
    scores = 1.0 - np.array([0.9, 0.7, 0.5, 0.6, 0.4, 0.3, 0.2])
    codes = np.array([0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(grouped_quantile(scores, codes, 3, 0.5), [0.3, 0.7, np.inf])
    # several alphas: [A, G]; alpha 0.2: k = ceil(4 * 0.8) = 4 > 3 in a (+inf), ceil(5 * 0.8) = 4 in b (0.8)
    got = grouped_quantile(scores, codes, 3, (0.5, 0.2))
    np.testing.assert_allclose(got, [[0.3, 0.7, np.inf], [np.inf, 0.8, np.inf]])
    # leading dims, codes and scores per row (a bootstrap row may repeat items)
    rows = np.stack([scores, scores[::-1]])
    got = grouped_quantile(rows, np.stack([codes, codes]), 2, 0.5)
    np.testing.assert_allclose(got, [[0.3, 0.7], [0.7, 0.4]])  # row 2: a = {0.8, 0.7, 0.6}, b = {0.4, 0.5, 0.3, 0.1}


def test_golden_sets_by_subject() -> None:
    probs, labels, cal, test = _golden()
    subjects = ["a", "a", "a", "b", "b", "b", "b", "a", "b", "c"]
    grouping = make_grouping("subject", subjects, 0.5)
    cal_s, test_s = _scores("lac", probs, labels, cal, test, None, None)
    qhat = grouped_quantile(cal_s, grouping.codes[cal], 3, 0.5)  # [1, G]
    np.testing.assert_allclose(qhat.value, [[0.3, 0.7, np.inf]])
    sets = mondrian_sets(get_score("lac@subject"), cal_s, test_s, (0.5,), labels, cal, test, (grouping,))
    expected = [
        [False, False, False],  # subject a, qhat 0.3: every score above it
        [True, True, False],  # subject b, qhat 0.7: 0.5 and 0.65
        [True, True, True],  # subject c has no calibration item: the full set
    ]
    np.testing.assert_array_equal(sets, [[expected]])
    marginal = conformal_quantile(cal_s, 0.5)  # [1]: 0.5, the set {0} for all three (a tie is in)
    np.testing.assert_allclose(marginal.value, [0.5])
    np.testing.assert_array_equal(prediction_sets(test_s, marginal), [[[True, False, False]] * 3])


def test_golden_sets_by_position() -> None:
    # by true label: label 0 scores 0.1, 0.3, 0.5 -> qhat_0 = 0.3; label 1 0.4 .. 0.8 -> qhat_1 = 0.7;
    # label 2 has no calibration item -> +inf. The set {y : s_y <= qhat_y} is {1, 2} for every
    # test item, whatever its own label: the threshold goes with the candidate label.
    probs, labels, cal, test = _golden()
    cal_s, test_s = _scores("lac", probs, labels, cal, test, None, None)
    sets = mondrian_sets(get_score("lac@position"), cal_s, test_s, (0.5,), labels, cal, test)
    np.testing.assert_array_equal(sets, np.broadcast_to([False, True, True], (1, 1, 3, 3)))
    qhat = grouped_quantile(cal_s, labels[cal], 3, 0.5)
    np.testing.assert_allclose(qhat.value, [[0.3, 0.7, np.inf]])
    np.testing.assert_array_equal(prediction_sets(test_s, qhat, per="label"), sets[:, 0])


def test_prediction_sets_thresholds_per_item_and_label_on_floats() -> None:
    scores = np.array([[0.1, 0.5], [0.4, 0.2]])  # [N=2, K=2]
    np.testing.assert_array_equal(prediction_sets(scores, 0.3), [[True, False], [False, True]])
    np.testing.assert_array_equal(prediction_sets(scores, np.array([0.5, 0.1]), per="item"), [[1, 1], [0, 0]])
    np.testing.assert_array_equal(prediction_sets(scores, np.array([0.4, 0.1]), per="label"), [[1, 0], [1, 0]])
    with pytest.raises(SurefastError, match="per must be one of"):
        prediction_sets(scores, 0.3, per="group")


# --- against a textbook loop -------------------------------------------------------------------


def _textbook(logits, labels, codes, cal, test, alpha, name, u_cal, u_test):
    """Python loops in exact arithmetic: per split, alpha and group, the ceil((n_g + 1)(1 - alpha))-th
    smallest calibration score of the group, and the sets ``{y : s_y <= qhat_g}`` with ``g`` the
    test item's group (``codes``) or, for ``codes=None``, the candidate label ``y``."""
    probs = {i: exact_probs(logits[i]) for i in {*cal.ravel().tolist(), *test.ravel().tolist()}}
    k_opts = logits.shape[1]
    sets = np.zeros((*test.shape, k_opts), dtype=bool)
    ambiguous = np.zeros_like(sets)
    for r in range(cal.shape[0]):
        by_group: dict[int, list[tuple[Fraction, Fraction, Fraction]]] = {}
        for j, i in enumerate(cal[r]):
            entry = exact_scores(probs[i], name, float(u_cal[r, j]))[labels[i]]
            by_group.setdefault(int(labels[i] if codes is None else codes[i]), []).append(entry)
        qhat = {}
        for g, entries in by_group.items():
            entries.sort(key=lambda e: e[0])
            k = math.ceil((len(entries) + 1) * (1 - Fraction(str(alpha))))
            qhat[g] = entries[k - 1] if k <= len(entries) else None
        for t, i in enumerate(test[r]):
            for y, (s, level, mass) in enumerate(exact_scores(probs[i], name, float(u_test[r, t]))):
                q = qhat.get(int(y if codes is None else codes[i]))
                if q is None:  # no or too few calibration items in the group: the full set
                    sets[r, t, y] = True
                    continue
                diff = s - q[0]
                sets[r, t, y] = diff <= 0
                if level == q[1]:
                    scale = min(mass, 1 - mass, q[2], 1 - q[2])
                    ambiguous[r, t, y] = diff != 0 and abs(diff) <= AMBIGUOUS * scale
                else:
                    ambiguous[r, t, y] = abs(diff) <= ACROSS_LEVELS
    return sets, ambiguous


def _random_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, 6))
    labels = rng.integers(0, 6, n)
    logits[np.arange(n), labels] += 3.0  # an informed model: sets of every size
    tie = rng.random(n) < 0.15
    logits[tie, 2] = logits[tie, 1]  # tied options within an item
    return logits, labels


@pytest.mark.parametrize("data", ["random", "confident"])
@pytest.mark.parametrize("kind", ["subject", "position"])
@pytest.mark.parametrize("name", ["lac", "aps", "raps", "aps_randomized"])
def test_sets_equal_a_textbook_loop(name: str, kind: str, data: str) -> None:
    n = 90
    logits, labels = _random_data(n, 1) if data == "random" else confident_logits(n, 4)  # gaps to 45 nats
    rng = np.random.default_rng(11)
    codes = rng.choice(3, size=n, p=[0.55, 0.35, 0.10])  # the small group gets +inf at alpha 0.1
    grouping = make_grouping("subject", [SUBJECTS[c] for c in codes], 0.5)
    cal, test = split_indices(n, 3, 0.5, seed=2)  # [3, 45] each
    cal[2], test[2] = rng.integers(0, n, cal.shape[1]), rng.integers(0, n, test.shape[1])  # a bootstrap-like row
    u_cal, u_test = rng.random(cal.shape), rng.random(test.shape)
    config = get_score(f"{name}@{kind}")
    probs = softmax(logits)
    cal_s, test_s = _scores(name, probs, labels, cal, test, u_cal, u_test)
    alphas = (0.1, 0.3)
    got = mondrian_sets(config, cal_s, test_s, alphas, labels, cal, test, (grouping,))  # [R, A, T, K]
    checked = ambiguous_total = 0
    for a, alpha in enumerate(alphas):
        expected, ambiguous = _textbook(
            logits, labels, None if kind == "position" else codes, cal, test, alpha, name, u_cal, u_test
        )
        wrong = (got[:, a] != expected) & ~ambiguous
        assert not wrong.any(), (alpha, np.argwhere(wrong)[:5].tolist())
        checked += expected.size
        ambiguous_total += int(ambiguous.sum())
    assert ambiguous_total <= 0.01 * checked  # agreement is not bought by skipping


def test_grouped_quantile_with_one_group_is_the_conformal_quantile() -> None:
    logits, labels = confident_logits(120, 0)
    probs = softmax(logits)
    cal = split_indices(120, 4, 0.5, 0)[0]
    for config in (LACConfig(), RAPSConfig(), RAPSConfig(randomized=True)):
        u = np.random.default_rng(0).random(cal.shape)
        scores = at_labels(class_scores(config, probs[cal], u), labels[cal])  # [R, n]
        one = grouped_quantile(scores, np.zeros(cal.shape, dtype=np.int64), 1, (0.05, 0.1, 0.3))
        plain = conformal_quantile(scores, (0.05, 0.1, 0.3))
        for field in ("key", "value"):
            np.testing.assert_array_equal(getattr(one, field)[..., 0], getattr(plain, field))


# --- per-group coverage ------------------------------------------------------------------------


def _mean(res, score: str, metric: str) -> float:
    return float(np.nanmean(res.get(score, 0.1, metric)))


def test_mondrian_covers_an_undercovered_subject() -> None:
    rng = np.random.default_rng(0)
    n_easy, n_hard = 2000, 1000
    n = n_easy + n_hard
    labels = rng.integers(0, 6, n)
    logits = rng.normal(size=(n, 6))
    logits[np.arange(n), labels] += np.r_[np.full(n_easy, 4.0), np.full(n_hard, 0.5)]  # hard: barely informed
    subjects = ["easy"] * n_easy + ["hard"] * n_hard
    res = evaluate_splits(
        logits,
        labels,
        from_logits=True,
        score_fns=("lac", "lac@subject"),
        n_splits=40,
        seed=1,
        groups={"subject": subjects},
    )
    assert _mean(res, "lac", "coverage@subject=hard") < 0.8  # marginal LAC: the hard items pay
    for group in ("easy", "hard"):
        assert _mean(res, "lac@subject", f"coverage@subject={group}") >= 0.9 - 0.015
    assert _mean(res, "lac@subject", "coverage") >= 0.9 - 0.01


def test_label_conditional_covers_every_answer_position() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    labels = rng.integers(0, 6, n)
    logits = rng.normal(size=(n, 6))
    logits[:, 5] -= 3.0  # a model biased against option F
    logits[np.arange(n), labels] += 2.0
    res = evaluate_splits(
        logits, labels, from_logits=True, score_fns=("lac", "lac@position", "aps@position"), n_splits=40, seed=2
    )
    letters = "ABCDEF"
    assert _mean(res, "lac", "coverage@position=F") < 0.6  # marginal LAC: answers F pay
    for score in ("lac@position", "aps@position"):
        for x in letters:
            assert _mean(res, score, f"coverage@position={x}") >= 0.9 - 0.02, (score, x)


# --- evaluate, bootstrap, single-label groupings -----------------------------------------------


def _toy(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return 2.0 * rng.normal(size=(n, 6)), rng.integers(0, 6, n), [SUBJECTS[i % 2] for i in range(n)]


def test_evaluate_rows_and_bootstrap_for_a_mondrian_score() -> None:
    logits, labels, subjects = _toy()
    rows = evaluate(
        logits,
        labels,
        from_logits=True,
        score_fns=["lac", "lac@subject", "aps_randomized@position"],
        n_splits=5,
        n_boot=4,
        groups={"subject": subjects},
    )
    names = {r["score_fn"] for r in rows}
    assert names == {"lac", "lac@subject", "aps_randomized@position"}
    boot = [r for r in rows if r["score_fn"] == "lac@subject" and r["resampling"] == "bootstrap"]
    assert {r["split"] for r in boot} == set(range(4))
    coverage = [r["value"] for r in boot if r["metric"] == "coverage"]
    assert len(coverage) == 4 and all(0.0 <= v <= 1.0 for v in coverage)


def test_evaluate_sets_are_the_mondrian_sets() -> None:
    logits, labels, subjects = _toy()
    res = evaluate_splits(
        logits, labels, from_logits=True, score_fns=["raps@subject"], n_splits=6, seed=3, groups={"subject": subjects}
    )
    cal, test = split_indices(len(labels), 6, 0.5, 3)
    cal_s, test_s = _scores("raps", softmax(logits), labels, cal, test, None, None)
    grouping = make_grouping("subject", subjects, 0.5)
    sets = mondrian_sets(get_score("raps@subject"), cal_s, test_s, (0.1,), labels, cal, test, (grouping,))
    covered = at_labels(sets[:, 0], labels[test])  # [R, T]
    np.testing.assert_allclose(res.get("raps@subject", 0.1, "coverage"), covered.mean(axis=1))
    np.testing.assert_allclose(res.get("raps@subject", 0.1, "mean_set_size"), sets[:, 0].sum(-1).mean(-1))


def test_a_single_label_grouping_is_one_group_the_ordinary_threshold() -> None:
    # The runner passes subject = "" for every item of a task without subjects: one group.
    logits, labels, _ = _toy()
    res = evaluate_splits(
        logits,
        labels,
        from_logits=True,
        score_fns=["aps_randomized", "aps_randomized@subject"],
        n_splits=5,
        n_boot=3,
        groups={"subject": [""] * len(labels)},
    )
    np.testing.assert_array_equal(res.values[0], res.values[1])
    assert res.boot is not None
    np.testing.assert_array_equal(res.boot[0], res.boot[1])


# --- specs and errors --------------------------------------------------------------------------


def test_spec_parses_to_a_frozen_config() -> None:
    config = get_score("raps_randomized@subject")
    assert isinstance(config, MondrianConfig)
    assert config.base == RAPSConfig(randomized=True) and config.by == "subject"
    assert config.randomized and config.name == "raps_randomized@subject"
    assert not get_score("lac@position").randomized
    assert get_score("lac@position") == MondrianConfig(LACConfig(), "position")
    with pytest.raises(AttributeError):
        config.by = "other"  # type: ignore[misc]
    named = MondrianConfig(RAPSConfig(lam=0.05, k_reg=1), "subject")
    assert named.name == "raps(lam=0.05,k_reg=1)@subject"


@pytest.mark.parametrize("spec", ["lac@", "@subject", "lac@a@b", "lac@ "])
def test_a_malformed_spec_is_one_line(spec: str) -> None:
    with pytest.raises(SurefastError, match="malformed score") as info:
        get_score(spec)
    assert "\n" not in str(info.value)


def test_an_unknown_base_keeps_the_suggestion() -> None:
    with pytest.raises(SurefastError, match="unknown conformity score 'lax'") as info:
        get_score("lax@subject")
    assert info.value.hint == "did you mean 'lac'?"


def test_a_config_refuses_a_nested_base_or_empty_grouping() -> None:
    with pytest.raises(SurefastError, match="plain base score"):
        MondrianConfig(get_score("lac@subject"), "position")
    with pytest.raises(SurefastError, match="grouping name"):
        MondrianConfig(LACConfig(), "")


def test_an_unknown_grouping_is_refused_before_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    E = importlib.import_module("surefast.conformal.evaluate")  # the package's `evaluate` is the function

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed before checking the grouping")

    monkeypatch.setattr(E, "split_metrics", never)
    logits, labels, subjects = _toy()
    expected = "score 'lac@subject' needs groups={'subject': [...]}; this evaluation has: position"
    with pytest.raises(SurefastError) as info:
        evaluate(logits, labels, from_logits=True, score_fns=["lac", "lac@subject"])
    assert info.value.message == expected
    with pytest.raises(SurefastError) as info:
        evaluate(logits, labels, from_logits=True, score_fns=["aps@topic"], groups={"subject": subjects})
    assert info.value.message.endswith("this evaluation has: position, subject")


def test_split_metrics_callers_must_pass_the_grouping() -> None:
    probs, labels, cal, test = _golden()
    cal_s, test_s = _scores("lac", probs, labels, cal, test, None, None)
    with pytest.raises(SurefastError, match="needs the grouping 'one'"):
        mondrian_sets(MondrianConfig(LACConfig(), "one"), cal_s, test_s, (0.5,), labels, cal, test, ())


def test_the_benchmark_accepts_its_groupings_and_paired_refuses_mondrian() -> None:
    from surefast.bench.analysis.paired import full_sample_sets
    from surefast.bench.runner import BenchConfig

    BenchConfig(score_fns=("lac", "lac@subject", "aps@position"))
    with pytest.raises(SurefastError, match="score_fns: 'lac@topic' calibrates per 'topic'"):
        BenchConfig(score_fns=("lac@topic",))
    with pytest.raises(SurefastError, match="score_fns: unknown conformity score 'lax'"):
        BenchConfig(score_fns=("lax@subject",))
    logits, labels, _ = _toy()
    assert full_sample_sets(logits, labels, "lac").shape == logits.shape
    with pytest.raises(SurefastError, match="not per group as lac@subject"):
        full_sample_sets(logits, labels, "lac@subject")
