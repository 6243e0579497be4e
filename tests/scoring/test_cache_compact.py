"""compact(): a unit's score shards merged into one (a study keeps its cache in git), losing nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from surefast.scoring import CacheKey, ScoreStore
from surefast.scoring.cache import MERGED, compact

KEY = CacheKey(model_fp="m0", compression_fp="none", task="mmlu", strategy="base", data_fp="d0")


def _write(store: ScoreStore, uids: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(uids)
    store.write(uids, rng.normal(size=(n, 6)), rng.integers(0, 6, n), rng.random(n) < 0.5)


def _values(store: ScoreStore) -> dict[str, tuple[list[float], int, bool]]:
    return {u: (c.logits.tolist(), c.label, c.shortened) for u, c in store.load().items()}


def test_compact_keeps_every_item_and_the_first_copy_of_each(tmp_path: Path) -> None:
    store = ScoreStore(KEY, "p0", root=tmp_path)
    _write(store, ["a", "b"], 0)
    _write(store, ["c"], 1)
    _write(store, ["b", "d"], 2)  # "b" again, other values: the first copy is the one read
    before = _values(store)
    assert compact(store.folder) == 3
    (shard,) = store.folder.glob("shard-*.npz")
    assert shard.name.startswith(MERGED)
    assert _values(store) == before
    assert compact(store.folder) == 0  # one shard: nothing to do
    _write(store, ["e"], 3)  # a later batch joins the merged shard on the next compaction
    after = _values(store)
    assert compact(store.folder) == 2 and len(list(store.folder.glob("shard-*.npz"))) == 1
    assert _values(store) == after and set(after) == {"a", "b", "c", "d", "e"}


def test_a_kill_between_writing_the_merged_shard_and_deleting_the_rest_loses_nothing(tmp_path: Path) -> None:
    store = ScoreStore(KEY, "p0", root=tmp_path)
    _write(store, ["a", "b"], 0)
    _write(store, ["c"], 1)
    before = _values(store)
    keep = tmp_path / "originals"
    shutil.copytree(store.folder, keep)
    compact(store.folder)
    for shard in keep.glob("shard-*.npz"):  # as if the deletions never happened
        shutil.copy(shard, store.folder / shard.name)
    assert _values(store) == before


def test_an_unreadable_shard_is_left_alone(tmp_path: Path) -> None:
    store = ScoreStore(KEY, "p0", root=tmp_path)
    _write(store, ["a"], 0)
    _write(store, ["b"], 1)
    bad = store.folder / "shard-99999999999999999999-1-00001.npz"
    bad.write_bytes(b"not a zip")
    assert compact(store.folder) == 2
    with pytest.warns(UserWarning, match="skipping unreadable score shard"):
        assert bad.is_file() and set(_values(store)) == {"a", "b"}


def test_the_cache_root_is_where_the_config_says(tmp_path: Path, isolated_home: Path) -> None:
    store = ScoreStore(KEY, "p0", root=tmp_path / "study-scores")
    _write(store, ["a"], 0)
    assert store.folder.parent == tmp_path / "study-scores"
    assert not (isolated_home / "scores").exists()
