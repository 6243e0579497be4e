"""Conformal draft trees (our design, not the SAGE paper's): a node's width is the size of a prediction set.

At every node the draft proposes a distribution ``q`` for the target's next token. Its
*prediction set* at threshold ``tau`` is the draft's top tokens, in order, until their
cumulative probability first reaches ``tau`` (the APS set of Romano et al. 2020, without
randomization). A node's children are its set, so a confident position gets one child and an
uncertain one many; the node budget then keeps the best (node, rank) pairs by path log-prob,
as the dynamic tree does.

``tau`` is calibrated online from verification, by adaptive conformal inference (Gibbs and
Candes 2021): every verified position on the accepted path says whether the target's token was
in the draft's set there (a *miss* if not), and::

    tau <- clip(tau + gamma * (miss - alpha), 0, 1)

so the long-run miss rate stays near ``alpha`` whatever the draft and the text: the width rule
carries a coverage statement, ``P(target token in the set) ~ 1 - alpha``, which the entropy rule
lacks. Positions are checked along the accepted path only (the tree's other positions have no
target token); the set is counted before the budget cut, so the statement is about the draft's
sets, not about which of them fit. The set size depends only on sorted draft probabilities,
never on drawn tokens, so sampling stays lossless (:mod:`surefast.speculate.verify`).
"""

from __future__ import annotations

import torch


def update_threshold(tau: float, covered: tuple[bool, ...], alpha: float, gamma: float) -> float:
    """One adaptive-conformal update per checked position (module docstring)."""
    for hit in covered:
        tau = min(1.0, max(0.0, tau + gamma * ((0.0 if hit else 1.0) - alpha)))
    return tau


def set_sizes(top: torch.Tensor, mass: float) -> torch.Tensor:
    """``[F]``: for each row of ``top [F, k]`` (a distribution's top probabilities, descending), how many
    of them it takes for their sum to reach ``mass``: at least one, at most ``k``, never one of
    probability zero. Sorted values only, never a drawn token."""
    before = top.cumsum(dim=-1) - top  # mass of the tokens ranked above each one
    return ((before < mass) & (top > 0)).sum(dim=-1).clamp_(min=1)


def inside_sets(logp: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``logp [F, k]`` (top log-probabilities, descending) with every rank outside its row's set at -inf.

    Handed to the budgeted allocation (:func:`surefast.speculate.draft.allocate`), which then keeps
    the best (node, rank) pairs by path log-prob within the sets.
    """
    outside = torch.arange(logp.shape[-1], device=logp.device)[None, :] >= sizes[:, None]
    return logp.masked_fill(outside, float("-inf"))
