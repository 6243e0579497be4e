"""Draft-side visual-token pruning: the draft keeps only a share of the visual tokens; the target keeps all.

SAGE's "pruning ratio" (best 0.8-0.9 in the paper) is, in our reading (the paper's text is not
available to us; this follows SpecVLM's draft-side compression), the share ``r`` of visual
tokens removed from the *draft's* context. Output stays lossless because only the target's
distributions decide what is emitted; pruning can only change how often the draft's proposals
are accepted.

What we do (our choices, where the paper is silent):

1. The draft prefills the whole prompt once, every visual token included (the vision path runs
   once; the attention scores below come from this context).
2. Scores: the attention the *last prompt token* pays to each visual slot, averaged over all
   layers and heads (FastV / SparseVLM-style text-guided importance). It is measured by
   re-feeding that token at its own position with eager attention and its own new slot masked
   out, so it sees exactly the keys it saw in the prefill; the extra slot is then dropped.
3. Selection of ``n_keep = n_visual - round(r * n_visual)`` tokens (Python's ``round``, half to
   even): ``round(attention_share * n_keep)`` with the highest scores, the rest spread uniformly
   over the remaining visual tokens (the centre of equal segments), so the draft keeps coarse
   coverage of the whole image besides its salient parts (:func:`select_kept`).
4. The dropped slots leave the draft's KV cache (:meth:`KVCache.keep`); kept slots keep the keys
   computed at their original positions, and every later draft token is placed at its
   target position. From then on each draft forward, the part repeated every decoding step,
   attends to ``S - round(r * n_visual)`` prompt slots instead of ``S``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from surefast.models.arch import decoder_body
from surefast.speculate.cache import KVCache
from surefast.speculate.stats import ConfigError


@dataclass(frozen=True)
class PruneConfig:
    """``ratio`` in [0, 1): share of visual tokens dropped from the draft; ``attention_share`` of the kept ones chosen by attention."""

    ratio: float = 0.0
    attention_share: float = 0.5

    def __post_init__(self) -> None:
        # ConfigError (a SurefastError and a ValueError): --prune-ratio ends here, and the CLI
        # prints a SurefastError as one line. A number first: "x" <= 1.0 is a TypeError.
        hint = "ratio in [0, 1) (0.8-0.9 is SAGE's best), attention_share in [0, 1] (default 0.5)"
        if not isinstance(self.ratio, numbers.Real) or not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"prune ratio must lie in [0, 1), got {self.ratio}", hint)
        if not isinstance(self.attention_share, numbers.Real) or not 0.0 <= self.attention_share <= 1.0:
            raise ConfigError(f"attention_share must lie in [0, 1], got {self.attention_share}", hint)


@dataclass
class PruneReport:
    """What pruning did to one draft prefill."""

    n_visual: int
    n_dropped: int
    kept_slots: list[int] = field(default_factory=list)  # prompt slots of the kept visual tokens
    by_attention: int = 0  # how many of them were chosen by attention (the rest: uniform)


def n_dropped(n_visual: int, ratio: float) -> int:
    """Visual tokens a ratio drops: ``round(ratio * n_visual)``."""
    return round(ratio * n_visual)


def select_kept(
    n_visual: int, n_keep: int, scores: torch.Tensor | None, attention_share: float
) -> tuple[list[int], int]:
    """Indices (into the visual tokens, sorted) of the ``n_keep`` kept ones, and how many attention chose.

    ``scores [n_visual]`` (None: uniform only). Top ``round(attention_share * n_keep)`` by score,
    then ``n_uniform`` evenly spread over the rest: ``rest[floor((j + 1/2) * len(rest) / n_uniform)]``.
    """
    if n_keep >= n_visual:
        return list(range(n_visual)), 0
    n_att = round(attention_share * n_keep) if scores is not None else 0
    chosen = set(scores.topk(n_att).indices.tolist()) if n_att else set()  # type: ignore[union-attr]
    rest = [i for i in range(n_visual) if i not in chosen]
    n_uni = n_keep - n_att
    uniform = [rest[int((j + 0.5) * len(rest) / n_uni)] for j in range(n_uni)] if n_uni else []
    return sorted(chosen | set(uniform)), n_att


def _language_model(model: Any) -> Any:
    return decoder_body(model)  # the text decoder: a VLM's model.language_model (surefast.models.arch)


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run the text decoder of ``model`` with eager attention (the one that returns weights), then restore."""
    lm = _language_model(model)
    before = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        lm.set_attn_implementation(before)


@torch.inference_mode()
def last_token_attention(adapter: Any, cache: KVCache, token: int, position: int) -> torch.Tensor:
    """``[S]`` attention of the last prompt token (``token`` at prompt slot ``position``) to each of the ``S`` cached slots.

    Averaged over layers and heads. ``adapter`` is the draft's :class:`~.adapter.VisionLM`; the
    cache is left as it was.
    """
    past = len(cache)
    allowed = torch.ones(1, past + 1, dtype=torch.bool)
    allowed[0, -1] = False  # the copy sees the keys the original saw (itself included, at slot past - 1)
    pos = torch.tensor([[position]])
    with eager_attention(adapter.model):
        out = adapter.model(
            input_ids=torch.tensor([[token]], device=adapter.device),
            position_ids=adapter.prompt_position_ids(position).to(adapter.device),
            attention_mask=adapter._masks(pos, cache, allowed),
            past_key_values=cache.hf,
            use_cache=True,
            output_attentions=True,
            logits_to_keep=1,
        )
    cache.crop(past)
    weights = torch.stack([a[0, :, -1, :past].float() for a in out.attentions])  # [L, H, S]
    return weights.mean(dim=(0, 1)).cpu()


def prune_visual_cache_(
    adapter: Any, cache: KVCache, ids: torch.Tensor, visual: torch.Tensor, config: PruneConfig
) -> PruneReport:
    """Drop ``round(ratio * n_visual)`` visual slots from a just-prefilled draft ``cache`` (in place).

    ``ids [1, S]`` the prompt, ``visual [S]`` bool: which of its slots are visual.
    """
    slots = visual.nonzero().flatten().tolist()
    n = len(slots)
    drop = n_dropped(n, config.ratio)
    if drop == 0:
        return PruneReport(n, 0, slots, 0)
    scores = None
    if config.attention_share > 0:
        last = ids.shape[1] - 1
        scores = last_token_attention(adapter, cache, int(ids[0, last]), last)[slots]
    kept, by_attention = select_kept(n, n - drop, scores, config.attention_share)
    kept_slots = [slots[i] for i in kept]
    keep = sorted(set(range(ids.shape[1])) - set(slots) | set(kept_slots))
    cache.keep(0, keep)
    return PruneReport(n, drop, kept_slots, by_attention)
