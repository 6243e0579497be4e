"""Sparsity masks from a score matrix: unstructured (per layer or per row) and semi-structured N:M.

Every pruning method here reduces to "score each weight, drop the lowest". These pure functions
turn a score matrix ``S`` ``[out, in]`` into a boolean **prune mask** (``True`` = the weight is
set to zero), with exact counts:

- **Count.** A group of ``n`` weights pruned at ratio ``s`` loses ``k = floor(s * n + 1e-6)``
  weights (the epsilon absorbs float representation, so ``0.3 * 10`` gives 3 and ``0.29 * 100``
  gives 29, not 28). When ``s * n`` is an integer the achieved sparsity equals the request
  exactly; otherwise it is the largest achievable value below it (never above).
- **Ties.** Scores are sorted with a stable sort, so among equal scores the weight with the
  lower flat index (earlier row, then earlier column) is pruned first. Deterministic, and the
  same rule in every method.
- **N:M** (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks", the 2:4 pattern of
  NVIDIA Ampere sparse tensor cores): in every row, each run of ``M`` consecutive input columns
  keeps its ``N`` highest-scoring weights and prunes the other ``M - N``. Requires
  ``in % M == 0``.
"""

from __future__ import annotations

import math

import torch

from surefast.errors import SurefastError

_EPS = 1e-6


def prune_count(n: int, sparsity: float) -> int:
    """How many of ``n`` weights are pruned at ratio ``sparsity``: ``floor(sparsity * n)``."""
    check_sparsity(sparsity)
    return min(n, math.floor(sparsity * n + _EPS))


def check_sparsity(sparsity: float) -> None:
    try:
        ok = 0.0 <= float(sparsity) < 1.0
    except (TypeError, ValueError):  # not a number ("x", a list): one line, not float()'s traceback
        ok = False
    if not ok:
        raise SurefastError(f"sparsity must be in [0, 1), got {sparsity!r}", "use e.g. --sparsity 0.5 for 50%")


def parse_nm(nm: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (N kept out of every M); ``None`` stays ``None``."""
    if nm is None:
        return None
    if isinstance(nm, str):
        try:
            n_str, m_str = nm.split(":")
            n, m = int(n_str), int(m_str)
        except ValueError:
            raise SurefastError(f"cannot read N:M pattern {nm!r}", "write it as N:M, e.g. 2:4 or 4:8") from None
    else:
        try:
            n, m = (int(v) for v in nm)
        except (TypeError, ValueError):  # a number (YAML reads 2:4 as 124), or not two whole numbers
            raise SurefastError(f"cannot read N:M pattern {nm!r}", "write it as N:M, e.g. 2:4 or 4:8") from None
    if not 0 < n < m:
        raise SurefastError(f"N:M pattern {n}:{m} needs 0 < N < M", "e.g. 2:4 keeps 2 of every 4 weights")
    return n, m


def lowest_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Prune mask of the ``k`` lowest entries along the last dim (ties: earlier index first).

    Linear time (``kthvalue`` gives the threshold, ties at the threshold are taken in index
    order), so whole-layer masks of 10^7 weights need no full sort.
    """
    n = score.shape[-1]
    if k <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = score.kthvalue(k, dim=-1, keepdim=True).values  # the k-th smallest
    below = score < threshold
    tie = score == threshold
    need = k - below.sum(-1, keepdim=True)  # how many of the tied entries to take
    return below | (tie & (tie.cumsum(-1) <= need))


def layer_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``floor(sparsity * numel)`` lowest scores of the whole matrix. ``[out, in]`` -> bool."""
    k = prune_count(score.numel(), sparsity)
    return lowest_k(score.reshape(-1), k).reshape(score.shape)


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``floor(sparsity * in)`` lowest scores of every row (Wanda's comparison group)."""
    return lowest_k(score, prune_count(score.shape[-1], sparsity))


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive scores in each row; prune the rest."""
    n, m = parse_nm((n, m))  # type: ignore[misc]
    out, cols = score.shape
    if cols % m:
        raise SurefastError(
            f"N:M sparsity {n}:{m} needs the input width ({cols}) to be a multiple of {m}",
            "choose an M that divides every layer's input width, or use unstructured sparsity",
        )
    groups = score.reshape(out, cols // m, m)  # [out, G, M]
    return lowest_k(groups, m - n).reshape(out, cols)


def sparsity_mask(
    score: torch.Tensor, sparsity: float = 0.5, nm: tuple[int, int] | None = None, per: str = "row"
) -> torch.Tensor:
    """One entry point: N:M when ``nm`` is given, else unstructured per ``"row"`` or ``"layer"``."""
    if nm is not None:
        return nm_mask(score, *nm)
    if per == "row":
        return row_mask(score, sparsity)
    if per == "layer":
        return layer_mask(score, sparsity)
    raise SurefastError(f"unknown pruning comparison group {per!r}", "use 'row' or 'layer'")


def achieved_sparsity(weight: torch.Tensor) -> float:
    """Share of exact zeros in ``weight``."""
    return float((weight == 0).sum()) / max(1, weight.numel())
