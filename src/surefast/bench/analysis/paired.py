"""Paired per-item changes between a compressed model and its dense baseline on the same items.

A cell's accuracy can hold while many answers change: some items go right -> wrong, as many go
wrong -> right. Pairing the two models item by item (same uid, same task and prompt strategy)
shows that churn and tests it:

* **Flips.** An answer is the argmax of the option logits (numpy's tie rule: the lowest index);
  ``b`` items go right -> wrong, ``c`` wrong -> right. McNemar's exact test (McNemar 1947; the
  exact conditional form, e.g. Fagerland, Lydersen & Laake, BMC Med. Res. Methodol. 2013) asks
  whether ``b`` and ``c`` differ more than chance: under the null each discordant pair goes
  either way with probability 1/2, so ``p = min(1, 2 * P[Bin(b + c, 1/2) <= min(b, c)])``
  (two-sided), and ``p = 1`` when no answer flipped. We also report the flip rate
  ``(b + c) / n`` and the net change ``(c - b) / n`` (= the accuracy difference on the pairs).
* **Newly outside their prediction set.** Each model's split-conformal sets are calibrated on
  *all* ``N`` paired items of the unit (threshold = the ``ceil((N + 1)(1 - alpha))``-th smallest
  true-label score, :func:`~surefast.conformal.calibrate.conformal_quantile`) and applied to the
  same items. This full-sample set is a diagnostic of which items a model's sets stop covering,
  not a held-out guarantee (the coverage statistics with one are the stored split metrics).
  ``newly_uncovered`` counts items whose true label is in the dense set but not the compressed
  one, ``newly_covered`` the reverse. Only deterministic scores are used: a randomized score's
  coin flips would make items change sets by chance.
* **The true option's probability.** ``delta_i = p_comp(y_i) - p_dense(y_i)`` from a float64
  softmax of the stored logits; its mean, median and histogram, and the items with the largest
  ``|delta|``, listed with their text.

Units are pooled over prompt strategies (:func:`pool`) by concatenating their pairs: counts add
up, McNemar is recomputed over the pooled pairs, and each unit keeps the sets it was calibrated
with. Items whose logits have different lengths within a unit (imported lm-eval tasks with a
varying number of choices) are padded with ``-inf`` logits: probability 0, never the true label,
so they change no answer, no true-label score and no coverage.

The core takes arrays; :func:`pairs_from_items` builds the pairs from the store's item table
(:data:`~surefast.bench.store.ITEM_SCHEMA`) and :func:`paired_from_store` reads it from a store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from surefast.conformal.calibrate import conformal_quantile, prediction_sets
from surefast.conformal.inputs import check_alphas, softmax  # float64, max-shifted: -inf (padding) -> 0
from surefast.conformal.mondrian import MondrianConfig
from surefast.conformal.scores import at_labels, get_score, score_array, tie_blocks
from surefast.errors import SurefastError

if TYPE_CHECKING:
    import pyarrow as pa

    from surefast.bench.store import Store

POOLED = "pooled"  # the strategy of rows pooled over prompt strategies
METRICS = (
    "n_paired",
    "n_unpaired",
    "flips_right_to_wrong",
    "flips_wrong_to_right",
    "flip_rate",
    "net_change",
    "mcnemar_p",
    "newly_uncovered",
    "newly_covered",
    "p_true_shift_mean",
    "p_true_shift_median",
)
_EXACT_UP_TO = 5000  # discordant pairs up to which the binomial tail is summed in exact integers


class PairKey(NamedTuple):
    model: str
    compression: str  # never "" here: the dense model is the baseline of every pair
    task: str
    strategy: str  # POOLED for pairs pooled over strategies


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 * P[Bin(b + c, 1/2) <= min(b, c)])``, 1 if ``b + c = 0``.

    Summed in exact integers up to :data:`_EXACT_UP_TO` discordant pairs, above that in log space
    (``lgamma``; relative error ~1e-12, far below what a decision needs).
    """
    if b < 0 or c < 0:
        raise SurefastError(f"flip counts must be >= 0, got b={b}, c={c}")
    n, k = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0
    if n <= _EXACT_UP_TO:
        tail, term = 0, 1  # term = C(n, i)
        for i in range(k + 1):
            tail += term
            term = term * (n - i) // (i + 1)
        return min(1.0, 2 * tail / 2**n)  # int / int: correctly rounded, however large
    log_terms = math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in range(k + 1)])
    top = float(log_terms.max())
    log_tail = top + math.log(float(np.exp(log_terms - top).sum())) - n * math.log(2.0)
    return min(1.0, 2.0 * math.exp(log_tail))


def full_sample_sets(logits: np.ndarray, labels: np.ndarray, score_fn: str = "lac", alpha: float = 0.1) -> np.ndarray:
    """Boolean sets ``[N, K]`` calibrated on all ``N`` items and applied to them (module docstring).

    With ``N`` below :func:`~surefast.conformal.calibrate.min_calibration_size` the threshold is
    infinite and every set full (as the conformal module defines it).
    """
    config = get_score(score_fn)
    if isinstance(config, MondrianConfig):  # "lac@subject": these sets are calibrated once, on all items
        raise SurefastError(
            f"the paired diagnostics calibrate one threshold on all items, not per group as {config.name} does",
            "use lac, aps or raps",
        )
    if config.randomized:
        raise SurefastError(
            f"the paired diagnostics need a deterministic score, not {config.name}",
            "use lac, aps or raps",
        )
    (a,) = check_alphas(alpha)
    scores = score_array(config, tie_blocks(softmax(logits)))  # [N, K]
    qhat = conformal_quantile(at_labels(scores, labels), a)  # the ceil((N+1)(1-alpha))-th smallest
    return prediction_sets(scores, qhat)


@dataclass(frozen=True)
class PairedItems:
    """The paired items of one or more units, one entry per item (``[N]`` each).

    ``right_*``: argmax answer equals the label; ``covered_*``: the label is in the model's
    full-sample set; ``p_true_*``: softmax probability of the label; ``answer_*``: argmax index.
    ``n_unpaired``: items of the units that only one model had (or whose labels disagreed).
    """

    uid: np.ndarray
    task: np.ndarray
    strategy: np.ndarray
    group: np.ndarray
    text: np.ndarray
    label: np.ndarray
    answer_dense: np.ndarray
    answer_comp: np.ndarray
    p_true_dense: np.ndarray
    p_true_comp: np.ndarray
    covered_dense: np.ndarray
    covered_comp: np.ndarray
    n_unpaired: int = 0

    @property
    def n(self) -> int:
        return int(self.label.shape[0])

    @property
    def right_dense(self) -> np.ndarray:
        return np.asarray(self.answer_dense == self.label)

    @property
    def right_comp(self) -> np.ndarray:
        return np.asarray(self.answer_comp == self.label)

    @property
    def delta(self) -> np.ndarray:
        """``p_comp(y) - p_dense(y)`` per item."""
        return np.asarray(self.p_true_comp - self.p_true_dense)

    def metrics(self) -> dict[str, float]:
        """Every metric of :data:`METRICS` (rates and shifts NaN when no item is paired)."""
        b = int((self.right_dense & ~self.right_comp).sum())
        c = int((~self.right_dense & self.right_comp).sum())
        n = self.n
        delta = self.delta
        nan = float("nan")
        return {
            "n_paired": float(n),
            "n_unpaired": float(self.n_unpaired),
            "flips_right_to_wrong": float(b),
            "flips_wrong_to_right": float(c),
            "flip_rate": (b + c) / n if n else nan,
            "net_change": (c - b) / n if n else nan,
            "mcnemar_p": mcnemar_exact(b, c),
            "newly_uncovered": float((self.covered_dense & ~self.covered_comp).sum()),
            "newly_covered": float((~self.covered_dense & self.covered_comp).sum()),
            "p_true_shift_mean": float(delta.mean()) if n else nan,
            "p_true_shift_median": float(np.median(delta)) if n else nan,
        }


def pair_arrays(
    labels: np.ndarray,
    dense_logits: np.ndarray,
    comp_logits: np.ndarray,
    *,
    score_fn: str = "lac",
    alpha: float = 0.1,
    uid: Sequence[str] | np.ndarray | None = None,
    task: str = "",
    strategy: str = "",
    group: Sequence[str] | np.ndarray | None = None,
    text: Sequence[str] | np.ndarray | None = None,
    n_unpaired: int = 0,
) -> PairedItems:
    """The paired items of one unit from aligned arrays: ``labels [N]``, both logits ``[N, K]``.

    Each model's sets are calibrated on these ``N`` items (:func:`full_sample_sets`).
    """
    y = np.asarray(labels, dtype=np.int64)
    dense = np.asarray(dense_logits, dtype=np.float64)
    comp = np.asarray(comp_logits, dtype=np.float64)
    n = y.shape[0]
    if dense.ndim != 2 or dense.shape != comp.shape or dense.shape[0] != n:
        raise SurefastError(f"paired logits must both be [N, K] for {n} labels, got {dense.shape} and {comp.shape}")
    if n and (y.min() < 0 or y.max() >= dense.shape[1]):
        raise SurefastError(f"labels must lie in 0..{dense.shape[1] - 1}")
    for x in (dense, comp):  # -inf is padding; NaN, +inf or a row of padding only is a broken unit
        if n and (np.isnan(x).any() or not np.isfinite(x.max(axis=1)).all()):
            raise SurefastError("paired logits must be finite (or -inf for padding) with one finite entry per row")
    rows = np.arange(n)
    p_dense, p_comp = softmax(dense), softmax(comp)
    if n:
        cov_dense = at_labels(full_sample_sets(dense, y, score_fn, alpha), y)
        cov_comp = at_labels(full_sample_sets(comp, y, score_fn, alpha), y)
    else:
        cov_dense = cov_comp = np.zeros(0, dtype=bool)

    def strings(values: Sequence[str] | np.ndarray | None, fill: str) -> np.ndarray:
        return np.full(n, fill, dtype=object) if values is None else np.asarray(values, dtype=object)

    return PairedItems(
        uid=np.array([str(i) for i in range(n)], dtype=object) if uid is None else strings(uid, ""),
        task=strings(None, task),
        strategy=strings(None, strategy),
        group=strings(group, ""),
        text=strings(text, ""),
        label=y,
        answer_dense=np.argmax(dense, axis=1),
        answer_comp=np.argmax(comp, axis=1),
        p_true_dense=p_dense[rows, y],
        p_true_comp=p_comp[rows, y],
        covered_dense=np.asarray(cov_dense, dtype=bool),
        covered_comp=np.asarray(cov_comp, dtype=bool),
        n_unpaired=int(n_unpaired),
    )


def pool(parts: Iterable[PairedItems]) -> PairedItems:
    """Pairs of several units as one (concatenated; counts add, McNemar is then over all pairs)."""
    items = list(parts)
    if not items:
        raise SurefastError("nothing to pool")
    names = [f for f in PairedItems.__dataclass_fields__ if f != "n_unpaired"]
    joined = {f: np.concatenate([getattr(p, f) for p in items]) for f in names}
    return PairedItems(**joined, n_unpaired=sum(p.n_unpaired for p in items))


def pool_strategies(pairs: Mapping[PairKey, PairedItems]) -> dict[PairKey, PairedItems]:
    """``(model, compression, task, POOLED)`` -> the pairs of all its strategies."""
    by: dict[PairKey, list[PairedItems]] = defaultdict(list)
    for key, items in pairs.items():
        by[key._replace(strategy=POOLED)].append(items)
    return {key: pool(parts) for key, parts in sorted(by.items())}


def paired_rows(pairs: Mapping[PairKey, PairedItems]) -> list[dict[str, Any]]:
    """Tidy rows ``{model, compression, task, strategy, metric, value}``, one per metric of each pair."""
    return [
        {**key._asdict(), "metric": metric, "value": value}
        for key, items in sorted(pairs.items())
        for metric, value in items.metrics().items()
    ]


def letter(index: int) -> str:
    """Option letter of a 0-based index (A, B, ...; beyond Z its number)."""
    return chr(ord("A") + index) if 0 <= index < 26 else str(index)


def top_changed(items: PairedItems, k: int = 10, *, distinct: bool = True) -> list[dict[str, Any]]:
    """The ``k`` items with the largest ``|delta|`` (ties to 1e-12: first stored first), as dicts with uid,
    task, strategy, group, text, the label's and both answers' letters and ``p_true`` before/after.

    ``distinct``: an item scored under several strategies is listed once (its largest change).
    Items whose probability did not change are never listed.
    """
    # rounded: equal changes computed from different rows differ in the last bits
    change = np.round(np.abs(items.delta), 12)
    order = np.argsort(-change, kind="stable")
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for i in order.tolist():
        if len(out) >= k or change[i] == 0:
            break
        ident = (str(items.task[i]), str(items.uid[i]))
        if distinct and ident in seen:
            continue
        seen.add(ident)
        out.append(
            {
                "uid": str(items.uid[i]),
                "task": str(items.task[i]),
                "strategy": str(items.strategy[i]),
                "group": str(items.group[i]),
                "text": str(items.text[i]),
                "label": letter(int(items.label[i])),
                "answer_dense": letter(int(items.answer_dense[i])),
                "answer_compressed": letter(int(items.answer_comp[i])),
                "p_true_dense": float(items.p_true_dense[i]),
                "p_true_compressed": float(items.p_true_comp[i]),
                "delta": float(items.delta[i]),
            }
        )
    return out


def shift_histogram(delta: np.ndarray, n_bins: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[n_bins]`` and edges ``[n_bins + 1]`` of ``delta`` on the fixed range [-1, 1]
    (fixed, so histograms of different cells share their bins; an odd count centres a bin on 0,
    where unchanged items fall)."""
    edges = np.linspace(-1.0, 1.0, n_bins + 1)
    counts, _ = np.histogram(np.clip(np.asarray(delta, dtype=np.float64), -1.0, 1.0), bins=edges)
    return counts, edges


# ---- from the store's item table -----------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    uid: list[str]
    label: np.ndarray  # [N]
    logits: list[np.ndarray]  # N rows of K_i logits each
    group: list[str]
    text: list[str]


def _units(table: pa.Table) -> dict[tuple[str, str, str, str], _Unit]:
    """Items per (model, compression, task, strategy); a uid stored twice (two runs) counts once."""
    cols = {
        c: table.column(c).to_pylist() for c in ("model", "compression", "task", "strategy", "uid", "group", "text")
    }
    labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    logits = table.column("logits").combine_chunks()
    offsets = np.asarray(logits.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(logits.values.to_numpy(zero_copy_only=False), dtype=np.float64)
    index: dict[tuple[str, str, str, str], dict[str, int]] = defaultdict(dict)
    for i, key in enumerate(zip(cols["model"], cols["compression"], cols["task"], cols["strategy"], strict=True)):
        index[(key[0], key[1] or "", key[2], key[3])].setdefault(cols["uid"][i], i)
    out = {}
    for key, rows in index.items():
        at = list(rows.values())
        out[key] = _Unit(
            uid=list(rows),
            label=labels[at],
            logits=[values[offsets[i] : offsets[i + 1]] for i in at],
            group=[cols["group"][i] or "" for i in at],
            text=[cols["text"][i] or "" for i in at],
        )
    return out


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of possibly different lengths as ``[N, K_max]``, padded with ``-inf``."""
    k = max((r.shape[0] for r in rows), default=1)
    out = np.full((len(rows), k), -np.inf)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def pairs_from_items(table: pa.Table, *, score_fn: str = "lac", alpha: float = 0.1) -> dict[PairKey, PairedItems]:
    """Pair every compressed unit of an item table with the dense unit of its (model, task, strategy).

    Items pair by uid when both models have them with the same label and option count (the
    others count in ``n_unpaired``); compressed units without a dense unit are left out. Empty
    for an empty table (runs stored before items were kept).
    """
    units = _units(table) if table.num_rows else {}
    out: dict[PairKey, PairedItems] = {}
    for (model, compression, task, strategy), comp in sorted(units.items()):
        dense = units.get((model, "", task, strategy))
        if not compression or dense is None:
            continue
        d_at = {u: i for i, u in enumerate(dense.uid)}
        pairs = [
            (i, d_at[u])
            for i, u in enumerate(comp.uid)
            if u in d_at
            and comp.label[i] == dense.label[d_at[u]]
            and comp.logits[i].shape == dense.logits[d_at[u]].shape
        ]
        ci = [i for i, _ in pairs]
        di = [j for _, j in pairs]
        unpaired = len(comp.uid) + len(dense.uid) - 2 * len(pairs)
        out[PairKey(model, compression, task, strategy)] = pair_arrays(
            comp.label[ci],
            _padded([dense.logits[j] for j in di]),
            _padded([comp.logits[i] for i in ci]),
            score_fn=score_fn,
            alpha=alpha,
            uid=[comp.uid[i] for i in ci],
            task=task,
            strategy=strategy,
            group=[comp.group[i] for i in ci],
            text=[comp.text[i] for i in ci],
            n_unpaired=unpaired,
        )
    return out


def paired_from_store(
    store: Store, run_ids: Sequence[str] | None = None, *, score_fn: str = "lac", alpha: float = 0.1
) -> dict[PairKey, PairedItems]:
    """:func:`pairs_from_items` of the items stored for ``run_ids`` (None: every run)."""
    return pairs_from_items(store.items(run_ids), score_fn=score_fn, alpha=alpha)
