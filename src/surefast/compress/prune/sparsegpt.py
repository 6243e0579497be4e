"""SparseGPT: one-shot pruning with an OBS weight update (Frantar & Alistarh, ICML 2023).

For a linear layer ``W`` ``[out, in]`` and the Hessian of its layer-wise reconstruction loss
``H = 2 X^T X / n`` ``[in, in]`` (X: calibration inputs, ``[n, in]``), columns are processed left
to right. Pruning weight ``w_q`` of a row is compensated on the not-yet-processed columns ``F``
of that row by the Optimal Brain Surgeon update (paper eq. 3, Hassibi & Stork 1993)
``delta_F = -(w_q / [H_F^-1]_qq) * (H_F^-1)_{q,:}``. Paper section 3 makes this cheap: all rows
share the column order, so the rows of every ``H_F^-1`` are the rows of the upper Cholesky factor
``U`` of ``H^-1`` (``H^-1 = U^T U``), scaled by ``1 / U_qq``; updates are applied lazily in blocks
(Algorithm 1). Mask selection is adaptive (section 3.3): at the start of each block of
``block_size`` columns, the weights with the lowest OBS saliency ``w^2 / U_qq^2`` (paper eq. 2,
evaluated on the already-updated weights) are pruned; for N:M the choice is made per row on each
group of ``M`` columns when the sweep reaches it.

Our choices where the paper is silent or loose:

- Dampening ``H += damp * mean(diag H) * I`` (reference code, default 0.01); inputs that
  never fire (``H_jj = 0``) get ``H_jj = 1`` and their weights are zeroed (they cannot matter).
  A layer that saw no input at all (an MoE expert no calibration token was routed to) uses
  ``H = I`` instead of being zeroed: its mask is then a magnitude mask.
- Exact counts: the reference uses a per-block threshold, so achieved sparsity only approximates
  the request. We allot block ``[i1, i2)`` exactly
  ``floor(s * out * i2) - floor(s * out * i1)`` pruned weights (lowest saliency in the block,
  all rows together, stable ties as in :mod:`~surefast.compress.prune.masks`), so the layer
  total is exactly ``floor(s * out * in)``.
- Arithmetic in fp32 (fp64 if given fp64); the result is cast back to the weight's dtype.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, register
from surefast.compress.linalg import inverse_upper_cholesky
from surefast.compress.prune.masks import check_sparsity, lowest_k, nm_mask, parse_nm, prune_count
from surefast.compress.prune.method import PruneMethod
from surefast.errors import SurefastError


@dataclass(frozen=True)
class SparseGPTConfig(CompressionConfig):
    """``sparsity`` (ignored when ``nm`` is set), ``nm`` e.g. ``"2:4"``, ``block_size`` (lazy
    update block, a multiple of M for N:M), ``damp`` (dampening, share of mean diag H)."""

    method: ClassVar[str] = "sparsegpt"
    sparsity: float = 0.5
    nm: str | None = None
    block_size: int = 128
    damp: float = 0.01

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        nm = parse_nm(self.nm)
        # numbers first: "x" < 1 would be a TypeError, not a one-line SurefastError
        if not isinstance(self.block_size, numbers.Real) or self.block_size < 1 or (nm and self.block_size % nm[1]):
            raise SurefastError(
                f"SparseGPT block_size {self.block_size} must be a positive multiple of M",
                "use the default block_size 128",
            )
        if not isinstance(self.damp, numbers.Real) or self.damp < 0:
            raise SurefastError(f"damp must be >= 0, got {self.damp}", "the default is 0.01")


def damped_hessian(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H + damp * mean(diag H) * I with dead inputs set to 1, dead mask [in])``."""
    H = hessian.detach().clone()
    if not bool((torch.diag(H) != 0).any()):  # no input at all (an unrouted MoE expert): magnitude-like OBS
        H = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    dead = torch.diag(H) == 0  # [in]
    H[dead, dead] = 1
    H.diagonal().add_(damp * torch.diag(H).mean())
    return H, dead


def prune(weight: torch.Tensor, hessian: torch.Tensor, config: SparseGPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure core: ``(pruned and updated copy of weight, prune mask)``.

    weight ``[out, in]``, hessian ``[in, in]`` (``2 X^T X / n``); the inputs are left untouched.
    """
    dt = torch.float64 if weight.dtype == torch.float64 else torch.float32
    W = weight.detach().clone().to(dt)  # [out, in]
    H, dead = damped_hessian(hessian.to(dt), config.damp)
    W[:, dead] = 0
    U = inverse_upper_cholesky(H)  # [in, in]
    if U is None:
        raise SurefastError(
            "SparseGPT: the layer Hessian is not positive definite even after dampening",
            "raise damp (e.g. 0.1) or use more calibration samples",
        )
    nm = parse_nm(config.nm)
    out, cols = W.shape
    if nm is not None and cols % nm[1]:
        nm_mask(W[:1], *nm)  # raises the shared, explained error
    bs = config.block_size
    prune_mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        W1 = W[:, i1:i2].clone()  # [out, B]
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]  # [B, B]
        d = torch.diag(U1)  # [B]
        if nm is None:
            k = prune_count(out * i2, config.sparsity) - prune_count(out * i1, config.sparsity)
            mask1 = lowest_k((W1**2 / d[None, :] ** 2).reshape(-1), k).reshape(W1.shape)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                mask1[:, i : i + nm[1]] = nm_mask(W1[:, i : i + nm[1]] ** 2 / d[None, i : i + nm[1]] ** 2, *nm)
            w = W1[:, i]  # [out]
            q = w.masked_fill(mask1[:, i], 0)
            Q1[:, i] = q
            err = (w - q) / d[i]  # [out]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        prune_mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W.to(weight.dtype), prune_mask


@register(SparseGPTConfig, needs=("hessian",))
class SparseGPTMethod(PruneMethod):
    """Pipeline entry: one linear layer's fp32 weight ``[out, in]`` and its statistics."""

    def prune_weight(self, weight: torch.Tensor, stats: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return prune(weight, stats.hessian, self.config)  # type: ignore[arg-type]
