"""Tree-shape policies: vanilla chain, fixed tree, EAGLE-2 style dynamic tree, SAGE's entropy-guided tree.

A policy answers one question per step, *what tree shape now?* (:class:`TreeShape`: depth,
width = new nodes per level, node budget), and learns from each finished step (``observe``).
The shape only decides how many children each node gets *before* they are drawn, so every
policy is lossless (see :mod:`surefast.speculate.verify`).

SAGE (Tong et al. 2026). The paper's equations 9-12 are not available to us; this is our
reconstruction, with every formula and default stated here:

1. Normalized top-K entropy of a draft distribution ``q`` (raw softmax, temperature 1)::

       p~ = top-K probabilities of q, renormalized;   h = -sum p~ log p~ / log K   in [0, 1]

2. The step's observation ``h_t`` is the mean of ``h`` over the draft distributions along the
   accepted path (root included): the positions the output actually went through.
3. Temporal smoothing (entropy is correlated across steps; the shape of step t uses what was
   known after step t-1)::

       H_t = beta * H_{t-1} + (1 - beta) * h_t,     H_0 = initial_entropy

4. Shape from entropy (confident -> deep and narrow, uncertain -> shallow and wide)::

       W = round(W_min + H (W_max - W_min))
       D_entropy = round(D_min + (1 - H) (D_max - D_min))

5. History term: the recent mean accepted length ``A`` (draft tokens accepted, last
   ``history`` steps) caps the depth, so the draft stops paying for levels that are never
   reached, and the cap rises again as acceptance grows; a step that accepted every level it
   drafted lifts the cap to its depth + ``growth`` at once (assisted generation's +2 heuristic,
   so a cheap draft reaches long accepted chains in a few steps instead of ``history``)::

       D_history = clip(max(ceil(A) + depth_slack, D_last + growth if whole path accepted), D_min, D_max)
       (D_max before any step)

6. Node budget: ``D = max(D_min, min(D_entropy, D_history, floor(B / W)))``; the tree has at
   most ``W`` new nodes per level and ``B`` nodes in all.

Defaults (``SageConfig``) were chosen for small CPU models and tuned on nothing else; use
:mod:`surefast.speculate.tune` to pick the budget ``B`` for a given target.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch

from surefast.errors import SurefastError
from surefast.registry import Registry, dashed, suggestion
from surefast.speculate.conformal import update_threshold
from surefast.speculate.stats import ConfigError, StepRecord, TreeShape, require_int, require_real


def _defaults(config: Any) -> dict[str, Any]:
    """Field defaults of a config dataclass, for hints that quote them (defaults live in the dataclass)."""
    return {f.name: f.default for f in fields(config)}


def normalized_topk_entropy(logits: torch.Tensor, k: int = 10) -> torch.Tensor:
    """``[..., V]`` logits -> ``[...]`` entropy of the renormalized top-``k`` probabilities over ``log k`` (in [0, 1])."""
    k = min(k, logits.shape[-1])
    if k < 2:
        return torch.zeros(logits.shape[:-1])
    return topk_entropy(logits.float().topk(k, dim=-1).values)


def topk_entropy(top: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` the top-K logits -> ``[...]`` their renormalized entropy over ``log K`` (0 for K < 2)."""
    k = top.shape[-1]
    if k < 2:
        return torch.zeros(top.shape[:-1])
    logp = torch.log_softmax(top.float(), dim=-1)  # renormalized over the top k
    return (-(logp.exp() * logp).sum(dim=-1) / math.log(k)).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class PolicyConfig:
    """Base of every policy's options: a frozen dataclass, registered by name in :data:`POLICY_CONFIGS`,
    that builds its own policy (so the engine never needs to know which policy it runs)."""

    def make(self) -> Policy:
        """A fresh (stateful) policy for one generation."""
        raise NotImplementedError


@dataclass(frozen=True)
class ChainConfig(PolicyConfig):
    """Vanilla speculative decoding (Leviathan et al. 2023): a chain of ``depth`` draft tokens."""

    depth: int = 4

    def __post_init__(self) -> None:
        # depth 0 would draft nothing: the target alone, which is --policy ar
        d = _defaults(self)
        require_int("chain option", "depth", self.depth, 1, f"draft tokens per step, 1 or more (default {d['depth']})")

    def make(self) -> ChainPolicy:
        return ChainPolicy(self)


# The default fixed tree: 25 nodes, depth 5, as rank paths (child i of a node is its i-th best
# draft token). Level sizes 4, 7, 7, 5, 2; most of the mass on the first-choice spine, like the
# hand-tuned trees of Medusa / EAGLE-1 and the static SD-Tree baseline, scaled down.
DEFAULT_STATIC_TREE: tuple[tuple[int, ...], ...] = (
    (0,),
    (1,),
    (2,),
    (3,),
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (2, 0),
    (3, 0),
    (0, 0, 0),
    (0, 0, 1),
    (0, 0, 2),
    (0, 1, 0),
    (0, 1, 1),
    (1, 0, 0),
    (2, 0, 0),
    (0, 0, 0, 0),
    (0, 0, 0, 1),
    (0, 0, 1, 0),
    (0, 1, 0, 0),
    (1, 0, 0, 0),
    (0, 0, 0, 0, 0),
    (0, 0, 1, 0, 0),
)


def fixed_fanout(paths: tuple[tuple[int, ...], ...]) -> dict[tuple[int, ...], int]:
    """Children per node of a fixed tree given by rank paths: ``{parent path: number of children}``.

    Checks that the paths form a tree: every parent path is present (the root is ``()``) and
    the children of a node are ranks ``0 .. k-1``. Raises :class:`ConfigError` (a ``ValueError``)
    otherwise.
    """
    seen = set(paths)
    if len(seen) != len(paths):
        raise ConfigError("a fixed tree lists a path twice")
    fanout: dict[tuple[int, ...], int] = {}
    for path in paths:
        if not path or min(path) < 0:
            raise ConfigError(f"invalid rank path {path!r} (non-empty, ranks >= 0)")
        if len(path) > 1 and path[:-1] not in seen:
            raise ConfigError(f"rank path {path!r} has no parent {path[:-1]!r} in the tree")
        fanout[path[:-1]] = fanout.get(path[:-1], 0) + 1
    for path in paths:
        if path[-1] >= fanout[path[:-1]]:
            raise ConfigError(f"children of {path[:-1]!r} must be ranks 0..k-1; {path!r} skips one")
    return fanout


PATHS_HINT = "one tuple of ranks per node, parents first, e.g. paths=((0,), (1,), (0, 0))"


@dataclass(frozen=True)
class StaticTreeConfig(PolicyConfig):
    """A fixed tree every step (the SD-Tree / SpecVLM static baseline), as rank paths.

    ``paths``: one tuple per node, the ranks of the draft tokens from the root to it (``(0, 1)``:
    the second-best child of the best first token). The shape never depends on the draft's
    probabilities; only the tokens do. Default: :data:`DEFAULT_STATIC_TREE` (25 nodes, depth 5).
    """

    paths: tuple[tuple[int, ...], ...] = DEFAULT_STATIC_TREE

    def __post_init__(self) -> None:
        own = f"static-tree option paths={self.paths!r}"
        # Lists (a JSON or YAML tree) become tuples: the rank paths key the fanout dict.
        ok = isinstance(self.paths, (tuple, list)) and len(self.paths) > 0
        ok = ok and all(isinstance(p, (tuple, list)) for p in self.paths)
        ok = ok and all(isinstance(r, int) and not isinstance(r, bool) for p in self.paths for r in p)
        if not ok:
            raise ConfigError(f"{own}: must be a non-empty tuple of tuples of whole-number ranks", PATHS_HINT)
        object.__setattr__(self, "paths", tuple(tuple(p) for p in self.paths))
        try:
            fixed_fanout(self.paths)
        except ConfigError as exc:
            raise ConfigError(f"{own}: {exc.message}", PATHS_HINT) from None

    def make(self) -> StaticTreePolicy:
        return StaticTreePolicy(self)


@dataclass(frozen=True)
class DynamicTreeConfig(PolicyConfig):
    """EAGLE-2 style dynamic tree: each level takes the ``width`` best (parent, rank) pairs.

    Pairs are ranked by cumulative draft log-probability over the whole frontier, so confident
    branches get many children and unlikely ones none, up to ``budget`` nodes in all and
    ``depth`` levels. EAGLE-2's final re-ranking of all drafted nodes is left out: it would look
    at the drawn tokens and so break lossless sampling (:mod:`surefast.speculate.draft`).
    """

    depth: int = 5
    width: int = 5
    budget: int = 25

    def __post_init__(self) -> None:
        own, d = "dynamic option", _defaults(self)
        require_int(own, "depth", self.depth, 1, f"tree levels per step, 1 or more (default {d['depth']})")
        require_int(own, "width", self.width, 1, f"nodes per tree level, 1 or more (default {d['width']})")
        require_int(own, "budget", self.budget, 1, f"draft nodes per step, 1 or more (default {d['budget']})")

    def make(self) -> DynamicTreePolicy:
        return DynamicTreePolicy(self)


@dataclass(frozen=True)
class SageConfig(PolicyConfig):
    """SAGE entropy-guided adaptive trees; the formulas are in this module's docstring."""

    budget: int = 25  # the same node budget as the static and dynamic trees' defaults
    min_depth: int = 1
    max_depth: int = 16
    min_width: int = 1
    max_width: int = 6
    entropy_topk: int = 10
    smoothing: float = 0.5  # beta: weight of the past in the entropy EMA
    initial_entropy: float = 0.5
    history: int = 8  # steps of accepted lengths feeding the depth cap
    depth_slack: int = 2
    growth: int = 2  # levels added to the cap after a step accepted every level it drafted

    def __post_init__(self) -> None:
        own, d = "sage option", _defaults(self)
        require_int(own, "budget", self.budget, 1, f"the most draft nodes one step verifies (default {d['budget']})")
        depths = f"1 <= min_depth <= max_depth (defaults {d['min_depth']}, {d['max_depth']})"
        require_int(own, "min_depth", self.min_depth, 1, depths)
        require_int(own, "max_depth", self.max_depth, self.min_depth, f"{depths}; min_depth is {self.min_depth}")
        widths = f"1 <= min_width <= max_width (defaults {d['min_width']}, {d['max_width']})"
        require_int(own, "min_width", self.min_width, 1, widths)
        require_int(own, "max_width", self.max_width, self.min_width, f"{widths}; min_width is {self.min_width}")
        # The entropy of one renormalized probability is always 0 (log 1 = 0): K >= 2.
        topk = f"the entropy is over the draft's top-K tokens (default {d['entropy_topk']})"
        require_int(own, "entropy_topk", self.entropy_topk, 2, topk)
        smoothing = f"beta, the weight of the past in the entropy average (default {d['smoothing']})"
        require_real(own, "smoothing", self.smoothing, 0.0, 1.0, smoothing, high_open=True)
        entropy = f"H_0, a normalized entropy (default {d['initial_entropy']})"
        require_real(own, "initial_entropy", self.initial_entropy, 0.0, 1.0, entropy)
        history = f"steps of accepted lengths feeding the depth cap (default {d['history']})"
        require_int(own, "history", self.history, 1, history)
        slack = f"levels allowed above the recent accepted length (default {d['depth_slack']})"
        require_int(own, "depth_slack", self.depth_slack, 0, slack)
        growth = f"levels added after a step accepted its whole depth (default {d['growth']})"
        require_int(own, "growth", self.growth, 0, growth)

    def make(self) -> SagePolicy:
        return SagePolicy(self)


@dataclass(frozen=True)
class ConformalTreeConfig(PolicyConfig):
    """Conformal draft trees (:mod:`surefast.speculate.conformal`): a node's width is its draft set's size.

    ``alpha``: the miss rate the threshold is calibrated to (the target's token outside the
    draft's set); ``gamma``: the adaptive-conformal step; ``max_width``: the largest set and
    the most nodes per level. Depth follows the same history term as SAGE's.
    """

    alpha: float = 0.2
    budget: int = 25
    max_width: int = 6
    gamma: float = 0.05
    initial_threshold: float = 0.8
    min_depth: int = 1
    max_depth: int = 16
    history: int = 8
    depth_slack: int = 2
    growth: int = 2

    def __post_init__(self) -> None:
        own, d = "conformal option", _defaults(self)
        require_real(
            own,
            "alpha",
            self.alpha,
            0.0,
            1.0,
            "the target miss rate of the draft's sets, e.g. 0.2",
            low_open=True,
            high_open=True,
        )
        require_int(own, "budget", self.budget, 1, f"the most draft nodes one step verifies (default {d['budget']})")
        require_int(own, "max_width", self.max_width, 1, f"the largest set (default {d['max_width']})")
        require_real(own, "gamma", self.gamma, 0.0, 1.0, "the adaptive-conformal step (default 0.05)", low_open=True)
        require_real(own, "initial_threshold", self.initial_threshold, 0.0, 1.0, "a probability mass (default 0.8)")
        depths = f"1 <= min_depth <= max_depth (defaults {d['min_depth']}, {d['max_depth']})"
        require_int(own, "min_depth", self.min_depth, 1, depths)
        require_int(own, "max_depth", self.max_depth, self.min_depth, depths)
        require_int(own, "history", self.history, 1, f"steps feeding the depth cap (default {d['history']})")
        require_int(own, "depth_slack", self.depth_slack, 0, f"default {d['depth_slack']}")
        require_int(own, "growth", self.growth, 0, f"default {d['growth']}")

    def make(self) -> ConformalTreePolicy:
        return ConformalTreePolicy(self)


# name -> config class, in the order the CLI and the benchmarks list them (SAGE, then our conformal trees). Names match
# whatever case and separator a user types ("static_tree" is "static-tree").
POLICY_CONFIGS: Registry[type[PolicyConfig]] = Registry("speculative policy", normalize=dashed)
POLICY_CONFIGS.register("chain", ChainConfig)
POLICY_CONFIGS.register("static-tree", StaticTreeConfig)
POLICY_CONFIGS.register("dynamic", DynamicTreeConfig)
POLICY_CONFIGS.register("sage", SageConfig)
POLICY_CONFIGS.register("conformal", ConformalTreeConfig)


class Policy(Protocol):
    entropy_topk: int

    def shape(self) -> TreeShape: ...

    def observe(self, step: StepRecord) -> None: ...


class ChainPolicy:
    def __init__(self, config: ChainConfig) -> None:
        self.config, self.entropy_topk = config, 10

    def shape(self) -> TreeShape:
        return TreeShape(self.config.depth, 1, self.config.depth)

    def observe(self, step: StepRecord) -> None:
        pass


class StaticTreePolicy:
    def __init__(self, config: StaticTreeConfig) -> None:
        self.config, self.entropy_topk = config, 10
        levels = [len(p) for p in config.paths]
        widest = max(levels.count(d) for d in set(levels))
        self._shape = TreeShape(max(levels), widest, len(config.paths), fanout=fixed_fanout(config.paths))

    def shape(self) -> TreeShape:
        return self._shape

    def observe(self, step: StepRecord) -> None:
        pass


class DynamicTreePolicy:
    def __init__(self, config: DynamicTreeConfig) -> None:
        self.config, self.entropy_topk = config, 10

    def shape(self) -> TreeShape:
        c = self.config
        return TreeShape(c.depth, c.width, c.budget)

    def observe(self, step: StepRecord) -> None:
        pass


class DepthHistory:
    """SAGE's history term (module docstring, step 5): a depth cap from recent accepted lengths."""

    def __init__(self, min_depth: int, max_depth: int, history: int, slack: int, growth: int) -> None:
        self.min_depth, self.max_depth, self.slack, self.growth = min_depth, max_depth, slack, growth
        self.recent: deque[int] = deque(maxlen=history)  # accepted lengths
        self.lift = 0  # depth + growth after a step that accepted every level it drafted

    def cap(self) -> int:
        if not self.recent:
            return self.max_depth
        mean = sum(self.recent) / len(self.recent)
        return min(self.max_depth, max(self.min_depth, math.ceil(mean) + self.slack, self.lift))

    def observe(self, step: StepRecord) -> None:
        if step.shape.depth > 0:  # steps cut short by the length limit tell nothing about acceptance
            self.recent.append(step.accepted)
            whole = step.depth > 0 and step.accepted >= step.depth
            self.lift = step.depth + self.growth if whole else 0


class SagePolicy:
    """Entropy-guided adaptive tree shape (module docstring, steps 1-6)."""

    def __init__(self, config: SageConfig) -> None:
        self.config = config
        self.entropy_topk = config.entropy_topk
        self.smoothed = config.initial_entropy  # H_t
        c = config
        self.history = DepthHistory(c.min_depth, c.max_depth, c.history, c.depth_slack, c.growth)

    def depth_cap(self) -> int:
        return self.history.cap()

    def shape(self) -> TreeShape:
        c, h = self.config, self.smoothed
        width = round(c.min_width + h * (c.max_width - c.min_width))
        depth_entropy = round(c.min_depth + (1.0 - h) * (c.max_depth - c.min_depth))
        depth = max(c.min_depth, min(depth_entropy, self.depth_cap(), c.budget // width))
        return TreeShape(depth, width, c.budget)

    def observe(self, step: StepRecord) -> None:
        if not math.isnan(step.entropy):
            beta = self.config.smoothing
            self.smoothed = beta * self.smoothed + (1.0 - beta) * step.entropy
        self.history.observe(step)


class ConformalTreePolicy:
    """Trees whose node widths are calibrated draft sets (:class:`ConformalTreeConfig`)."""

    def __init__(self, config: ConformalTreeConfig) -> None:
        self.config, self.entropy_topk = config, 10
        self.threshold = config.initial_threshold
        c = config
        self.history = DepthHistory(c.min_depth, c.max_depth, c.history, c.depth_slack, c.growth)

    def shape(self) -> TreeShape:
        c = self.config
        return TreeShape(min(self.history.cap(), c.budget), c.max_width, c.budget, set_mass=self.threshold)

    def observe(self, step: StepRecord) -> None:
        self.threshold = update_threshold(self.threshold, step.covered, self.config.alpha, self.config.gamma)
        self.history.observe(step)


def policy_config(name: str, **overrides: Any) -> PolicyConfig:
    """The config named ``name`` (any of :data:`POLICY_CONFIGS`) with ``overrides``; helpful errors."""
    key = POLICY_CONFIGS.canonical(name)
    cls = POLICY_CONFIGS[key]
    known = sorted(f.name for f in fields(cls))
    for k in overrides:
        if k not in known:
            hint = suggestion(k, known, otherwise=f"options: {', '.join(known)}")
            raise SurefastError(f"policy {key!r} has no option {k!r}", hint)
    return replace(cls(), **overrides)


def make_policy(config: PolicyConfig | str) -> Policy:
    """A fresh (stateful) policy for one generation: ``config.make()``, or from a policy name."""
    if isinstance(config, str):
        config = policy_config(config)
    if not isinstance(config, PolicyConfig):
        raise TypeError(f"not a policy config: {config!r}")
    return config.make()
