"""The scoring contract: what goes in (a prompt, items, a config), what comes out (a ScoreResult)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from surefast.data.items import MCItem
from surefast.errors import SurefastError


@runtime_checkable
class PromptLike(Protocol):
    """What scoring needs of a prompt (``surefast.prompts.Prompt`` implements it).

    ``prefix`` is identical for every item of one (task, strategy): chat-template head,
    instruction and few-shot demos. ``prefix + render(item)`` is exactly what the model sees,
    and the next token is the answer letter. ``render(item, context=...)`` replaces the item's
    own context by a shortened one (the only part scoring may cut).
    """

    @property
    def prefix(self) -> str: ...

    def render(self, item: MCItem, context: str | None = None) -> str: ...


# Tokens per forward when none is asked for. On the CPU a forward's activations should stay in the
# last-level cache: on a 2-core AMD EPYC (AVX2, 32 MB L3, fp32) 512 tokens scored Qwen2.5-0.5B's
# MMLU items 1.9x and SmolLM2-135M's 1.8x faster than 4096 (docs/scoring.md, "Batch size").
CPU_BATCH_TOKENS = 512
DEVICE_BATCH_TOKENS = 4096  # accelerators: large batches keep their matrix units busy
# the hint of every ScoringConfig refusal
_BOUNDS = (
    f"batch_tokens >= 1 or None (default: {CPU_BATCH_TOKENS} on the CPU, {DEVICE_BATCH_TOKENS} elsewhere), "
    "max_batch_size >= 1 (default 64), max_length >= 2 or None"
)


@dataclass(frozen=True)
class ScoringConfig:
    """How to run the model; none of these fields changes what is computed, except ``max_length``.

    ``batch_tokens``: padded new tokens per forward (rows x longest row; the shared prefix is
    not counted, it is computed once); ``None``: :data:`CPU_BATCH_TOKENS` on the CPU,
    :data:`DEVICE_BATCH_TOKENS` on an accelerator (:meth:`tokens_per_batch`).
    ``max_batch_size`` caps rows (on the plain path, where the split prefix attention does not
    apply, each row holds its own copy of the prefix K/V during one layer's attention).
    ``max_length``: longest prompt the model may see; ``None`` means the model's
    ``max_position_embeddings`` (4096 if the config has none). Over-long items get their own context shortened, never the prefix.
    ``use_prefix_cache=False`` runs prefix + item in one forward per row (same six-row head).
    ``boundary`` says how item ids are made: ``"check"`` tokenizes each item apart and verifies
    on a sample that ``prefix_ids + rest_ids`` equals the whole prompt's ids, falling back to
    ``"full"`` (with a warning) where it does not; ``"full"`` tokenizes every whole prompt and
    caches the token prefix all items share (exact for any tokenizer, ~2 ms/item more);
    ``"trust"`` skips the check.
    ``cache_dir``: the score cache's root (None: ``$SUREFAST_HOME/scores``); a study keeps its
    own inside the repository (a plan's ``scores:`` key) so that another machine resumes it from git.
    """

    batch_tokens: int | None = None
    max_batch_size: int = 64
    max_length: int | None = None
    use_prefix_cache: bool = True
    boundary: str = "check"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # SurefastError, not ValueError: `bench run --batch-tokens` and a plan's batch_tokens end
        # here, and the CLI prints a SurefastError as one line. Types first: "x" < 1 is a TypeError.
        for key in ("batch_tokens", "max_batch_size", "max_length"):
            value = getattr(self, key)
            if value is None and key in ("batch_tokens", "max_length"):
                continue
            if not isinstance(value, numbers.Real):
                raise SurefastError(f"ScoringConfig {key}: expected a number, got {value!r}", _BOUNDS)
        if (self.batch_tokens is not None and self.batch_tokens < 1) or self.max_batch_size < 1:
            raise SurefastError("batch_tokens and max_batch_size must be >= 1", _BOUNDS)
        if self.max_length is not None and self.max_length < 2:
            raise SurefastError("max_length must be >= 2", _BOUNDS)
        if self.boundary not in ("check", "full", "trust"):
            raise SurefastError(
                f"boundary must be 'check', 'full' or 'trust', not {self.boundary!r}",
                "check (the default) is exact for every tokenizer; full always tokenizes whole prompts",
            )

    def tokens_per_batch(self, device: torch.device) -> int:
        """``batch_tokens``, or the default for ``device`` when it is None."""
        if self.batch_tokens is not None:
            return int(self.batch_tokens)
        return CPU_BATCH_TOKENS if device.type == "cpu" else DEVICE_BATCH_TOKENS


@dataclass(frozen=True)
class CacheKey:
    """Identifies one scoring run on disk; the prompt's own fingerprint is added by scoring.

    ``compression_fp`` is ``"none"`` for an uncompressed model; ``data_fp`` identifies the item
    list (task source, split, shuffle seed).
    """

    model_fp: str
    compression_fp: str
    task: str
    strategy: str
    data_fp: str


@dataclass(frozen=True)
class ScoreResult:
    """Six option-letter logits per item, in the order the items were given.

    ``shortened`` counts items whose own context was cut to fit ``max_length`` (over all items,
    cached ones included); ``n_cached`` items came from the disk cache; ``tokens_scored`` is the
    number of real (non-pad) tokens this call ran through the model; ``seconds`` its wall time.
    """

    uids: tuple[str, ...]
    logits: np.ndarray  # [N, 6] float32
    labels: np.ndarray  # [N] int64
    shortened: int
    n_cached: int
    seconds: float
    tokens_scored: int
    shortened_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # [N] bool
    letter_ids: tuple[int, ...] = ()
    prefix_cache: bool = False  # whether the shared-prefix KV cache was used for the items run here
    boundary_repaired: bool = False  # whether the prefix/item split had to be found on whole-prompt ids

    @property
    def predictions(self) -> np.ndarray:
        """``[N]`` argmax over the six options."""
        return np.asarray(self.logits.argmax(axis=1), dtype=np.int64)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean()) if len(self.labels) else float("nan")

    def probs(self) -> np.ndarray:
        """``[N, 6]`` softmax over the six option logits (the conformal benchmark's probabilities)."""
        z = self.logits.astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True))
