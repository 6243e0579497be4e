"""What one speculative generation did: per-step records and totals (hardware-independent first)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from surefast.errors import SurefastError


class ConfigError(SurefastError, ValueError):
    """A speculative-decoding setting out of range or of the wrong type (``-o max_width=0``).

    A :class:`SurefastError`, so the CLI prints it as one line; also a ``ValueError``, what these
    configs raised before, so callers that catch that keep working. Defined here, the lowest
    module of the package, so the policy, sampling and tree-shape configs all share it.
    """


def require_int(owner: str, name: str, value: Any, low: int, hint: str) -> None:
    """``value`` is a whole number >= ``low`` (``True`` is not: ``-o budget=True`` is a slip)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{owner} {name}={value!r}: must be a whole number >= {low}", hint)


def require_real(
    owner: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    hint: str,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` is a finite number in the interval ``[low, high]`` (either end open if asked)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if math.isinf(high):
            interval = f"{'>' if low_open else '>='} {low:g}"
        raise ConfigError(f"{owner} {name}={value!r}: must be a finite number {interval}", hint)


@dataclass(frozen=True)
class TreeShape:
    """The tree a policy asks for: at most ``depth`` levels, ``width`` new nodes per level, ``budget`` nodes.

    ``fanout`` (fixed trees only): children per node, keyed by the node's rank path
    (:func:`surefast.speculate.policies.fixed_fanout`); ``None`` lets the draft allocate children
    by cumulative draft probability. ``set_mass`` (conformal trees, :mod:`surefast.speculate.conformal`):
    a node gets at most the draft's top tokens whose cumulative probability first reaches it.
    """

    depth: int
    width: int
    budget: int
    fanout: dict[tuple[int, ...], int] | None = field(default=None, repr=False, hash=False)
    set_mass: float | None = None  # conformal trees: a node's children are its draft set at this threshold

    def __post_init__(self) -> None:
        hint = "a policy's shape: depth >= 0 levels, width >= 1 nodes per level, budget >= 0 nodes"
        require_int("tree shape", "depth", self.depth, 0, hint)
        require_int("tree shape", "width", self.width, 1, hint)
        require_int("tree shape", "budget", self.budget, 0, hint)


@dataclass(frozen=True)
class StepRecord:
    """One draft-and-verify step."""

    accepted: int  # draft tokens the target accepted (the bonus token not counted)
    emitted: int  # tokens this step added to the output (accepted + 1, less if cut by EOS/limit)
    tree_size: int  # draft nodes verified (root excluded)
    depth: int  # deepest level drafted
    width: int  # largest level
    shape: TreeShape  # what the policy asked for
    entropy: float  # mean normalized top-K draft entropy along the accepted path (nan: no draft ran)
    root_entropy: float  # the same at the root only
    draft_s: float  # growing the tree: draft forwards and their bookkeeping
    verify_s: float  # the target's forward of the tree, with its mask and positions
    overhead_s: float  # after the forward: walking the tree, cache keep, the policy
    draft_forward_s: float = 0.0  # inside the draft model's forwards only
    target_forward_s: float = 0.0  # inside the target model's forward only
    ngram_nodes: int = 0  # tree nodes the n-gram lookups added (beyond what the draft proposed)
    ngram_proposed: int = 0  # tokens of the first n-gram continuation tried
    ngram_accepted: int = 0  # of those, how many the target accepted (whichever node held them)
    covered: tuple[bool, ...] = ()  # per level along the path: the target's token was in the draft's set
    draft_levels: int = 0  # draft forwards this step (0: the draft model did not run)
    draft_catch_up: int = 0  # accepted tokens the draft had not seen, fed with its first forward

    @property
    def step_s(self) -> float:
        return self.draft_s + self.verify_s + self.overhead_s

    @property
    def bookkeeping_s(self) -> float:
        """The step's time that is neither a draft nor the target forward (masks, trees, caches, Python)."""
        return max(0.0, self.step_s - self.draft_forward_s - self.target_forward_s)


@dataclass
class SpecStats:
    """Totals of one generation. ``tokens_per_forward`` is the mean acceptance length (tokens per target forward)."""

    method: str = ""
    prompt_tokens: int = 0
    new_tokens: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    target_forwards: int = 0  # prefill included
    draft_forwards: int = 0  # prefill included
    prefill_s: float = 0.0  # until the first new tokens were known
    first_tokens: int = 1  # tokens known at prefill_s (HF assisted generation: its whole first round)
    draft_s: float = 0.0
    verify_s: float = 0.0
    overhead_s: float = 0.0
    total_s: float = 0.0  # wall time, prefill included
    plan: dict[str, Any] = field(default_factory=dict)  # what the planner decided, if one ran

    def time_split(self) -> dict[str, float]:
        """Decode step time (prefill excluded) in seconds: draft forwards, target forwards, everything else."""
        draft = sum(s.draft_forward_s for s in self.steps)
        target = sum(s.target_forward_s for s in self.steps)
        total = sum(s.step_s for s in self.steps)
        other = sum(s.bookkeeping_s for s in self.steps)
        return {
            "draft_forward_s": draft,
            "target_forward_s": target,
            "other_s": other,
            "other_share": other / total if total > 0 else 0.0,
        }

    def coverage_by_level(self) -> dict[int, tuple[int, int]]:
        """Level -> (positions whose target token was in the draft's set, positions checked)."""
        out: dict[int, list[int]] = {}
        for step in self.steps:
            for level, hit in enumerate(step.covered, start=1):
                cell = out.setdefault(level, [0, 0])
                cell[0] += int(hit)
                cell[1] += 1
        return {level: (hit, n) for level, (hit, n) in sorted(out.items())}

    @property
    def accepted_lengths(self) -> list[int]:
        return [s.accepted for s in self.steps]

    @property
    def tokens_per_forward(self) -> float:
        """Tokens emitted per target decoding forward (prefill excluded): 1 + mean accepted length."""
        decode_forwards = self.target_forwards - 1 if self.target_forwards else 0
        decoded = self.new_tokens - 1 if self.new_tokens else 0  # the first token came from the prefill
        return decoded / decode_forwards if decode_forwards > 0 else float("nan")

    @property
    def mean_accepted(self) -> float:
        return sum(self.accepted_lengths) / len(self.steps) if self.steps else float("nan")

    @property
    def decode_s(self) -> float:
        return self.total_s - self.prefill_s

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first chunk over the time after it (prefill excluded)."""
        later = self.new_tokens - self.first_tokens
        return later / self.decode_s if self.decode_s > 0 and later > 0 else float("nan")

    @property
    def e2e_tokens_per_s(self) -> float:
        """New tokens over the whole wall time, prefill included: comparable across every method."""
        return self.new_tokens / self.total_s if self.total_s > 0 else float("nan")

    @property
    def entropy_trace(self) -> list[float]:
        return [s.entropy for s in self.steps]

    def summary(self) -> dict[str, Any]:
        """Flat numbers (JSON-safe) for reports and benchmarks."""

        def clean(x: float) -> float | None:
            return None if isinstance(x, float) and math.isnan(x) else x

        n = len(self.steps)
        return {
            "method": self.method,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "steps": n,
            "target_forwards": self.target_forwards,
            "draft_forwards": self.draft_forwards,
            "tokens_per_forward": clean(self.tokens_per_forward),
            "mean_accepted": clean(self.mean_accepted),
            "tokens_per_s": clean(self.tokens_per_s),
            "e2e_tokens_per_s": clean(self.e2e_tokens_per_s),
            "first_tokens": self.first_tokens,
            "prefill_s": self.prefill_s,
            "draft_s": self.draft_s,
            "verify_s": self.verify_s,
            "overhead_s": self.overhead_s,
            "total_s": self.total_s,
            "mean_tree_size": sum(s.tree_size for s in self.steps) / n if n else None,
            "mean_depth": sum(s.depth for s in self.steps) / n if n else None,
            "mean_width": sum(s.width for s in self.steps) / n if n else None,
            "ngram_nodes": sum(s.ngram_nodes for s in self.steps),
            "ngram_proposed": sum(s.ngram_proposed for s in self.steps),
            "ngram_accepted": sum(s.ngram_accepted for s in self.steps),
            "time_split": self.time_split(),
            "coverage_by_level": {str(k): v for k, v in self.coverage_by_level().items()},
            "plan": self.plan,
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.summary()
        records = [asdict(s) for s in self.steps]
        for r in records:
            r["shape"].pop("fanout")  # a fixed tree's layout is in the policy config, not in every step
        out["step_records"] = records
        return out
