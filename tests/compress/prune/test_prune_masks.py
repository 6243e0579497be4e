"""Masks: exact counts per layer / row / N:M group, stable tie-breaking, clear errors."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.prune.masks import (
    achieved_sparsity,
    layer_mask,
    nm_mask,
    parse_nm,
    prune_count,
    row_mask,
    sparsity_mask,
)
from surefast.errors import SurefastError


@pytest.mark.parametrize("s", [0.0, 0.1, 0.2, 0.29, 0.3, 0.4, 0.5, 0.7])
def test_row_mask_exact_per_row(s: float) -> None:
    score = torch.rand(7, 100, generator=torch.Generator().manual_seed(0))
    m = row_mask(score, s)
    assert (m.sum(1) == round(s * 100)).all()  # s * 100 is an integer: exact in every row
    kept_min = score.masked_fill(m, float("inf")).min(1).values
    pruned_max = score.masked_fill(~m, -float("inf")).max(1).values
    assert (pruned_max <= kept_min).all()  # the lowest are pruned


@pytest.mark.parametrize("s", [0.1, 0.3, 0.5])
def test_layer_mask_exact(s: float) -> None:
    score = torch.randn(16, 30, generator=torch.Generator().manual_seed(1))
    m = layer_mask(score, s)
    assert int(m.sum()) == round(s * 480)
    assert score[m].max() <= score[~m].min()


def test_count_floors_non_integers() -> None:
    assert prune_count(10, 0.25) == 2  # floor(2.5): never above the request
    assert prune_count(100, 0.29) == 29  # float 28.999999999999996 still gives 29
    assert prune_count(7, 0.0) == 0


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_per_group(nm: tuple[int, int]) -> None:
    n, m = nm
    score = torch.rand(5, 32, generator=torch.Generator().manual_seed(2))
    mask = nm_mask(score, n, m)
    assert (mask.reshape(5, -1, m).sum(-1) == m - n).all()
    for g in range(32 // m):  # the kept ones are the top-n of each group
        block = score[:, g * m : (g + 1) * m]
        top = block.topk(n, dim=1).indices
        assert not mask[:, g * m : (g + 1) * m].gather(1, top).any()


def test_ties_prune_earlier_index_first() -> None:
    score = torch.ones(2, 8)
    assert row_mask(score, 0.5)[0].tolist() == [True] * 4 + [False] * 4
    assert nm_mask(score, 2, 4)[1].tolist() == [True, True, False, False] * 2
    assert layer_mask(score, 0.25).flatten().tolist() == [True] * 4 + [False] * 12


def test_errors_and_parsing() -> None:
    assert parse_nm("2:4") == (2, 4) and parse_nm(None) is None
    for bad in ("2-4", "4:2", "0:4"):
        with pytest.raises(SurefastError):
            parse_nm(bad)
    with pytest.raises(SurefastError):
        nm_mask(torch.rand(2, 10), 2, 4)
    with pytest.raises(SurefastError):
        sparsity_mask(torch.rand(2, 8), 1.0)
    with pytest.raises(SurefastError):
        sparsity_mask(torch.rand(2, 8), 0.5, per="column")
    assert achieved_sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5


def test_lowest_k_matches_stable_sort() -> None:
    from surefast.compress.prune.masks import lowest_k

    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        score = torch.randint(0, 4, (3, 17), generator=g).float()  # many ties
        k = int(torch.randint(0, 18, (1,), generator=g))
        ref = torch.zeros_like(score, dtype=torch.bool)
        ref.scatter_(-1, torch.sort(score, dim=-1, stable=True).indices[:, :k], True)
        assert torch.equal(lowest_k(score, k), ref)
