"""Read a safetensors file into freshly allocated tensors, one at a time: peak memory is the tensors themselves.

``safetensors.torch.load_file`` maps the file and returns tensors that view the mapping, a few
bytes off any alignment (torch's int8 CPU kernel crashed on them); copying them out holds the
mapped pages and the copies at once (about twice the file). The format is simple enough to read
directly: an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}}`` (offsets from the end of the header), then the bytes. Each
tensor is allocated with ``torch.empty`` (aligned) and filled with ``readinto``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from surefast.errors import SurefastError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 2**20  # safetensors' own limit


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path``, each in its own allocation; a truncated or foreign file is one line naming it."""
    path = Path(path)
    hint = "the file is damaged or incomplete: compress the base model again"
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SurefastError(f"{path} is not a safetensors file (too short)", hint)
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER:
                raise SurefastError(f"{path} is not a safetensors file (header of {length} bytes)", hint)
            try:
                header = json.loads(f.read(length))
            except ValueError:
                raise SurefastError(f"{path} has an unreadable safetensors header", hint) from None
            start = 8 + length
            out: dict[str, torch.Tensor] = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                dtype = DTYPES.get(str(info.get("dtype"))) if isinstance(info, dict) else None
                if dtype is None:
                    raise SurefastError(f"{path}: tensor {name!r} has an unsupported dtype {info!r:.80}", hint)
                begin, end = info["data_offsets"]
                t = torch.empty(info["shape"], dtype=dtype)
                if end - begin != t.numel() * t.element_size():
                    raise SurefastError(
                        f"{path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']}", hint
                    )
                if t.numel():
                    f.seek(start + begin)
                    view = t.reshape(-1).view(torch.uint8).numpy()  # the tensor's own bytes
                    if f.readinto(view.data) != view.nbytes:
                        raise SurefastError(f"{path} is truncated (in tensor {name!r})", hint)
                out[name] = t
            return out
    except OSError as exc:
        raise SurefastError(f"cannot read {path}: {exc.strerror or exc}", hint) from None
