"""The on-disk score cache: re-runs are free, interrupted runs resume, keys never collide."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from surefast.errors import SurefastError
from surefast.models.arch import decoder_body
from surefast.scoring import CacheKey, ScoreStore, ScoringConfig, score_items, scores_dir

from .helpers import make_items, make_prompt

KEY = CacheKey(model_fp="m0", compression_fp="none", task="cosmosqa", strategy="base", data_fp="d0")
SMALL = ScoringConfig(max_batch_size=2)  # 10 items -> 5 batches


class Boom(RuntimeError):
    pass


def count_calls(model, fail_after: int | None = None) -> dict[str, int]:
    """Count calls of the model and its decoder body; optionally raise on batch call number fail_after + 1."""
    calls = {"model": 0, "body": 0}
    body = decoder_body(model)
    body_forward, model_forward = body.forward, model.forward

    def wrapped_body(*args, **kwargs):
        calls["body"] += 1
        is_batch = calls["body"] > 1  # call 1 is the prefix
        if fail_after is not None and is_batch and calls["body"] - 1 > fail_after:
            raise Boom("killed")
        return body_forward(*args, **kwargs)

    def wrapped_model(*args, **kwargs):
        calls["model"] += 1
        return model_forward(*args, **kwargs)

    body.forward, model.forward = wrapped_body, wrapped_model
    return calls


def test_rerun_is_free_and_identical(tiny, tiny_tok):
    model, prompt, items = tiny("llama"), make_prompt(), make_items(10)
    first = score_items(model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY)
    assert first.n_cached == 0 and first.tokens_scored > 0
    calls = count_calls(model)
    seen = []
    again = score_items(
        model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY, progress=lambda d, t: seen.append((d, t))
    )
    assert calls == {"model": 0, "body": 0}  # the model is not touched
    assert again.n_cached == 10 and again.tokens_scored == 0
    assert seen == [(10, 10)]
    assert np.array_equal(again.logits, first.logits) and again.uids == first.uids
    assert np.array_equal(again.labels, first.labels)
    # a subset in another order is answered from the cache too, in the order asked
    subset = [items[7], items[2]]
    part = score_items(model, tiny_tok, prompt, subset, config=SMALL, cache_key=KEY)
    assert part.n_cached == 2 and np.array_equal(part.logits, first.logits[[7, 2]])


def test_interrupted_run_resumes_where_it_stopped(tiny, tiny_tok):
    prompt, items = make_prompt(), make_items(10)
    uninterrupted = score_items(tiny("qwen2"), tiny_tok, prompt, items, config=SMALL)

    model = tiny("qwen2")
    count_calls(model, fail_after=2)
    with pytest.raises(Boom):
        score_items(model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY)
    folder = next(scores_dir().iterdir())
    assert len(list(folder.glob("shard-*.npz"))) == 2  # the two finished batches survived
    assert not list(folder.glob(".tmp-*"))

    model = tiny("qwen2")
    calls = count_calls(model)
    progress = []
    resumed = score_items(
        model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY, progress=lambda d, t: progress.append(d)
    )
    assert resumed.n_cached == 4
    assert calls["body"] == 1 + 3  # the prefix once, then only the three missing batches
    assert progress == [4, 6, 8, 10]
    assert resumed.uids == uninterrupted.uids
    assert np.abs(resumed.logits - uninterrupted.logits).max() < 1e-5
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"]["task"] == "cosmosqa" and manifest["key"]["model_fp"] == "m0"
    assert {"surefast", "torch", "transformers"} <= set(manifest["versions"])
    assert manifest["letter_ids"] == list(resumed.letter_ids)


@pytest.mark.parametrize(
    "change", ["model_fp", "compression_fp", "task", "strategy", "data_fp", "prompt", "max_length"]
)
def test_different_keys_do_not_collide(change, tiny, tiny_tok):
    model, items = tiny("llama"), make_items(4)
    prompt, config, key = make_prompt(), ScoringConfig(), KEY
    score_items(model, tiny_tok, prompt, items, config=config, cache_key=key)
    if change == "prompt":
        prompt = make_prompt(demos=2)
    elif change == "max_length":
        config = ScoringConfig(max_length=1000)
    else:
        key = CacheKey(**{**KEY.__dict__, change: "other"})
    other = score_items(model, tiny_tok, prompt, items, config=config, cache_key=key)
    assert other.n_cached == 0
    assert len(list(scores_dir().iterdir())) == 2


def test_changed_labels_under_the_same_key_are_an_error(tiny, tiny_tok):
    import dataclasses

    model, prompt, items = tiny("llama"), make_prompt(), make_items(3)
    score_items(model, tiny_tok, prompt, items, cache_key=KEY)
    relabelled = [dataclasses.replace(items[0], label=(items[0].label + 1) % 6), *items[1:]]
    with pytest.raises(SurefastError, match="labels differ"):
        score_items(model, tiny_tok, prompt, relabelled, cache_key=KEY)


def test_duplicate_uids_are_an_error(tiny, tiny_tok):
    items = make_items(2)
    with pytest.raises(SurefastError, match="duplicate"):
        score_items(tiny("llama"), tiny_tok, make_prompt(), [items[0], items[0]])


def _score_ten(tiny, tiny_tok):
    model, prompt, items = tiny("llama"), make_prompt(), make_items(10)
    return model, prompt, items, score_items(model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY)


def test_a_shard_whose_values_changed_is_skipped_and_recomputed(tiny, tiny_tok):
    """A flipped byte inside a shard's logits. The zip's own CRC catches a flip made after the zip
    was sealed, so the shard is re-sealed around the flipped bytes here: what the CRC cannot see
    (bytes changed in memory or in transit before sealing, a shard rewritten by hand)."""
    model, prompt, items, first = _score_ten(tiny, tiny_tok)
    shard = sorted(scores_dir().glob("*/shard-*.npz"))[0]
    with np.load(shard) as data:
        arrays = {name: data[name].copy() for name in data.files}  # "sha" too: it is kept as written
    raw = arrays["logits"].view(np.uint8).reshape(-1)
    raw[5] ^= 0x10  # one bit of one float32's mantissa: a different, perfectly ordinary number
    with shard.open("wb") as fh:
        np.savez(fh, **arrays)
    with np.load(shard) as data:  # the container is fine: it loads, with other values
        assert not np.array_equal(data["logits"], first.logits[: len(data["logits"])])
    calls = count_calls(model)
    with pytest.warns(UserWarning, match="do not match its checksum"):
        again = score_items(model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY)
    assert again.n_cached == 8 and calls["body"] == 1 + 1  # the prefix, then the one lost batch
    assert np.abs(again.logits - first.logits).max() < 1e-5


def test_shards_written_before_checksums_still_load(tiny, tiny_tok):
    model, prompt, items, first = _score_ten(tiny, tiny_tok)
    for shard in scores_dir().glob("*/shard-*.npz"):
        with np.load(shard) as data:
            arrays = {name: data[name] for name in data.files if name != "sha"}
        with shard.open("wb") as fh:
            np.savez(fh, **arrays)
    again = score_items(model, tiny_tok, prompt, items, config=SMALL, cache_key=KEY)
    assert again.n_cached == 10 and np.array_equal(again.logits, first.logits)


def test_looking_up_the_cache_creates_nothing(isolated_home):
    assert scores_dir() == isolated_home / "scores" and not scores_dir().exists()
    assert ScoreStore(KEY, "p0").load() == {}
    assert list(isolated_home.iterdir()) == []


def _shard_args() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    return ["a", "b"], np.zeros((2, 6), np.float32), np.array([0, 1]), np.array([False, True])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_while_caching_is_one_line(full_disk, code):
    store = ScoreStore(KEY, "p0")
    with full_disk(code), pytest.raises(SurefastError, match=r"disk full while writing under .*scores.* GiB free"):
        store.write(*_shard_args())  # the first write is the manifest's
    assert not (store.folder / "manifest.json").exists()
    store.write(*_shard_args())
    with full_disk(code), pytest.raises(SurefastError, match="disk full") as exc:
        store.write(*_shard_args())  # now the shard's
    assert str(store.folder) in exc.value.message
    assert len(list(store.folder.glob("shard-*.npz"))) == 1 and not list(store.folder.glob(".*.tmp"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_cache_refuses_writes_in_one_line(monkeypatch, code):
    from surefast import atomic

    def refused(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(atomic.os, "replace", refused)
    with pytest.raises(SurefastError, match="the folder is read-only") as exc:
        ScoreStore(KEY, "p0").write(*_shard_args())
    assert "SUREFAST_HOME" in (exc.value.hint or "")
