"""Numerics GPTQ and SparseGPT share: the upper Cholesky factor of ``H^-1``, and the thread
setting of their column sweeps.

Both papers spread a column's error over the columns not yet processed with the rows of ``U``,
the upper Cholesky factor of the inverse Hessian (``H^-1 = U^T U``), computed as in their
reference code: ``cholesky(H)``, ``cholesky_inverse``, ``cholesky(., upper=True)``. (A reversed
Cholesky plus one triangular solve gives the same factor with the same flop count; it was not
faster here.) The factorisation uses every thread; the sweep that follows is thousands of tiny
ops and runs on one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def inverse_upper_cholesky(H: torch.Tensor) -> torch.Tensor | None:
    """``U`` upper triangular with ``H^-1 = U^T U``, or ``None`` when ``H`` is not positive definite.

    ``H [n, n]`` symmetric; the result has ``H``'s dtype and device.
    """
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        return None
    U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)  # [n, n]
    return U if int(info) == 0 else None


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run a column sweep on one thread: its thousands of tiny ops cost more in intra-op thread
    hand-offs than in work (docs/compress.md, "CPU notes")."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
