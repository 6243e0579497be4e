"""Compressed models on disk: a normal Hugging Face folder plus ``surefast_compression.json``.

Weights are saved fake-quantized (de-quantized values in the model's dtype), so any tool that
loads a Hugging Face folder loads them; what weights cannot hold (per-token activation
quantizers, online Hadamard rotations, KV-cache quantizers) is described by the JSON's
``recipe`` (:mod:`surefast.compress.recipe`) and re-installed by
:func:`apply_saved_compression_` after loading.

Importing this module registers :func:`apply_saved_compression_` as the post-load hook of the
JSON (:mod:`surefast.models.hooks`), so :func:`surefast.models.load_model` re-installs the
recipe of a folder it loads without the model layer importing this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from surefast.atomic import write_errors
from surefast.compress.api import CompressionResult, config_from_dict, method_for
from surefast.compress.arch import fuse_experts_, unfuse_experts_
from surefast.compress.recipe import install_recipe_
from surefast.models.hooks import COMPRESSION_JSON, register_post_load

JSON_NAME = COMPRESSION_JSON


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

    Call right after ``from_pretrained(folder)`` (:func:`surefast.models.load_model` does); a
    folder without the JSON is left alone. Returns the parsed JSON (None if absent).
    """
    data = folder if isinstance(folder, dict) else read_compression(folder)
    if data is None:
        return None
    method = method_for(config_from_dict(data["config"]))
    install_recipe_(model, data.get("recipe", {}), method.reapply)
    return data


register_post_load(JSON_NAME, apply_saved_compression_)
