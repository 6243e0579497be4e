"""Shared fixtures: tiny seeded models of every architecture, an isolated cache root."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from surefast.models.tiny import tiny_model, tiny_tokenizer

REAL_HOME = os.environ.get("SUREFAST_HOME")  # the user's cache, kept for real-model tests
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty SUREFAST_HOME, so no test sees another's cache; ``dtype: auto``
    is bf16 (a measurement per test would be slow, and at tiny widths either dtype may win)."""
    home = tmp_path_factory.mktemp("surefast-home")
    monkeypatch.setenv("SUREFAST_HOME", str(home))
    monkeypatch.setenv("SUREFAST_DTYPE_AUTO", "bf16")
    return home


@pytest.fixture
def real_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real model cache (real-model tests pull once and reuse across runs)."""
    if REAL_HOME:
        monkeypatch.setenv("SUREFAST_HOME", REAL_HOME)
    else:
        monkeypatch.delenv("SUREFAST_HOME")


@pytest.fixture(scope="session")
def tiny_tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny() -> Callable[..., Any]:
    """Factory: ``tiny(arch, seed=0, dtype=torch.float32)`` -> a fresh tiny model in eval mode."""

    def make(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
        return tiny_model(arch, seed, dtype)

    return make


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (development machines and CI only); tests needing it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., SimpleNamespace]:
    """Run ``surefast ARGS`` in this process: (return code, stdout, stderr)."""
    from surefast.cli import main

    def go(*args: str) -> SimpleNamespace:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return go


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], AbstractContextManager[None]]:
    """``with full_disk(errno):`` every atomic write (surefast.atomic) fails with that errno."""
    from surefast import atomic

    class FullDisk:  # stands in for open(): the file opens, every write fails
        code = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *args: Any) -> None:
            return None

        def write(self, data: bytes) -> int:
            raise OSError(self.code, os.strerror(self.code))

    @contextmanager
    def patched(code: int) -> Iterator[None]:
        with monkeypatch.context() as patch:
            patch.setattr(FullDisk, "code", code)
            patch.setattr(atomic, "open", FullDisk, raising=False)
            yield

    return patched


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A local wheel folder standing in for PyPI; the machine's pip config is ignored."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("SUREFAST_PIP_ARGS", f"--no-index --find-links {folder}")
    return folder
