"""Magnitude, Wanda and SparseGPT pure cores on single layers with random inputs."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.prune import magnitude, sparsegpt, wanda
from surefast.compress.prune.masks import lowest_k, prune_count
from surefast.errors import SurefastError


def _layer(out: int = 16, cols: int = 32, n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [out, in] and correlated, unevenly scaled inputs X [n, in] (as in real LLMs)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, cols, generator=g, dtype=torch.float64)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5 + torch.eye(cols, dtype=torch.float64)
    scale = torch.exp(torch.randn(cols, generator=g, dtype=torch.float64))
    X = (torch.randn(n, cols, generator=g, dtype=torch.float64) @ mix) * scale
    return W, X


def _hessian(X: torch.Tensor) -> torch.Tensor:
    return 2 * X.T @ X / X.shape[0]


def _recon(W: torch.Tensor, Wp: torch.Tensor, X: torch.Tensor) -> float:
    return float(((X @ (W - Wp).T) ** 2).sum())


def test_magnitude_per_layer_and_row() -> None:
    W, _ = _layer()
    Wp, m = magnitude.prune(W, magnitude.MagnitudeConfig(sparsity=0.5))
    assert int(m.sum()) == W.numel() // 2 and (Wp[m] == 0).all() and torch.equal(Wp[~m], W[~m])
    assert W.abs()[m].max() <= W.abs()[~m].min()
    _, m_row = magnitude.prune(W, magnitude.MagnitudeConfig(sparsity=0.25, per="row"))
    assert (m_row.sum(1) == 8).all()
    _, m_nm = magnitude.prune(W, magnitude.MagnitudeConfig(nm="2:4"))
    assert (m_nm.reshape(16, -1, 4).sum(-1) == 2).all()


def test_wanda_mask_equals_naive_per_row_topk() -> None:
    W, X = _layer(seed=3)
    act_sq = (X**2).sum(0)  # [in]: what the pipeline collects
    for s in (0.1, 0.3, 0.5):
        m = wanda.mask(W, act_sq, wanda.WandaConfig(sparsity=s))
        k = prune_count(W.shape[1], s)
        for i in range(W.shape[0]):  # naive: score each weight of the row, drop the k lowest
            scores = [abs(float(W[i, j])) * float(torch.linalg.vector_norm(X[:, j])) for j in range(W.shape[1])]
            pruned = set(sorted(range(len(scores)), key=lambda j: scores[j])[:k])
            assert {j for j in range(W.shape[1]) if m[i, j]} == pruned
        assert (m.sum(1) == k).all()


def test_wanda_nm_and_pure() -> None:
    W, X = _layer(seed=4)
    W0 = W.clone()
    Wp, m = wanda.prune(W, (X**2).sum(0), wanda.WandaConfig(nm="4:8"))
    assert torch.equal(W, W0)  # pure: the input is untouched
    assert (m.reshape(16, -1, 8).sum(-1) == 4).all() and (Wp[m] == 0).all()


def _naive_sparsegpt(W: torch.Tensor, H: torch.Tensor, s: float, bs: int, nm=None, damp=0.01) -> torch.Tensor:
    """Column-by-column OBS with explicit inverses of the remaining sub-Hessian (no Cholesky trick)."""
    W = W.clone()
    H = H.clone() + damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    out, cols = W.shape
    mask = torch.zeros_like(W, dtype=torch.bool)
    inv = [torch.linalg.inv(H[j:, j:]) for j in range(cols)]  # inv[j][0] = row q of H_F^-1, F = {j..}
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        if nm is None:
            sal = torch.stack([W[:, j] ** 2 / inv[j][0, 0] for j in range(i1, i2)], 1)
            k = prune_count(out * i2, s) - prune_count(out * i1, s)
            mask[:, i1:i2] = lowest_k(sal.reshape(-1), k).reshape(sal.shape)
        for j in range(i1, i2):
            if nm is not None and (j - i1) % nm[1] == 0:
                sal = torch.stack([W[:, c] ** 2 / inv[c][0, 0] for c in range(j, j + nm[1])], 1)
                mask[:, j : j + nm[1]] = lowest_k(sal, nm[1] - nm[0])
            w = W[:, j].masked_fill(~mask[:, j], 0)  # the weights pruned now
            W[:, j:] -= w[:, None] * inv[j][0][None, :] / inv[j][0, 0]
            W[:, j] = W[:, j].masked_fill(mask[:, j], 0)
    return W


@pytest.mark.parametrize("bs", [4, 8, 32])
def test_sparsegpt_matches_naive_obs(bs: int) -> None:
    W, X = _layer(seed=5)
    H = _hessian(X)
    Wp, m = sparsegpt.prune(W, H, sparsegpt.SparseGPTConfig(sparsity=0.5, block_size=bs))
    ref = _naive_sparsegpt(W, H, 0.5, bs)
    assert torch.equal(m, ref == 0)
    torch.testing.assert_close(Wp, ref, rtol=1e-8, atol=1e-8)
    assert int(m.sum()) == W.numel() // 2  # exact layer total


def test_sparsegpt_nm_matches_naive() -> None:
    W, X = _layer(seed=6)
    H = _hessian(X)
    Wp, m = sparsegpt.prune(W, H, sparsegpt.SparseGPTConfig(nm="2:4", block_size=8))
    ref = _naive_sparsegpt(W, H, 0.0, 8, nm=(2, 4))
    torch.testing.assert_close(Wp, ref, rtol=1e-8, atol=1e-8)
    assert (m.reshape(16, -1, 4).sum(-1) == 2).all() and (Wp[m] == 0).all()


@pytest.mark.parametrize("s", [0.3, 0.5])
def test_exact_sparsity_odd_blocks(s: float) -> None:
    W, X = _layer(out=7, cols=30, seed=7)
    _, m = sparsegpt.prune(W.float(), _hessian(X).float(), sparsegpt.SparseGPTConfig(sparsity=s, block_size=8))
    assert int(m.sum()) == prune_count(7 * 30, s)


@pytest.mark.parametrize("spec", [dict(sparsity=0.5), dict(nm="2:4")])
def test_sparsegpt_reconstruction_beats_wanda_and_magnitude(spec: dict) -> None:
    for seed in range(3):
        W, X = _layer(out=32, cols=64, n=512, seed=10 + seed)
        W, X = W.float(), X.float()
        sgpt, _ = sparsegpt.prune(W, _hessian(X), sparsegpt.SparseGPTConfig(**spec))
        wnd, _ = wanda.prune(W, (X**2).sum(0), wanda.WandaConfig(**spec))
        mag, _ = magnitude.prune(W, magnitude.MagnitudeConfig(**spec))
        e_s, e_w, e_m = _recon(W, sgpt, X), _recon(W, wnd, X), _recon(W, mag, X)
        assert e_s < e_w and e_s < e_m, (e_s, e_w, e_m)


def test_sparsegpt_dead_inputs_and_errors() -> None:
    W, X = _layer(seed=8)
    X[:, 3] = 0  # an input that never fires
    Wp, m = sparsegpt.prune(W, _hessian(X), sparsegpt.SparseGPTConfig(sparsity=0.5))
    assert (Wp[:, 3] == 0).all() and int(m.sum()) == W.numel() // 2
    assert Wp.dtype == W.dtype
    with pytest.raises(SurefastError):
        sparsegpt.SparseGPTConfig(nm="2:4", block_size=6)
    with pytest.raises(SurefastError):
        sparsegpt.prune(W, -torch.eye(32, dtype=W.dtype), sparsegpt.SparseGPTConfig(damp=0.0))


def test_no_input_layer_falls_back_to_magnitude() -> None:
    """An MoE expert that no calibration token reached must not be zeroed or pruned by ties."""
    W, _ = _layer(seed=9)
    mag = magnitude.mask(W, magnitude.MagnitudeConfig(sparsity=0.5, per="row"))
    assert torch.equal(wanda.mask(W, torch.zeros(32, dtype=W.dtype), wanda.WandaConfig(sparsity=0.5)), mag)
    Wp, m = sparsegpt.prune(W, torch.zeros(32, 32, dtype=W.dtype), sparsegpt.SparseGPTConfig(sparsity=0.5))
    assert torch.equal(m, magnitude.mask(W, magnitude.MagnitudeConfig(sparsity=0.5)))
    assert torch.equal(Wp, W.masked_fill(m, 0))  # identity Hessian: no compensation
