"""Compressed models on disk: a normal Hugging Face folder plus ``surefast_compression.json``.

Weights are saved fake-quantized (de-quantized values in the model's dtype), so any tool that
loads a Hugging Face folder loads them; what weights cannot hold (per-token activation
quantizers, online Hadamard rotations, KV-cache quantizers) is described by the JSON's
``recipe`` and re-installed by :func:`apply_saved_compression_` after loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from surefast.atomic import write_errors
from surefast.compress.api import (
    CompressionConfig,
    CompressionResult,
    ProgressFn,
    compress_,
    config_from_dict,
    method_for,
)
from surefast.compress.arch import fuse_experts_, unfuse_experts_

JSON_NAME = "surefast_compression.json"


def save_compressed(model: Any, tokenizer: Any, result: CompressionResult, out_dir: str | Path) -> Path:
    """Write ``model`` (fused back to its original module layout), ``tokenizer`` and the JSON."""
    out = Path(out_dir)
    with write_errors(out):  # a full disk or a read-only folder is one line, not a traceback
        out.mkdir(parents=True, exist_ok=True)
        fused = fuse_experts_(model)
        try:
            model.save_pretrained(out)
        finally:
            if fused:
                unfuse_experts_(model)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        (out / JSON_NAME).write_text(json.dumps(result.to_json(), indent=1, default=str))
    return out


def read_compression(folder: str | Path) -> dict[str, Any] | None:
    """The parsed ``surefast_compression.json`` of ``folder``, or None when it has none."""
    path = Path(folder) / JSON_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def apply_saved_compression_(model: torch.nn.Module, folder: str | Path | dict[str, Any]) -> dict[str, Any] | None:
    """Re-install activation quantizers and online rotations recorded in ``folder``'s JSON.

    Call right after ``from_pretrained(folder)``; a folder without the JSON is left alone.
    Returns the parsed JSON (None if absent).
    """
    from surefast.compress.quant.fake import install_input_transform_

    data = folder if isinstance(folder, dict) else read_compression(folder)
    if data is None:
        return None
    recipe = data.get("recipe", {})
    if recipe.get("unfused_experts"):
        unfuse_experts_(model)
    modules = dict(model.named_modules())
    for name, spec in recipe.get("inputs", {}).items():
        if name not in modules:
            from surefast.errors import SurefastError

            raise SurefastError(f"the saved compression names a layer {name!r} this model does not have",
                                "load the folder the JSON was saved with")  # fmt: skip
        install_input_transform_(modules[name], spec)
    method_for(config_from_dict(data["config"])).reapply(model, recipe)
    return data


def compress_model(
    spec: str,
    config: CompressionConfig,
    calibration_config: Any = None,
    out_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
) -> CompressionResult:
    """Load ``spec``, compress it with ``config`` and (if ``out_dir``) save it: the CLI's entry point."""
    from surefast.models import load_model

    loaded = load_model(spec, dtype=dtype, device=device, progress=None)
    if progress:
        progress(f"loaded {spec}")
    result = compress_(loaded.model, config, calibration_config, tokenizer=loaded.tokenizer,
                       base_fingerprint=loaded.fingerprint, progress=progress)  # fmt: skip
    result.extra["model"] = spec
    if out_dir is not None:
        save_compressed(loaded.model, loaded.tokenizer, result, out_dir)
        if progress:
            progress(f"saved to {out_dir}")
    return result
