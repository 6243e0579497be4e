"""Locating where a greedy speculative output leaves the target's, and calling ties ties."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from surefast.speculate.divergence import divergence, first_difference


class FixedLogits(nn.Module):
    """A 'model' whose next-token logits are always ``row`` (in ``dtype``); records its inputs."""

    def __init__(self, row: list[float], dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.row = torch.tensor(row, dtype=dtype)
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        self.seen.append(input_ids)
        return SimpleNamespace(logits=self.row.expand(1, input_ids.shape[1], -1))


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 5, 3], 1), ([1, 2], [1, 2, 3], 2), ([], [], None), ([4], [], 0)],
)
def test_first_difference(a: list[int], b: list[int], want: int | None) -> None:
    assert first_difference(a, b) == want


def test_divergence_reads_the_targets_margin_after_the_shared_prefix() -> None:
    model = FixedLogits([20.0, 20.0625, 3.0], torch.bfloat16)  # bf16 rounds 20.0625 to 20.0: a tie
    prompt = torch.tensor([[7, 8]])
    div = divergence(model, prompt, [1, 2, 3], [1, 2, 4, 5])
    assert div is not None and div.position == 2
    assert model.seen[-1].tolist() == [[7, 8, 1, 2]]  # the prompt, then the shared prefix only
    assert div.top2_margin == 0.0 and div.is_tie
    assert divergence(model, prompt, [1, 2], [1, 2]) is None


def test_a_clear_preference_is_not_a_tie() -> None:
    bf16 = divergence(FixedLogits([20.0, 18.0, 3.0], torch.bfloat16), torch.tensor([[1]]), [5], [6])
    assert bf16 is not None and bf16.top2_margin == 2.0 and not bf16.is_tie
    fp32 = divergence(FixedLogits([20.0, 19.99, 3.0], torch.float32), torch.tensor([[1]]), [5], [6])
    assert fp32 is not None and not fp32.is_tie  # 0.01 is far above fp32 rounding at 20
