"""On-disk score cache: finished batches as small atomic shards, so re-runs are free and kills cheap.

Layout: ``$SUREFAST_HOME/scores/<task>-<strategy>-<hash>/`` (or under another root: a study's own) with ``manifest.json`` (the key's
fields, versions) and ``shard-*.npz`` files, each holding one finished batch: ``uids`` [b] str,
``logits`` [b, 6] float32, ``labels`` [b] int64, ``shortened`` [b] bool, and ``sha`` [] str, the
sha256 of the other four arrays (:func:`shard_sha`). A shard is written to a temporary name and
renamed into place (``os.replace``), so a reader sees whole shards or none; a kill loses at most
the batch in flight (its temporary file is removed when the folder is next loaded, see
:mod:`surefast.atomic`). Two processes on one key may both compute a missing item; both write
correct shards and the reader keeps the first it meets.

A shard that does not load, or whose arrays do not match its ``sha``, is skipped with a
warning, so its items are scored again. The zip container's CRC already catches most flipped
bytes; ``sha`` also covers what it cannot see (bytes changed before the zip was sealed, a shard
rewritten with other values). Shards from before ``sha`` existed are read as they are. Reading
writes nothing but the sweep of dead writers' temporary files (skipped in a read-only folder);
writers that meet a read-only folder or a full disk say so in one line.

``<hash>`` covers the CacheKey (model, compression, task, strategy, data fingerprints) and the
prompt's fingerprint as scoring sees it (prefix ids, a probe item's rendered ids, the letter
ids, max_length and the format version), so no two different computations share a folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from surefast import __version__
from surefast.atomic import atomic_write_bytes, remove_stale_tmp, write_errors
from surefast.paths import surefast_home
from surefast.scoring.types import CacheKey

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def scores_dir() -> Path:
    """``$SUREFAST_HOME/scores``, not created here: only a writer creates it (a reader may have a
    read-only home)."""
    return surefast_home() / "scores"


_SHARD_ARRAYS = ("uids", "logits", "labels", "shortened")


def shard_sha(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the name, dtype, shape and bytes of a shard's arrays, in a fixed order."""
    digest = hashlib.sha256()
    for name in _SHARD_ARRAYS:
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape}\0".encode() + arr.tobytes())
    return digest.hexdigest()


def shard_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A shard file's bytes: the four arrays and their :func:`shard_sha`."""
    buf = io.BytesIO()
    np.savez(
        buf,
        uids=arrays["uids"],
        logits=arrays["logits"],
        labels=arrays["labels"],
        shortened=arrays["shortened"],
        sha=np.array(shard_sha(arrays)),
    )
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)[:40] or "x"


def key_hash(key: CacheKey, prompt_fp: str) -> str:
    blob = json.dumps({"key": asdict(key), "prompt": prompt_fp, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sha_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class Cached:
    """One cached item's stored values."""

    __slots__ = ("label", "logits", "shortened")

    def __init__(self, logits: np.ndarray, label: int, shortened: bool) -> None:
        self.logits, self.label, self.shortened = logits, label, shortened


class ScoreStore:
    """The shard folder of one (CacheKey, prompt fingerprint)."""

    def __init__(
        self, key: CacheKey, prompt_fp: str, details: dict[str, Any] | None = None, root: str | Path | None = None
    ) -> None:
        self.key = key
        self.prompt_fp = prompt_fp
        self.folder = (
            Path(root) if root is not None else scores_dir()
        ) / f"{_slug(key.task)}-{_slug(key.strategy)}-{key_hash(key, prompt_fp)}"
        self.details = details or {}
        self._counter = 0

    def _write_manifest(self) -> None:
        path = self.folder / MANIFEST
        if path.is_file():
            return
        import torch
        import transformers

        manifest = {
            "format": FORMAT_VERSION,
            "key": asdict(self.key),
            "prompt_fp": self.prompt_fp,
            **self.details,
            "versions": {
                "surefast": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_bytes(path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def load(self) -> dict[str, Cached]:
        """Every item stored so far; unreadable or mismatching shards (should not happen) are
        skipped with a warning, so their items are scored again."""
        found: dict[str, Cached] = {}
        if not self.folder.is_dir():
            return found
        remove_stale_tmp(self.folder)
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in _SHARD_ARRAYS}
                    sha = str(data["sha"]) if "sha" in data.files else None  # None: written before checksums
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                warnings.warn(f"skipping unreadable score shard {shard}: {exc}", stacklevel=2)
                continue
            if sha is not None and sha != shard_sha(arrays):
                warnings.warn(f"skipping score shard {shard}: its arrays do not match its checksum", stacklevel=2)
                continue
            logits, labels, shortened = arrays["logits"].astype(np.float32), arrays["labels"], arrays["shortened"]
            for i, uid in enumerate(arrays["uids"].tolist()):
                if uid not in found:
                    found[uid] = Cached(logits[i], int(labels[i]), bool(shortened[i]))
        return found

    def write(self, uids: list[str], logits: np.ndarray, labels: np.ndarray, shortened: np.ndarray) -> Path:
        """Store one finished batch as a shard, atomically, with its checksum."""
        arrays = {
            "uids": np.array(uids, dtype=str),
            "logits": np.asarray(logits, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64),
            "shortened": np.asarray(shortened, dtype=bool),
        }
        data = shard_bytes(arrays)
        self._counter += 1
        path = self.folder / f"shard-{time.time_ns():020d}-{os.getpid()}-{self._counter:05d}.npz"
        with write_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_manifest()
            atomic_write_bytes(path, data, fsync=True)
        return path


MERGED = "shard-00000000000000000000-merged"  # sorts before every timestamped shard


def compact(folder: Path) -> int:
    """Merge a score folder's shards into one (a study keeps its cache in git: one file per unit,
    not one per batch); returns how many shards were merged (0: nothing to do).

    The merged shard is written (atomically, with its checksum) before the shards it holds are
    deleted, so a kill at any moment loses nothing: at worst an item is stored twice, and
    :meth:`ScoreStore.load` keeps the first copy it meets (the merged one sorts first). Only the
    shards listed at the start are merged and deleted: one a writer adds meanwhile stays. A
    reader that listed a shard just before its deletion skips it with a warning and scores
    its items again. Unreadable or mismatching shards are left as they are."""
    shards = sorted(folder.glob("shard-*.npz"))
    if len(shards) < 2:
        return 0
    parts: list[dict[str, np.ndarray]] = []
    merged: list[Path] = []
    for shard in shards:
        try:
            with np.load(shard, allow_pickle=False) as data:
                arrays = {name: data[name] for name in _SHARD_ARRAYS}
                sha = str(data["sha"]) if "sha" in data.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue
        if sha is not None and sha != shard_sha(arrays):
            continue
        parts.append(arrays)
        merged.append(shard)
    if len(merged) < 2:
        return 0
    seen: set[str] = set()
    keep: list[tuple[int, int]] = []  # (part, row) of each uid's first copy, in load order
    for p, arrays in enumerate(parts):
        for i, uid in enumerate(arrays["uids"].tolist()):
            if uid not in seen:
                seen.add(uid)
                keep.append((p, i))
    together = {name: np.stack([parts[p][name][i] for p, i in keep]) for name in _SHARD_ARRAYS}
    together["uids"] = together["uids"].astype(str)
    data = shard_bytes(together)
    digest = hashlib.sha256(data).hexdigest()[:12]
    with write_errors(folder):
        atomic_write_bytes(folder / f"{MERGED}-{digest}.npz", data, fsync=True)
        for shard in merged:
            if shard.name != f"{MERGED}-{digest}.npz":
                shard.unlink(missing_ok=True)
    return len(merged)
