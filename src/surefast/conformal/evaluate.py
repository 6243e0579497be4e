"""The conformal benchmark of one set of scored items: every metric over random splits, as a tidy table.

:func:`evaluate_splits` checks the inputs once, runs the split protocol of
:mod:`surefast.conformal.splits` and, with ``n_boot > 0``, the item bootstrap of
:mod:`surefast.conformal.bootstrap`; :func:`evaluate` returns the same numbers as tidy rows and
:func:`summarize` condenses rows to means and intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from surefast.conformal.bootstrap import bootstrap_metrics
from surefast.conformal.calibrate import min_calibration_size
from surefast.conformal.conditional import item_groupings
from surefast.conformal.inputs import check_alphas, check_labels, check_probs
from surefast.conformal.mondrian import mondrian_partitions
from surefast.conformal.scores import ScoreConfig, get_score
from surefast.conformal.splits import METRICS, is_scalar, metric_names, split_indices, split_metrics, split_uniforms
from surefast.errors import SurefastError

SPLITS, BOOTSTRAP = "splits", "bootstrap"  # the two kinds of rows (the store's `resampling` column)


@dataclass(frozen=True)
class SplitResults:
    """Every metric of every split: ``values[score_fn, alpha, split, metric]``, ``[S, A, R, M]``.

    ``boot`` ``[S, A, B, M]`` holds, per item-bootstrap replicate, the mean over the same splits
    of the resampled items (None without a bootstrap).
    """

    score_fns: tuple[str, ...]
    alphas: tuple[float, ...]
    values: np.ndarray
    metrics: tuple[str, ...] = METRICS
    boot: np.ndarray | None = None

    def get(self, score_fn: str, alpha: float, metric: str, resampling: str = SPLITS) -> np.ndarray:
        """The ``[R]`` per-split values of one metric (``[B]`` per-replicate ones for ``"bootstrap"``)."""
        values = self.values if resampling == SPLITS else self.boot
        if values is None:
            raise SurefastError("these results have no bootstrap replicates", "evaluate with n_boot > 0")
        return values[self.score_fns.index(score_fn), self.alphas.index(alpha), :, self.metrics.index(metric)]

    def rows(self) -> list[dict[str, Any]]:
        """The tidy long table: one dict ``{score_fn, alpha, split, metric, value, resampling}`` per value.

        ``split`` indexes the random split for ``resampling == "splits"`` and the bootstrap
        replicate for ``"bootstrap"``.
        """
        out = self._rows(self.values, SPLITS, self.metrics)
        if self.boot is None:
            return out
        # Replicates of the scalar metrics only: intervals are drawn for those, and the
        # histogram and per-group metrics would multiply the stored rows.
        scalar = tuple(m for m in self.metrics if is_scalar(m))
        index = [self.metrics.index(m) for m in scalar]
        return out + self._rows(self.boot[..., index], BOOTSTRAP, scalar)

    def _rows(self, values: np.ndarray, resampling: str, metrics: tuple[str, ...]) -> list[dict[str, Any]]:
        n = values.shape[2]
        keys = ((fn, al, sp, me) for fn in self.score_fns for al in self.alphas for sp in range(n) for me in metrics)
        return [
            {"score_fn": fn, "alpha": al, "split": sp, "metric": me, "value": v, "resampling": resampling}
            for (fn, al, sp, me), v in zip(keys, values.reshape(-1).tolist(), strict=True)
        ]


def evaluate_splits(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    score_fns: Sequence[str | ScoreConfig] = ("lac", "aps"),
    alphas: float | Iterable[float] = (0.1,),
    n_splits: int = 100,
    cal_fraction: float = 0.5,
    seed: int = 0,
    from_logits: bool = False,
    fill_empty: bool = False,
    n_boot: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> SplitResults:
    """Array form of :func:`evaluate` (same arguments); the table is ``.rows()`` of the result."""
    p = check_probs(probs, from_logits=from_logits)  # [N, K], rows summing to 1
    n, k = p.shape  # K >= 2 (check_probs)
    y = check_labels(labels, n, k)
    alphas_ = check_alphas(alphas)
    configs = [get_score(s) for s in score_fns]
    names = tuple(c.name for c in configs)
    if not names or len(set(names)) != len(names):
        raise SurefastError(f"score_fns must be non-empty and distinct, got {list(names)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise SurefastError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    cal, test = split_indices(n, n_splits, cal_fraction, seed)
    try:
        groupings = item_groupings(y, k, groups, cal_fraction)
    except ValueError as exc:
        raise SurefastError(str(exc)) from None
    partitions = mondrian_partitions(configs, groups, cal_fraction)  # a Mondrian score's grouping, checked now
    n_cal = cal.shape[1]
    for a in alphas_:
        if n_cal < min_calibration_size(a):
            raise SurefastError(
                f"the calibration set is too small for alpha={a}: {n_cal} items, need at least "
                f"{min_calibration_size(a)} (with fewer, the ceil((n+1)(1-alpha))-th smallest score does not "
                "exist, the threshold is infinite and every set is full)",
                hint="use more items, a larger cal_fraction or a larger alpha",
            )
    u = split_uniforms(n, n_splits, seed) if any(c.randomized for c in configs) else None  # [R, N] by position
    u_cal = None if u is None else np.take_along_axis(u, cal, axis=1)
    u_test = None if u is None else np.take_along_axis(u, test, axis=1)
    values = split_metrics(
        p,
        y,
        configs,
        alphas_,
        cal,
        test,
        u_cal,
        u_test,
        fill_empty=fill_empty,
        groupings=groupings,
        partitions=partitions,
    )
    boot = None
    if n_boot:
        boot = bootstrap_metrics(
            p,
            y,
            configs,
            alphas_,
            cal,
            test,
            u,
            n_boot=int(n_boot),
            seed=seed,
            fill_empty=fill_empty,
            groupings=groupings,
            partitions=partitions,
        )
    metrics = metric_names(k, [(g.name, g.labels) for g in groupings])
    return SplitResults(score_fns=names, alphas=alphas_, values=values, metrics=metrics, boot=boot)


def evaluate(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    score_fns: Sequence[str | ScoreConfig] = ("lac", "aps"),
    alphas: float | Iterable[float] = (0.1,),
    n_splits: int = 100,
    cal_fraction: float = 0.5,
    seed: int = 0,
    from_logits: bool = False,
    fill_empty: bool = False,
    n_boot: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """Split-conformal metrics over ``n_splits`` random calibration/test splits, as a tidy table.

    ``probs`` ``[N, K]`` are softmax probabilities over the options (A-F for surefast's tasks,
    any ``K >= 2`` for imported ones; or logits with ``from_logits=True``), ``labels`` ``[N]``
    the right option indices. ``groups`` maps a grouping name to one label per item (e.g.
    ``{"subject": [...]}``) for conditional coverage; the true answer's letter (``position``) is
    always a grouping (:mod:`surefast.conformal.conditional`). ``score_fns`` are
    registry names (:data:`~surefast.conformal.scores.SCORES`), ``"<name>@<grouping>"`` for a score
    calibrated per group (:mod:`surefast.conformal.mondrian`: ``"lac@subject"`` needs
    ``groups={"subject": ...}``, ``"aps@position"`` is label-conditional) or score configs; all ``alphas``
    are done in one pass on the same splits. Returns one dict per (score_fn, alpha, split,
    metric) with keys ``score_fn, alpha, split, metric, value, resampling`` (``"splits"``);
    with ``n_boot > 0`` also one per (score_fn, alpha, replicate, scalar metric) with
    ``resampling`` ``"bootstrap"`` and the replicate in ``split`` (:mod:`surefast.conformal.bootstrap`: the
    rows whose spread is the item-sampling uncertainty). Metrics are listed in
    :data:`METRICS` (see docs/conformal.md), NaN where undefined (e.g. ``coverage_at_size_s``
    when no test item has a set of size ``s``). ``fill_empty=True`` puts the top option into
    empty sets, as the reference code does. Deterministic given ``seed``.

    Raises SurefastError for malformed inputs and when the calibration split is smaller than
    :func:`~surefast.conformal.calibrate.min_calibration_size` for some alpha (the threshold would
    be infinite and every set full).
    """
    return evaluate_splits(
        probs,
        labels,
        score_fns=score_fns,
        alphas=alphas,
        n_splits=n_splits,
        cal_fraction=cal_fraction,
        seed=seed,
        from_logits=from_logits,
        fill_empty=fill_empty,
        n_boot=n_boot,
        groups=groups,
    ).rows()


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and a 95% interval of each metric over splits (or over bootstrap replicates).

    Groups by every key except ``split`` and ``value`` (so columns a caller added, e.g. model or
    task, are kept, and ``resampling`` keeps split rows and bootstrap rows apart), in order of
    first appearance. Per group: ``mean``, ``std`` (ddof=1), ``ci_low``/``ci_high`` = the
    2.5th/97.5th percentiles of the values (numpy's linear interpolation), and ``n_splits``
    (values that are defined; NaNs are skipped).

    For split rows the interval is the *percentile range over splits*: how far one random split's
    value can move with the items fixed. It is not a confidence interval: splits reuse the same
    items, so ``std / sqrt(R)`` would shrink to 0 as ``R`` grows, and the spread itself matches
    the item-sampling uncertainty only at a 50/50 split. For bootstrap rows (``n_boot > 0``) the
    interval is the percentile bootstrap interval of the reported value, which covers both.
    """
    groups: dict[tuple[tuple[str, Any], ...], list[float]] = {}
    for row in rows:
        key = tuple((k, v) for k, v in row.items() if k not in ("split", "value"))
        groups.setdefault(key, []).append(row["value"])
    out = []
    for key, vals in groups.items():
        v = np.asarray(vals, dtype=np.float64)
        ok = v[np.isfinite(v)]
        nan = float("nan")
        stats = {
            "mean": float(ok.mean()) if ok.size else nan,
            "std": float(ok.std(ddof=1)) if ok.size > 1 else nan,
            "ci_low": float(np.percentile(ok, 2.5)) if ok.size else nan,
            "ci_high": float(np.percentile(ok, 97.5)) if ok.size else nan,
        }
        out.append({**dict(key), **stats, "n_splits": int(ok.size)})
    return out
