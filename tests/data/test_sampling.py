"""The deterministic primitives behind sampling, demos, shuffling and distractors."""

from __future__ import annotations

import pytest

from surefast.data.sampling import (
    demo_indices,
    permutation,
    pick_others,
    place_label,
    sample_indices,
    stable_key,
)
from surefast.errors import SurefastError


def test_stable_key_is_a_fixed_function_of_its_text():
    # Golden values: a change here changes every sample and shuffle (bump DATA_VERSION if intended).
    assert stable_key("sample", "mmlu", 0, "mmlu-0") == stable_key("sample", "mmlu", "0", "mmlu-0")
    assert stable_key("a", "b") == 0xF04CDCED9736A69D
    assert stable_key("a", "b") != stable_key("ab") != stable_key("b", "a")


def test_sampling_is_nested_and_seeded():
    uids = [f"t-{i}" for i in range(500)]
    big = sample_indices(uids, 200, "t", 0)
    assert sample_indices(uids, 20, "t", 0) == big[:20] and len(set(big)) == 200
    assert sample_indices(uids, 20, "t", 1) != big[:20]
    assert sorted(sample_indices(uids, None, "t", 3)) == list(range(500))


def test_demos_prefer_short_items_and_ignore_the_seed():
    uids = [f"t-{i}" for i in range(100)]
    lengths = [1000 if i % 5 == 0 else 10 for i in range(100)]  # every fifth item is long
    demos = demo_indices(uids, lengths, 5, "t")
    assert len(set(demos)) == 5 and all(i % 5 for i in demos)
    assert demo_indices(uids, lengths, 0, "t") == []
    few = demo_indices(uids[:3], [1000, 10, 10], 5, "t")  # fewer candidates than demos: all of them
    assert sorted(few) == [0, 1, 2] and few[2] == 0  # the long one last


def test_permutations_cover_every_order_evenly():
    seen = [permutation(4, "shuffle", i) for i in range(4000)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in seen)
    first = [p.index(0) for p in seen]  # where option 0 (e.g. the right answer) lands
    for position in range(4):
        assert 850 < first.count(position) < 1150
    assert len(set(seen)) == 24
    assert place_label((2, 0, 3, 1), 0, 3) == (2, 1, 3, 0)


def test_pick_others_respects_accept_and_fails_clearly():
    picked = pick_others(10, 2, lambda j, chosen: j % 2 == 0 and j != 4, "d", "x")
    assert len(picked) == 2 and all(j % 2 == 0 and j != 4 for j in picked) and picked[0] != picked[1]
    assert pick_others(10, 2, lambda j, c: j > 0, "d", "x") == pick_others(10, 2, lambda j, c: j > 0, "d", "x")
    with pytest.raises(SurefastError, match="could not find 2 distinct distractors"):
        pick_others(3, 2, lambda j, chosen: j == 1, "d", "x", max_tries=200)
