"""Paired per-item diagnostics: hand-computed goldens, a naive reference, the store path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from surefast.bench.analysis.paired import (
    POOLED,
    PairKey,
    full_sample_sets,
    mcnemar_exact,
    pair_arrays,
    paired_from_store,
    paired_rows,
    pairs_from_items,
    pool,
    pool_strategies,
    shift_histogram,
    top_changed,
)
from surefast.bench.store import ITEM_SCHEMA, Store
from surefast.errors import SurefastError


def onehot_logits(answers: list[int], k: int = 6, gap: float = 4.0) -> np.ndarray:
    out = np.zeros((len(answers), k))
    out[np.arange(len(answers)), answers] = gap
    return out


# ---- goldens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [(5, 0, 0.0625), (0, 5, 0.0625), (0, 0, 1.0), (1, 1, 1.0), (3, 7, 2 * (1 + 10 + 45 + 120) / 1024), (0, 1, 1.0)],
)
def test_mcnemar_goldens(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_matches_scipy_exact_and_log_space():
    for b, c in [(2, 9), (40, 61), (900, 1000), (3000, 3400), (30000, 30400), (12, 12)]:
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-8), (b, c)


def test_six_items_with_known_flips():
    # label:     A  B  C  D  E  F
    # dense:     A  B  C  D  A  A   right on 0-3
    # compressed A  C  D  D  E  A   right on 0, 3, 4: 1, 2 go right -> wrong, 4 wrong -> right
    labels = np.array([0, 1, 2, 3, 4, 5])
    dense = onehot_logits([0, 1, 2, 3, 0, 0])
    comp = onehot_logits([0, 2, 3, 3, 4, 0])
    items = pair_arrays(labels, dense, comp, uid=[f"q{i}" for i in range(6)], text=[f"question {i}" for i in range(6)])
    m = items.metrics()
    assert (m["flips_right_to_wrong"], m["flips_wrong_to_right"], m["n_paired"]) == (2, 1, 6)
    assert m["mcnemar_p"] == pytest.approx(1.0)  # 2 * P[Bin(3, 1/2) <= 1] = 2 * 4/8
    assert m["flip_rate"] == pytest.approx(3 / 6) and m["net_change"] == pytest.approx(-1 / 6)
    # p_true: e^4 / (e^4 + 5) when the answer is right, 1 / (e^4 + 5) otherwise.
    hi, lo = math.exp(4) / (math.exp(4) + 5), 1 / (math.exp(4) + 5)
    delta = np.array([0, lo - hi, lo - hi, 0, hi - lo, 0])
    assert items.delta == pytest.approx(delta)
    assert m["p_true_shift_mean"] == pytest.approx(delta.mean()) and m["p_true_shift_median"] == pytest.approx(0.0)
    top = top_changed(items, k=3)
    assert [t["uid"] for t in top] == ["q1", "q2", "q4"]  # |delta| ties: first stored first
    assert top[0] | {"delta": 0} == {
        "uid": "q1",
        "task": "",
        "strategy": "",
        "group": "",
        "text": "question 1",
        "label": "B",
        "answer_dense": "B",
        "answer_compressed": "C",
        "p_true_dense": pytest.approx(hi),
        "p_true_compressed": pytest.approx(lo),
        "delta": 0,
    }


def test_newly_uncovered_golden():
    # Six items, LAC, alpha = 0.5: k = ceil(7 * 0.5) = 4, the 4th smallest of the scores 1 - p_y.
    # Dense: p_true = (.9, .8, .7, .6, .5, .1) -> scores (.1, .2, .3, .4, .5, .9), qhat = .4: the
    # label is in the set for the first four items. Compressed: item 1 drops to .3 and item 5
    # rises to .95 -> scores (.1, .7, .3, .4, .5, .05): sorted .05 .1 .3 .4, qhat = .4; covered
    # are 0, 2, 3, 5. Newly uncovered: item 1; newly covered: item 5.
    def logits_with_true(p_true: list[float]) -> np.ndarray:
        p = np.array([[q, *([(1 - q) / 5] * 5)] for q in p_true])  # label 0 everywhere
        return np.log(p)

    labels = np.zeros(6, dtype=int)
    dense = logits_with_true([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    comp = logits_with_true([0.9, 0.3, 0.7, 0.6, 0.5, 0.95])
    sets = full_sample_sets(dense, labels, "lac", 0.5)
    assert sets[:, 0].tolist() == [True, True, True, True, False, False]
    m = pair_arrays(labels, dense, comp, alpha=0.5).metrics()
    assert (m["newly_uncovered"], m["newly_covered"]) == (1, 1)


def test_randomized_scores_are_refused():
    with pytest.raises(SurefastError, match="deterministic"):
        full_sample_sets(np.zeros((10, 6)), np.zeros(10, dtype=int), "aps_randomized")


# ---- naive reference on random logits ---------------------------------------------------------


def naive_sets(logits: np.ndarray, labels: np.ndarray, score_fn: str, alpha: float) -> list[set[int]]:
    """Textbook split conformal on all items: sorted true-label scores, the k-th smallest, {y: s <= q}."""
    n = len(labels)
    probs = [[math.exp(v - max(row)) for v in row] for row in logits.tolist()]
    probs = [[v / sum(row) for v in row] for row in probs]

    def score(p: list[float], y: int) -> float:
        if score_fn == "lac":
            return 1 - p[y]
        return sum(q for q in p if q >= p[y])  # APS (deterministic; random logits have no ties)

    cal = sorted(score(probs[i], int(labels[i])) for i in range(n))
    k = math.ceil((n + 1) * (1 - alpha))
    q = cal[k - 1] if k <= n else math.inf
    return [{y for y in range(len(p)) if score(p, y) <= q + 1e-12} for p in probs]


@pytest.mark.parametrize("score_fn", ["lac", "aps"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_a_naive_reference(score_fn, seed):
    rng = np.random.default_rng(seed)
    n = 200
    labels = rng.integers(0, 6, n)
    dense = rng.normal(size=(n, 6)) * 2
    dense[np.arange(n), labels] += 1.5
    comp = dense + rng.normal(size=(n, 6))
    items = pair_arrays(labels, dense, comp, score_fn=score_fn, alpha=0.1)
    m = items.metrics()

    b = c = 0
    for i in range(n):
        rd = max(range(6), key=lambda j: (dense[i, j], -j)) == labels[i]
        rc = max(range(6), key=lambda j: (comp[i, j], -j)) == labels[i]
        b += rd and not rc
        c += rc and not rd
    assert (m["flips_right_to_wrong"], m["flips_wrong_to_right"]) == (b, c)
    want_p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    assert m["mcnemar_p"] == pytest.approx(want_p, rel=1e-9)

    sd, sc = naive_sets(dense, labels, score_fn, 0.1), naive_sets(comp, labels, score_fn, 0.1)
    assert full_sample_sets(dense, labels, score_fn, 0.1).tolist() == [[y in s for y in range(6)] for s in sd]
    lost = sum(labels[i] in sd[i] and labels[i] not in sc[i] for i in range(n))
    gained = sum(labels[i] not in sd[i] and labels[i] in sc[i] for i in range(n))
    assert (m["newly_uncovered"], m["newly_covered"]) == (lost, gained)

    def p_true(x: np.ndarray, i: int) -> float:
        e = [math.exp(v - max(x[i])) for v in x[i]]
        return e[labels[i]] / sum(e)

    delta = [p_true(comp, i) - p_true(dense, i) for i in range(n)]
    assert m["p_true_shift_mean"] == pytest.approx(sum(delta) / n)
    assert m["p_true_shift_median"] == pytest.approx(float(np.median(delta)))
    top = top_changed(items, k=5)
    assert [t["delta"] for t in top] == pytest.approx(sorted(delta, key=lambda d: -abs(d))[:5])


def test_pooling_adds_counts_and_recomputes_mcnemar():
    labels = np.zeros(6, dtype=int)
    right, wrong = onehot_logits([0] * 6), onehot_logits([1] * 6)
    a = pair_arrays(labels[:3], right[:3], wrong[:3], strategy="base")  # b = 3
    b = pair_arrays(labels, right, np.vstack([wrong[:2], right[:4]]), strategy="shared")  # b = 2
    pooled = pool([a, b]).metrics()
    assert pooled["flips_right_to_wrong"] == 5 and pooled["n_paired"] == 9
    assert pooled["mcnemar_p"] == pytest.approx(0.0625)  # not a combination of 0.25 and 0.5
    assert a.metrics()["mcnemar_p"] == pytest.approx(0.25)


def test_histogram_has_fixed_bins():
    counts, edges = shift_histogram(np.array([-1.0, -0.01, 0.0, 0.01, 1.0]), n_bins=4)
    assert edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and counts.tolist() == [1, 1, 2, 1]


# ---- from the store -----------------------------------------------------------------------


def unit_rows(model, compression, task, strategy, uids, labels, logits, **extra):
    return [
        {
            "model": model,
            "compression": compression,
            "task": task,
            "strategy": strategy,
            "uid": u,
            "label": int(y),
            "logits": [float(v) for v in row],
            "group": extra.get("group", "astronomy"),
            "text": f"What is {u}?",
        }
        for u, y, row in zip(uids, labels, logits, strict=True)
    ]


def test_store_pairs_on_shared_uids_and_counts_the_unpaired(tmp_path):
    store = Store(tmp_path / "store")
    run = store.create_run({})
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(12, 6))
    labels = rng.integers(0, 6, 12)
    uids = [f"u{i}" for i in range(12)]
    for strategy in ("base", "shared"):
        run.write_items(
            f"m|dense|mmlu|{strategy}", unit_rows("m", "", "mmlu", strategy, uids[:10], labels[:10], dense[:10])
        )
        comp = dense + 0.3 * rng.normal(size=(12, 6))
        # the compressed unit lacks u0 and has u10, u11 the dense one lacks: 9 paired, 1 + 2 unpaired
        run.write_items(f"m|w4|mmlu|{strategy}", unit_rows("m", "w4", "mmlu", strategy, uids[1:], labels[1:], comp[1:]))
    run.write_items("x|w4|mmlu|base", unit_rows("x", "w4", "mmlu", "base", uids, labels, dense))  # no dense: left out
    pairs = paired_from_store(store, [run.run_id])
    assert set(pairs) == {PairKey("m", "w4", "mmlu", "base"), PairKey("m", "w4", "mmlu", "shared")}
    one = pairs[PairKey("m", "w4", "mmlu", "base")]
    assert one.n == 9 and one.n_unpaired == 3 and sorted(one.uid.tolist()) == uids[1:10]
    assert one.text[0] == "What is u1?" and one.group[0] == "astronomy"
    pooled = pool_strategies(pairs)
    assert list(pooled) == [PairKey("m", "w4", "mmlu", POOLED)]
    rows = paired_rows(pooled)
    by = {r["metric"]: r["value"] for r in rows}
    assert by["n_paired"] == 18 and by["n_unpaired"] == 6
    assert {k for k in rows[0] if k not in ("metric", "value")} == {"model", "compression", "task", "strategy"}
    assert rows[0]["strategy"] == POOLED and rows[0]["compression"] == "w4"


def test_items_of_varying_option_counts_are_padded(tmp_path):
    store = Store(tmp_path / "store")
    run = store.create_run({})
    logits = [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    comp = [[0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    run.write_items("m|dense|arc|base", unit_rows("m", "", "arc", "base", ["a", "b", "c"], [0, 1, 0], logits))
    run.write_items("m|q|arc|base", unit_rows("m", "q", "arc", "base", ["a", "b", "c"], [0, 1, 0], comp))
    items = pairs_from_items(store.items([run.run_id]))[PairKey("m", "q", "arc", "base")]
    m = items.metrics()
    assert (m["flips_right_to_wrong"], m["flips_wrong_to_right"], m["n_paired"]) == (1, 0, 3)
    p = math.exp(2) / (math.exp(2) + 2)  # the padded options have probability 0
    assert items.p_true_dense[0] == pytest.approx(p) and items.p_true_comp[2] == pytest.approx(math.e / (math.e + 3))


def test_no_items_is_empty_not_an_error(tmp_path):
    store = Store(tmp_path / "store")
    run = store.create_run({})
    run.write_part("m|dense|mmlu|base", [])
    assert paired_from_store(store, [run.run_id]) == {}
    assert pairs_from_items(ITEM_SCHEMA.empty_table()) == {}
    assert paired_rows({}) == []


def test_no_shared_uids_gives_an_empty_pair():
    items = pair_arrays(np.zeros(0, dtype=int), np.zeros((0, 6)), np.zeros((0, 6)), n_unpaired=4)
    m = items.metrics()
    assert m["n_paired"] == 0 and m["n_unpaired"] == 4 and m["mcnemar_p"] == 1.0 and math.isnan(m["flip_rate"])
    assert top_changed(items) == []
