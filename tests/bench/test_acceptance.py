"""surefast.bench.acceptance: the totals against a hand count, and the config's one-line errors."""

from __future__ import annotations

import math

import pytest

from surefast.bench.acceptance import PROMPTS, AcceptanceConfig, summarize
from surefast.errors import SurefastError


def test_summarize_counts_by_hand() -> None:
    # three target forwards: nothing accepted (1 token), 3 accepted (+ bonus), 1 accepted (+ bonus)
    got = summarize([(0, 1), (3, 4), (1, 2)])
    assert got["steps"] == 3 and got["tokens"] == 7
    assert got["mean_accepted"] == pytest.approx(4 / 3)
    assert got["tokens_per_forward"] == pytest.approx(7 / 3)
    assert got["zero_share"] == pytest.approx(1 / 3)
    empty = summarize([])
    assert empty["steps"] == 0 and all(
        math.isnan(empty[k]) for k in ("mean_accepted", "tokens_per_forward", "zero_share")
    )


def test_config_bounds() -> None:
    assert AcceptanceConfig("m").prompts == len(PROMPTS)
    for bad in ({"prompts": len(PROMPTS) + 1}, {"prompts": True}, {"max_new_tokens": 0}):
        with pytest.raises(SurefastError, match="acceptance: "):
            AcceptanceConfig("m", **bad)  # type: ignore[arg-type]
    with pytest.raises(SurefastError, match="draft"):
        AcceptanceConfig("  ")
