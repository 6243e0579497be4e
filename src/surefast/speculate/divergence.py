"""Where a greedy speculative output leaves the target's own, and whether that is a tie.

Greedy speculative decoding is lossless in exact arithmetic. In bf16 the tree pass (many
positions at once) and the one-token pass round differently, so where the target's two best
logits are tied or nearly so the two runs may pick different tokens and then write different
continuations. :func:`divergence` finds the first differing token and the target's top-2 logit
gap before it, computed the plain way (one full forward over the shared prefix). A gap within
two rounding steps of the model's dtype at the top logit's magnitude (``2 * eps * |logit|``:
about 0.3 for a bf16 logit of 20) is such a tie; a larger one would be a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Divergence:
    position: int  # index of the first differing new token
    top2_margin: float  # the target's top-2 logit gap there (plain forward)
    tolerance: float = 0.0  # two rounding steps of the model's dtype at the top logit

    @property
    def is_tie(self) -> bool:
        return self.top2_margin <= self.tolerance


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (the shorter length if one is a prefix), or None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.inference_mode()
def top2(model: Any, prompt: torch.Tensor, reference: list[int], position: int) -> tuple[float, float]:
    """The target's two best logits before ``reference[position]``. ``prompt [1, P]``."""
    prefix = torch.tensor([reference[:position]], dtype=torch.long, device=prompt.device)
    ids = torch.cat([prompt, prefix], dim=1)  # [1, P + position]
    best, second = model(input_ids=ids).logits[0, -1].float().topk(2).values.tolist()
    return best, second


def divergence(model: Any, prompt: torch.Tensor, output: list[int], reference: list[int]) -> Divergence | None:
    """None when ``output == reference``; else where they part and the target's margin there."""
    pos = first_difference(output, reference)
    if pos is None:
        return None
    if pos >= len(reference):  # the reference stopped (end of sequence) where the output went on
        return Divergence(pos, float("inf"))
    best, second = top2(model, prompt, reference, pos)
    eps = torch.finfo(next(model.parameters()).dtype).eps
    return Divergence(pos, best - second, 2 * eps * abs(best))
