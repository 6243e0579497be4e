"""Checked inputs for the conformal module: probabilities ``[N, K]``, labels ``[N]``, alphas.

Everything a user can get wrong raises :class:`~surefast.errors.SurefastError` here, once, so the
pure functions behind it can assume clean float64 arrays.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from surefast.errors import SurefastError

SUM_ATOL = 1e-5  # rows of a float32 softmax sum to 1 within ~1e-7; 1e-5 still catches real mistakes


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row max so large logits cannot overflow."""
    x = np.asarray(logits, dtype=np.float64)
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def check_probs(x: np.ndarray, *, from_logits: bool = False) -> np.ndarray:
    """Return ``x`` (or its softmax when ``from_logits``) as float64 ``[N, K]`` probabilities.

    Raises SurefastError for a wrong shape, NaN/inf, negative entries or rows that do not sum
    to 1 within ``SUM_ATOL``. Rows are then divided by their sums: the scores compute ``1 - m`` as
    the sum of the other labels' probabilities, which is exact only for rows that sum to 1 (a
    float32 softmax is off by ~1e-7, which would swamp a probability of 1e-12).
    """
    arr = np.asarray(x, dtype=np.float64)
    what = "logits" if from_logits else "probabilities"
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise SurefastError(f"{what} must be a 2-D array [N, K] with N >= 1 and K >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise SurefastError(f"{what} contain NaN or inf in {bad} of {arr.shape[0]} rows")
    if from_logits:
        return softmax(arr)
    if (arr < 0).any():
        raise SurefastError(f"probabilities contain negative entries (min {arr.min():.3g})")
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_ATOL
    if off.any():
        i = int(np.argmax(off))
        raise SurefastError(
            f"probabilities must sum to 1 per row: {int(off.sum())} rows do not (row {i} sums to {sums[i]:.6g})",
            hint="pass logits with from_logits=True to apply the softmax here",
        )
    return arr / sums[:, None]


def check_labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    """Return ``labels`` as int64 ``[n]`` with every value in ``0..k-1``."""
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise SurefastError(f"labels must have shape ({n},) to match the probabilities, got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise SurefastError("labels contain NaN or inf")
        if (arr != np.round(arr)).any():
            raise SurefastError("labels must be integer option indices")
    elif arr.dtype.kind not in "iu":
        raise SurefastError(f"labels must be integer option indices, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if n and (out.min() < 0 or out.max() >= k):
        raise SurefastError(f"labels must lie in 0..{k - 1}, got values from {out.min()} to {out.max()}")
    return out


def check_alphas(alphas: float | Iterable[float]) -> tuple[float, ...]:
    """Return the miscoverage levels as a tuple of floats, each strictly between 0 and 1."""
    out = tuple(float(a) for a in alphas) if isinstance(alphas, Iterable) else (float(alphas),)
    if not out:
        raise SurefastError("give at least one alpha")
    for a in out:
        if not 0.0 < a < 1.0:
            raise SurefastError(f"alpha must lie strictly between 0 and 1, got {a}")
    if len(set(out)) != len(out):
        raise SurefastError(f"alphas must be distinct, got {list(out)}")
    return out
