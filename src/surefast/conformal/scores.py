"""Conformity scores: how badly a candidate label fits an item (larger = less conforming).

Every score here is a pure function ``probs [..., K] (+ uniforms [...]) -> scores [..., K]``
that scores *every* candidate label. Calibration uses the entry of the true label
(:func:`at_labels`); the prediction set of a test item is ``{y : score_y <= qhat}``
(:func:`surefast.conformal.calibrate.prediction_sets`). Calibrating and building sets from the
same function is what makes split-conformal coverage hold by exchangeability, for every score.

Ties (equal probabilities within one item) are handled by treating a group of tied labels as one
block: each tied label gets the score it would have if it came *last* in its group, so the scores,
and hence the sets, do not depend on the order of the options (permuting the columns permutes the
sets). MAPIE and the reference code (Ye et al. 2024) instead break ties by ``argsort`` order; the
two agree whenever an item has no tied probabilities.

Randomized variants take one uniform ``u`` per item, in MAPIE's convention (``u = 0`` recovers
the deterministic score), so a test can feed both the same draws.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from surefast.errors import SurefastError
from surefast.registry import Registry


class ScoreConfig:
    """Base of every conformity score: a frozen dataclass of its options that scores every label.

    A new score is a subclass with a registry ``name`` and :meth:`scores`, registered in
    :data:`SCORES` (see ``docs/extending.md``); calibration, sets and metrics need nothing else.
    """

    randomized: bool  # whether the score takes one uniform draw per item (u)

    @property
    def name(self) -> str:
        """The name results are stored under (the registry name for the registered settings)."""
        raise NotImplementedError

    def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
        """Scores of every label from precomputed :class:`TieBlocks` (``u``: randomized scores only)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LACConfig(ScoreConfig):
    """LAC, "least ambiguous set-valued classifier" (Sadinle, Lei & Wasserman, JASA 2019).

    ``s(x, y) = 1 - p_y``; the set ``{y : s <= qhat}`` is ``{y : p_y >= 1 - qhat}``. It has the
    smallest expected size of all sets with the coverage guarantee, but it can be empty: when
    even the top probability is below ``1 - qhat``.
    """

    randomized = False  # class constant, not a field

    @property
    def name(self) -> str:
        return "lac"

    def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
        return ScoreArray.from_mass(blocks.others, blocks.probs)  # m = 1 - p_y; its complement is p_y


@dataclass(frozen=True)
class APSConfig(ScoreConfig):
    """APS, adaptive prediction sets (Romano, Sesia & Candès, NeurIPS 2020).

    Deterministic (``randomized=False``, the reference benchmark's APS):
    ``s(x, y) = sum of p_j over labels j with p_j >= p_y`` -- the probability mass sorted down to
    and including ``y``. Randomized (``randomized=True``, Romano et al. eq. 5 in MAPIE's
    convention): ``s(x, y, u) = s(x, y) - u * T(y)``, ``u ~ U(0, 1)`` per item, where ``T(y)`` is
    the mass of ``y``'s tie group (just ``p_y`` without ties). Randomization makes coverage
    exactly ``1 - alpha`` in expectation, at the price of sets that depend on a coin flip and
    can be empty; deterministic APS sets are never empty unless ``qhat < max p``.
    """

    randomized: bool = False

    @property
    def name(self) -> str:
        return "aps_randomized" if self.randomized else "aps"

    def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
        return ScoreArray.from_mass(*_aps_mass(blocks, self.randomized, u))


@dataclass(frozen=True)
class RAPSConfig(ScoreConfig):
    """RAPS, regularized APS (Angelopoulos, Bates, Malik & Jordan, ICLR 2021, eq. 4).

    ``s(x, y, u) = APS(x, y, u) + lam * max(0, o(x, y) - k_reg)`` where ``o(x, y)`` is the 1-based
    rank of ``y`` by probability (a tie group takes its worst rank). Labels ranked beyond
    ``k_reg`` pay ``lam`` per extra rank, which cuts the long tail of unlikely options APS adds.

    The paper tunes ``lam`` in {0.001, 0.01, 0.1, 0.2, 0.5} and sets ``k_reg`` to a quantile of
    the true label's rank on held-out data; with only six options we fix ``lam=0.1, k_reg=2``
    (a penalty from the third-ranked option on; our choice, the paper has no six-option default).
    ``lam = 0`` gives APS exactly.
    """

    lam: float = 0.1
    k_reg: int = 2
    randomized: bool = False

    def __post_init__(self) -> None:
        # a number first: "x" >= 0 would be a TypeError, not a one-line SurefastError
        hint = "lam = 0 gives APS; the defaults are lam=0.1, k_reg=2"
        if not (isinstance(self.lam, numbers.Real) and self.lam >= 0 and np.isfinite(self.lam)):
            raise SurefastError(f"RAPS lam must be a finite number >= 0, got {self.lam}", hint)
        if isinstance(self.k_reg, bool) or not isinstance(self.k_reg, int) or self.k_reg < 0:
            raise SurefastError(f"RAPS k_reg must be an integer >= 0, got {self.k_reg!r}", hint)

    @property
    def name(self) -> str:
        base = "raps_randomized" if self.randomized else "raps"
        default = RAPSConfig(randomized=self.randomized)
        if (self.lam, self.k_reg) == (default.lam, default.k_reg):
            return base
        return f"{base}(lam={self.lam:g},k_reg={self.k_reg})"

    def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
        level = self.lam * np.maximum(blocks.rank - self.k_reg, 0)  # the rank penalty, eq. 4
        return ScoreArray.from_mass(*_aps_mass(blocks, self.randomized, u), level)


def _aps_mass(blocks: TieBlocks, randomized: bool, u: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """APS's mass ``M(y) - u T(y)`` and its complement, as sums (see :func:`score_array`)."""
    if not randomized:
        return blocks.above, blocks.below
    w = np.asarray(_require(u), dtype=np.float64)[..., None]  # one draw per item, broadcast over labels
    return blocks.strictly_above + (1.0 - w) * blocks.tied, blocks.below + w * blocks.tied


# name -> config: the settings results are stored under (RAPS with other lam / k_reg is a config only).
SCORES: Registry[ScoreConfig] = Registry("conformity score")
SCORES.register("lac", LACConfig())
SCORES.register("aps", APSConfig())
SCORES.register("aps_randomized", APSConfig(randomized=True))
SCORES.register("raps", RAPSConfig())
SCORES.register("raps_randomized", RAPSConfig(randomized=True))


# Score specs other than a registry name: a separator -> the parser of specs holding it, which the
# module defining that form registers as it is imported (mondrian.py: "lac@subject"). A
# registration, not an import: those modules build on this one, and an import back would be a
# circle (tests/test_imports.py). surefast.conformal imports them all.
SPEC_FORMS: dict[str, Callable[[str], ScoreConfig]] = {}


def get_score(spec: str | ScoreConfig) -> ScoreConfig:
    """A score config from its registry name or the config itself; unknown names get a suggestion.

    ``"<name>@<grouping>"`` (``"lac@subject"``) is the score calibrated per group
    (:class:`~surefast.conformal.mondrian.MondrianConfig`, through :data:`SPEC_FORMS`).
    """
    if isinstance(spec, ScoreConfig):
        return spec
    for separator, parse in SPEC_FORMS.items():
        if isinstance(spec, str) and separator in spec:
            return parse(spec)
    return SCORES.get(spec)


@dataclass(frozen=True)
class ScoreArray:
    """Conformity scores ``s = level + m`` held so that comparing them loses no precision.

    ``m`` is the probability-mass part in ``[0, 1]`` (LAC ``1 - p_y``, APS ``M(y) - u T(y)``) and
    ``level`` the RAPS rank penalty (``None`` for LAC and APS: level 0). A float64 cannot tell
    ``1 - 1e-12`` from ``1 - 1.1e-12`` well, nor ``1 - 1e-17`` from 1 at all, and a confident
    model's non-top options live there (a logit gap of 25 nats is a probability of 1e-11). So
    ``m`` and its complement ``1 - m`` are each computed as a sum of probabilities (never one as
    1 minus the other), and ``key`` keeps whichever is the smaller:

    * ``key = m`` where ``m <= 1 - m``, else ``key = 1 / (1 - m)`` (``+inf`` when ``1 - m = 0``).

    ``key`` is strictly increasing in ``m`` and accurate to a few ulps *relative*, however close
    ``m`` is to 0 or 1, so two keys of one level compare as the exact scores do up to
    :data:`~surefast.conformal.calibrate.RTOL`. ``value`` is ``s`` as a plain float64 (for
    display, and to compare scores of different RAPS levels). All three arrays share one shape.
    """

    key: np.ndarray
    value: np.ndarray
    level: np.ndarray | None = None

    @classmethod
    def from_mass(cls, mass: np.ndarray, rest: np.ndarray, level: np.ndarray | None = None) -> ScoreArray:
        """Scores from ``m`` and ``1 - m``, both as computed sums, plus an optional penalty level."""
        lower = mass <= rest
        with np.errstate(divide="ignore", over="ignore"):  # 1 / 0 and 1 / 1e-320: +inf, above every finite key
            key = np.where(lower, mass, 1.0 / rest)
        value = np.where(lower, mass, 1.0 - rest)
        if level is None:
            return cls(key, value)
        level = np.broadcast_to(level, key.shape)  # a per-label penalty under per-split draws u
        return cls(key, value + level, level)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.key.shape)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> ScoreArray:
        """The same function (an index, a gather) applied to every field."""
        return ScoreArray(fn(self.key), fn(self.value), None if self.level is None else fn(self.level))

    def __getitem__(self, index: Any) -> ScoreArray:
        return self.map(lambda a: a[index])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """As an array: the float values (``np.asarray(scores)``), e.g. to print or plot them."""
        return self.value if dtype is None else self.value.astype(dtype)


@dataclass(frozen=True)
class TieBlocks:
    """Per label, the probability sums every score is built from (``[..., K]`` each).

    Computed by pairwise comparison ``[..., K, K]`` instead of a sort: K is six, and it makes
    tied labels share one value with no dependence on option order. Every field is a sum of
    non-negative probabilities, so each is accurate relative to itself (no cancellation).
    """

    above: np.ndarray  # M(y): mass of labels j with p_j >= p_y (y's tie group included)
    strictly_above: np.ndarray  # mass of labels with p_j > p_y
    tied: np.ndarray  # T(y): mass of y's tie group
    below: np.ndarray  # mass of labels with p_j < p_y: 1 - M(y), as its own sum
    others: np.ndarray  # mass of every label but y: 1 - p_y, as its own sum
    probs: np.ndarray  # p_y
    rank: np.ndarray  # o(y): 1-based rank, a tie group taking its worst


def tie_blocks(probs: np.ndarray) -> TieBlocks:
    """The sums of :class:`TieBlocks` for probabilities ``[..., K]`` (rows summing to 1)."""
    p = np.asarray(probs, dtype=np.float64)
    row = p[..., None, :]  # [..., 1, K(j)]
    col = p[..., :, None]  # [..., K(y), 1]
    above, strict = row >= col, row > col  # [..., K(y), K(j)]
    tied = above & ~strict
    k = p.shape[-1]
    return TieBlocks(
        above=(above * row).sum(-1),
        strictly_above=(strict * row).sum(-1),
        tied=(tied * row).sum(-1),
        below=(~above * row).sum(-1),
        others=p @ (1.0 - np.eye(k)),
        probs=p,
        rank=above.sum(-1),
    )


def score_array(config: ScoreConfig, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
    """Scores of every label under ``config`` from precomputed :class:`TieBlocks`.

    ``u`` (randomized scores only) has the blocks' shape without the label axis and broadcasts
    over labels: one draw per item. With ``u``, the mass ``M(y) - u T(y)`` is formed as
    ``(mass strictly above y) + (1 - u) T(y)`` and its complement as ``(mass below y) + u T(y)``:
    sums of non-negative terms, so both stay exact to a few ulps. Each config computes its own
    (:meth:`ScoreConfig.scores`).
    """
    if not isinstance(config, ScoreConfig):
        raise SurefastError(f"not a score config: {config!r}")
    return config.scores(blocks, u)


def lac(probs: np.ndarray) -> np.ndarray:
    """LAC scores ``1 - p`` for every label, ``[..., K]``, as floats."""
    return score_array(LACConfig(), tie_blocks(probs)).value


def aps(probs: np.ndarray) -> np.ndarray:
    """Deterministic APS scores for every label, ``[..., K]``, as floats (see :class:`APSConfig`)."""
    return score_array(APSConfig(), tie_blocks(probs)).value


def aps_randomized(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Randomized APS scores ``[..., K]`` as floats; ``u`` ``[...]`` broadcasts against ``probs[..., 0]``."""
    return score_array(APSConfig(randomized=True), tie_blocks(probs), u).value


def raps(probs: np.ndarray, u: np.ndarray | None = None, *, lam: float = 0.1, k_reg: int = 2) -> np.ndarray:
    """RAPS scores ``[..., K]`` as floats: deterministic when ``u`` is None, else randomized with ``u``."""
    config = RAPSConfig(lam=lam, k_reg=k_reg, randomized=u is not None)
    return score_array(config, tie_blocks(probs), u).value


def class_scores(config: ScoreConfig, probs: np.ndarray, u: np.ndarray | None = None) -> ScoreArray:
    """Scores of every label under ``config``: ``[N, K]``, or ``[R, N, K]`` when ``u`` is ``[R, N]``.

    Returned as a :class:`ScoreArray` (``.value`` for the floats). ``u`` is ignored by
    deterministic scores and required by randomized ones. ``probs`` rows should sum to 1: the
    complements are computed as sums of the other labels' probabilities.
    """
    return score_array(config, tie_blocks(probs), u if config.randomized else None)


def _require(u: np.ndarray | None) -> np.ndarray:
    if u is None:
        raise SurefastError("a randomized score needs one uniform draw per item (u)")
    return u


@overload
def at_labels(values: ScoreArray, labels: np.ndarray) -> ScoreArray: ...
@overload
def at_labels(values: np.ndarray, labels: np.ndarray) -> np.ndarray: ...
def at_labels(values: np.ndarray | ScoreArray, labels: np.ndarray) -> np.ndarray | ScoreArray:
    """Each item's entry at its true label: ``[..., N, K]`` and ``[..., N]`` -> ``[..., N]``.

    On class scores this gives the calibration scores; on sets, whether each set covers.
    ``labels`` broadcast against the leading dims (e.g. ``[N]`` against ``[R, N, K]``).
    """
    if isinstance(values, ScoreArray):
        return values.map(lambda a: at_labels(a, labels))
    idx = np.asarray(labels)[..., None]
    idx = idx.reshape((1,) * (values.ndim - idx.ndim) + idx.shape)
    return np.take_along_axis(values, idx, axis=-1)[..., 0]
