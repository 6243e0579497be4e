"""The shared factorisation: an upper triangular U with U^T U = H^-1, checked against H itself."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.linalg import inverse_upper_cholesky


@pytest.mark.parametrize("n", [1, 7, 64, 130])
def test_inverse_upper_cholesky_inverts(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    X = torch.randn(3 * n + 5, n, generator=g, dtype=torch.float64)
    H = 2 * X.T @ X / X.shape[0] + 1e-3 * torch.eye(n, dtype=torch.float64)
    U = inverse_upper_cholesky(H)
    assert U is not None
    assert torch.equal(U, U.triu()) and bool((U.diagonal() > 0).all())
    torch.testing.assert_close(U.T @ U @ H, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-8)


def test_inverse_upper_cholesky_reports_indefinite() -> None:
    assert inverse_upper_cholesky(torch.tensor([[1.0, 2.0], [2.0, 1.0]])) is None
