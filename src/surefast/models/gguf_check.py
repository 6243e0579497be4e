"""A structural check of a ``.gguf`` file before transformers reads it.

transformers (and the ``gguf`` reader under it) meets an empty, foreign or cut-off file with a
traceback from deep inside numpy. This walks the file's layout instead (GGUF v2/v3: magic,
version, counts, metadata, tensor table, aligned tensor data; see ggml's ``docs/gguf.md``)
without reading any tensor data, and refuses in one line naming the file and what is wrong.
Passing the check says the file is whole, not that transformers supports its architecture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from surefast.errors import SurefastError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # ggml's, when the file has no general.alignment
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_NESTING = 8  # arrays of arrays: real files nest one level; deeper is garbage, not a model
_MAX_DIMS = 4  # GGML_MAX_DIMS
_HINT = "download the file again and compare its size and sha256 with the source's"


@dataclass(frozen=True)
class GgufLayout:
    """What the check read: enough to say the file is whole."""

    version: int
    tensors: int
    metadata_keys: int
    data_start: int  # byte offset of the aligned tensor data section
    file_bytes: int  # == data_start + the end of the last tensor, up to trailing padding


class _Truncated(Exception):
    """The layout asks for bytes past the end of the file (``what`` names the part)."""

    def __init__(self, what: str, at: int) -> None:
        super().__init__(what)
        self.what = what
        self.at = at


class _Corrupt(Exception):
    """The layout is self-contradictory (a value no writer produces)."""


class _NotGguf(Exception):
    """The magic bytes are not GGUF's."""


class _Reader:
    """Bounded little/big-endian reads: every read past ``size`` is a :class:`_Truncated`."""

    def __init__(self, fh: BinaryIO, size: int, endian: str) -> None:
        self.fh, self.size, self.endian, self.pos = fh, size, endian, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.size:
            raise _Truncated(what, self.pos)
        data = self.fh.read(n)
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self.size:  # a count read from garbage is often astronomically large
            raise _Truncated(what, self.pos)
        self.pos += n
        self.fh.seek(self.pos)

    def scalar(self, fmt: str, what: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(self.endian + fmt, self.take(struct.calcsize(fmt), what))[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("I", what))

    def u64(self, what: str) -> int:
        return int(self.scalar("Q", what))

    def string(self, what: str) -> bytes:
        return self.take(self.u64(what), what)

    def value(self, kind: int, what: str, depth: int = 0) -> int | float | bool | bytes | None:
        """Read one metadata value; arrays are skipped (their content is not needed here)."""
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], what)
        if kind == _STRING:
            return self.string(what)
        if kind != _ARRAY:
            raise _Corrupt(f"{what} has unknown value type {kind}")
        if depth >= _MAX_NESTING:
            raise _Corrupt(f"{what} nests arrays {depth} deep")
        item, count = self.u32(what), self.u64(what)
        if item in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[item]), what)
        else:
            for _ in range(count):  # each item takes >= 8 bytes, so a garbage count hits the end quickly
                self.value(item, what, depth + 1)
        return None


def _tensor_bytes(kind: int, dims: list[int], name: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError) as exc:
        raise _Corrupt(f"tensor {name} has unknown type {kind}") from exc
    elements = 1
    for d in dims:
        elements *= d
    if elements % block:
        raise _Corrupt(f"tensor {name} has {elements} elements, not a multiple of its block size {block}")
    return elements // block * type_size


def _walk(fh: BinaryIO, size: int) -> GgufLayout:
    head = fh.read(8)
    if head[:4] != GGUF_MAGIC:
        raise _NotGguf(f"it starts with {head[:4]!r}, a GGUF file with {GGUF_MAGIC!r}")
    if len(head) < 8:
        raise _Truncated("the header", 4)
    # The version is written in the file's byte order; a small number read little-endian says which.
    version, endian = struct.unpack("<I", head[4:8])[0], "<"
    if version & 0xFFFF == 0:
        version, endian = struct.unpack(">I", head[4:8])[0], ">"
    if version not in (2, 3):
        raise _Corrupt(f"GGUF version {version} is not supported (versions 2 and 3 are)")
    r = _Reader(fh, size, endian)
    r.pos = 8
    n_tensors, n_keys = r.u64("the header"), r.u64("the header")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_keys):
        key = r.string("the metadata")
        value = r.value(r.u32("the metadata"), "the metadata")
        if key == b"general.alignment":
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1):
                raise _Corrupt(f"general.alignment is {value!r}, not a power of two")
            alignment = value
    end = 0  # the furthest byte any tensor needs, relative to the data section
    for _ in range(n_tensors):
        name = r.string("the tensor table").decode("utf-8", "replace")
        n_dims = r.u32("the tensor table")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
        dims = [r.u64("the tensor table") for _ in range(n_dims)]
        kind, offset = r.u32("the tensor table"), r.u64("the tensor table")
        if offset % alignment:
            raise _Corrupt(f"tensor {name} starts at {offset}, not a multiple of the alignment {alignment}")
        end = max(end, offset + _tensor_bytes(kind, dims, name))
    data_start = -(-r.pos // alignment) * alignment
    if data_start + end > size:
        raise _Truncated(f"the tensor data (which needs {data_start + end:,} bytes)", size)
    return GgufLayout(version, n_tensors, n_keys, data_start, data_start + end)


def check_gguf(path: Path) -> GgufLayout:
    """Refuse an empty, foreign, cut-off or malformed GGUF file in one line; return its layout."""
    size = path.stat().st_size
    if size == 0:
        raise SurefastError(f"{path} is empty (0 bytes), not a GGUF file", _HINT)
    with path.open("rb") as fh:
        try:
            return _walk(fh, size)
        except _NotGguf as exc:
            raise SurefastError(f"{path} is not a GGUF file ({exc})", _HINT) from None
        except _Truncated as exc:
            raise SurefastError(f"{path} is truncated: {exc.what} runs past its end ({size:,} bytes)", _HINT) from None
        except _Corrupt as exc:
            raise SurefastError(f"{path} is not a valid GGUF file: {exc}", _HINT) from None
