"""Mondrian (group-conditional) split conformal: one threshold per group instead of one for all.

Split conformal guarantees coverage ``>= 1 - alpha`` over all items, not within a group
(:mod:`surefast.conformal.conditional` measures how far a group falls short). Mondrian conformal
prediction (Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005, ch. 4;
Vovk et al., "Mondrian confidence machine", 2003) buys the guarantee per group by calibrating
each group on its own items. The score spec ``"<base>@<grouping>"`` (``"lac@subject"``,
``"aps@position"``) names a :class:`MondrianConfig`; its scores are the base score's, only the
calibration changes. Two kinds of groups:

* a user grouping ``by`` (``groups={"subject": [...]}`` of :func:`~surefast.conformal.evaluate`):
  per split, alpha and group ``g``, ``qhat_g`` is the ``k_g``-th smallest calibration score among
  the calibration items of group ``g``, ``k_g = ceil((n_g + 1)(1 - alpha))`` (``+inf`` when
  ``k_g > n_g``: a group with fewer than ``ceil(1/alpha - 1)`` calibration items gets full sets).
  A test item is compared with its own group's threshold, so ``P(y in C(x) | group g) >= 1 - alpha``
  for every group.
* ``by == "position"``: label-conditional conformal (Vovk 2005; Sadinle, Lei & Wasserman 2019,
  "class-specific coverage"). ``qhat_y`` comes from the calibration items whose true label is
  ``y``, and the set is ``{y : s(x, y) <= qhat_y}``: the threshold depends on the *candidate*
  label, never on the unknown true one, and coverage holds for each true-answer letter.

A user grouping with a single label (which :func:`~surefast.conformal.conditional.item_groupings`
leaves out of the per-group metrics) is one group: its threshold is the ordinary one, and the
Mondrian score equals its base score. ``position`` is reserved for the label-conditional kind.

Pure functions over leading dims ``[...]`` (splits, bootstrap replicates times splits); the
thresholds are per group ``[..., A, G]``, the sets ``[R, A, T, K]`` as for the marginal scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from surefast.conformal.calibrate import prediction_sets, quantile_rank, score_order
from surefast.conformal.conditional import Grouping, make_grouping
from surefast.conformal.inputs import check_alphas
from surefast.conformal.metrics import bin_totals
from surefast.conformal.scores import SCORES, SPEC_FORMS, ScoreArray, ScoreConfig, TieBlocks
from surefast.errors import SurefastError

POSITION = "position"  # the label-conditional kind: groups are the candidate labels
SPEC_HINT = "e.g. lac@subject (one threshold per subject) or aps@position (one per answer letter)"


@dataclass(frozen=True)
class MondrianConfig(ScoreConfig):
    """The score ``base`` calibrated per group of ``by`` (a user grouping, or ``"position"``)."""

    base: ScoreConfig
    by: str
    randomized: bool = field(init=False, repr=False, compare=False)  # the base's

    def __post_init__(self) -> None:
        if not isinstance(self.base, ScoreConfig) or isinstance(self.base, MondrianConfig):
            raise SurefastError(f"a Mondrian score needs a plain base score, got {self.base!r}", SPEC_HINT)
        if not isinstance(self.by, str) or not self.by.strip() or "@" in self.by:
            raise SurefastError(f"a Mondrian score needs a grouping name after '@', got {self.by!r}", SPEC_HINT)
        object.__setattr__(self, "randomized", self.base.randomized)

    @property
    def name(self) -> str:
        return f"{self.base.name}@{self.by}"

    def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
        return self.base.scores(blocks, u)


def mondrian_score(spec: str) -> MondrianConfig:
    """``"<base>@<grouping>"`` -> :class:`MondrianConfig`; an unknown base gets the registry's suggestion."""
    base, _, by = spec.partition("@")
    if not base or not by.strip() or "@" in by:
        raise SurefastError(f"malformed score {spec!r}: expected <score>@<grouping>", SPEC_HINT)
    return MondrianConfig(SCORES.get(base), by)


SPEC_FORMS["@"] = mondrian_score  # get_score("lac@subject")


def mondrian_partitions(
    configs: Sequence[ScoreConfig], groups: Mapping[str, Sequence[str]] | None, cal_fraction: float
) -> tuple[Grouping, ...]:
    """The user groupings the Mondrian scores among ``configs`` calibrate by (single-label ones too).

    Raises SurefastError naming the score and the groupings on offer when one is not in ``groups``;
    call it before computing anything. ``groups`` must already have one label per item.
    """
    given = dict(groups or {})
    out: dict[str, Grouping] = {}
    for config in configs:
        if not isinstance(config, MondrianConfig) or config.by == POSITION or config.by in out:
            continue
        if config.by not in given:
            raise SurefastError(
                f"score {config.name!r} needs groups={{{config.by!r}: [...]}}; "
                f"this evaluation has: {', '.join([POSITION, *given])}",
                f"pass one {config.by} label per item, or calibrate by one of those",
            )
        out[config.by] = make_grouping(config.by, given[config.by], cal_fraction)
    return tuple(out.values())


@overload
def grouped_quantile(
    scores: ScoreArray, codes: np.ndarray, n_groups: int, alpha: float | Iterable[float]
) -> ScoreArray: ...
@overload
def grouped_quantile(
    scores: np.ndarray, codes: np.ndarray, n_groups: int, alpha: float | Iterable[float]
) -> np.ndarray: ...
def grouped_quantile(
    scores: np.ndarray | ScoreArray, codes: np.ndarray, n_groups: int, alpha: float | Iterable[float]
) -> np.ndarray | ScoreArray:
    """Per group, the conformal threshold of its calibration scores: ``[..., n]`` -> ``[..., A, G]``.

    ``codes`` ``[..., n]`` (broadcast to the scores) give each calibration score's group in
    ``0..n_groups-1``. Group ``g`` of row ``[...]`` gets the ``k_g``-th smallest of its own ``n_g``
    scores, ``k_g = ceil((n_g + 1)(1 - alpha))`` (:func:`~surefast.conformal.calibrate.quantile_rank`),
    ``+inf`` where ``k_g > n_g`` (an empty group too). ``[..., G]`` for one alpha. Ordered as
    :func:`~surefast.conformal.calibrate.conformal_quantile` orders scores (by the exact key of a
    :class:`~surefast.conformal.scores.ScoreArray`), after the group: one sort per row puts every
    group's scores in one sorted run, and ``k_g`` indexes into that run.
    """
    key = scores.key if isinstance(scores, ScoreArray) else np.asarray(scores, dtype=np.float64)
    n = key.shape[-1] if key.ndim else 0
    if n == 0:
        raise SurefastError("the calibration set is empty: need at least one calibration score")
    c = np.broadcast_to(np.asarray(codes), key.shape)
    if c.dtype.kind not in "iu" or c.min() < 0 or c.max() >= n_groups:
        raise SurefastError(f"group codes must be integers in 0..{n_groups - 1}")
    single = not isinstance(alpha, Iterable)
    alphas = check_alphas(alpha)
    lead = key.shape[:-1]
    order = score_order(scores, first=c)  # [..., n]: by group, then by exact score
    count = bin_totals(c, n_groups)  # [..., G]: n_g per row
    start = np.cumsum(count, axis=-1) - count  # [..., G]: where group g's run begins
    table = np.array([[quantile_rank(m, a) for m in range(n + 1)] for a in alphas])  # [A, n + 1]
    rank = np.moveaxis(table[:, count], 0, -2)  # [..., A, G]: k_g
    exists = rank <= count[..., None, :]  # [..., A, G]
    at = np.where(exists, start[..., None, :] + rank - 1, 0).reshape(*lead, -1)  # [..., A * G]
    picked = np.take_along_axis(order, at, axis=-1)  # [..., A * G]: item index of qhat_g

    def gather(a: np.ndarray) -> np.ndarray:
        got = np.take_along_axis(a, picked, axis=-1).reshape(*lead, len(alphas), n_groups)
        return np.where(exists, got, np.inf)  # [..., A, G]

    out = scores.map(gather) if isinstance(scores, ScoreArray) else gather(key)
    return out[..., 0, :] if single else out


def mondrian_sets(
    config: MondrianConfig,
    cal_scores: ScoreArray,
    test_scores: ScoreArray,
    alphas: tuple[float, ...],
    y: np.ndarray,
    cal: np.ndarray,
    test: np.ndarray,
    partitions: Sequence[Grouping] = (),
) -> np.ndarray:
    """The Mondrian sets ``[R, A, T, K]`` of one split batch (as :func:`~surefast.conformal.splits.split_metrics`).

    ``cal_scores`` ``[R, n_cal]`` are the true-label calibration scores, ``test_scores``
    ``[R, T, K]`` every label's test scores, ``y`` ``[N]`` the labels and ``cal``/``test`` the item
    indices of the splits. ``partitions`` hold the user grouping ``config.by`` (see
    :func:`mondrian_partitions`); ``"position"`` needs none.
    """
    tested = test_scores.map(lambda a: a[:, None])  # [R, 1, T, K]
    if config.by == POSITION:  # one threshold per candidate label, from the items whose answer it is
        qhat = grouped_quantile(cal_scores, y[cal], test_scores.shape[-1], alphas)  # [R, A, K]
        return prediction_sets(tested, qhat, per="label")
    grouping = next((g for g in partitions if g.name == config.by), None)
    if grouping is None:
        raise SurefastError(f"score {config.name!r} needs the grouping {config.by!r}, which was not passed")
    qhat = grouped_quantile(cal_scores, grouping.codes[cal], len(grouping.labels), alphas)  # [R, A, G]
    own = np.broadcast_to(grouping.codes[test][:, None], (*qhat.shape[:2], test.shape[-1]))  # [R, A, T]
    per_item = qhat.map(lambda a: np.take_along_axis(a, own, axis=-1))  # [R, A, T]: each test item's group
    return prediction_sets(tested, per_item, per="item")
