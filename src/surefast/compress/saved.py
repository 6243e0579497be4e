"""Compressed models on disk: a normal Hugging Face folder plus ``surefast_compression.json``.

Weights are saved fake-quantized (de-quantized values in the model's dtype), so any tool that
loads a Hugging Face folder loads them; what weights cannot hold (per-token activation
quantizers, online Hadamard rotations, KV-cache quantizers) is described by the JSON's
``recipe`` (:mod:`surefast.compress.recipe`) and re-installed by
:func:`apply_saved_compression_` after loading.

A packed model (:func:`surefast.compress.lowbit.pack.pack_`) is saved as a *packed folder*
instead: ``config.json``, the generation config, the tokenizer, the JSON (its recipe names
every packed layer's spec under ``packed``) and ``surefast_packed.safetensors``, which holds the
packed codes, scales and zero points and every other tensor, and no ``model.safetensors``:
plain transformers refuses the folder rather than loading random weights into packed layers.
``load_model`` builds such a folder's model with empty parameters and this module's hook fills
them (:func:`~surefast.compress.lowbit.pack.load_packed_`), so no dense weight of a packed
layer is ever allocated.

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
from surefast.compress.arch import UnfusedExperts, fuse_experts_
from surefast.compress.recipe import install_recipe_, packed_recipe
from surefast.errors import SurefastError
from surefast.models.hooks import COMPRESSION_JSON, register_post_load
from surefast.models.load import HOOK_WEIGHTS

JSON_NAME = COMPRESSION_JSON
PACKED_WEIGHTS = HOOK_WEIGHTS  # the packed folder's one weights file


def save_compressed(model: Any, tokenizer: Any, result: CompressionResult, out_dir: str | Path) -> Path:
    """Write ``model`` (fused back to its original module layout), ``tokenizer`` and the JSON;
    a packed model as a packed folder (module docstring)."""
    from surefast.compress.lowbit.pack import packed_report

    if isinstance(model, torch.nn.Module) and packed_report(model).layers:
        return _save_packed(model, tokenizer, result, Path(out_dir))
    out = Path(out_dir)
    # The unfused experts themselves go back after saving, not new ones: their linears keep
    # their input transforms and recorded codes (a model packed after saving is still whole).
    experts = dict(_unfused(model))
    with write_errors(out):  # a full disk or a read-only folder is one line, not a traceback
        out.mkdir(parents=True, exist_ok=True)
        fused = fuse_experts_(model)
        try:
            model.save_pretrained(out)
        finally:
            if fused:
                for name, module in experts.items():
                    parent, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, child, module)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        (out / JSON_NAME).write_text(json.dumps(result.to_json(), indent=1, default=str))
    return out


def _unfused(model: Any) -> list[tuple[str, UnfusedExperts]]:
    if not isinstance(model, torch.nn.Module):
        return []
    return [(name, m) for name, m in model.named_modules() if isinstance(m, UnfusedExperts)]


def _save_packed(model: Any, tokenizer: Any, result: CompressionResult, out: Path) -> Path:
    """A packed folder: experts stay unfused (a packed expert has no fused form)."""
    from safetensors.torch import save_file

    from surefast.compress.lowbit.pack import packed_state

    data = result.to_json()
    data["recipe"] = packed_recipe(model, result.recipe)
    with write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("model.safetensors", "model.safetensors.index.json"):  # a dense save here before
            (out / stale).unlink(missing_ok=True)
        model.config.save_pretrained(out)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        save_file(packed_state(model), str(out / PACKED_WEIGHTS), metadata={"format": "pt"})
        (out / JSON_NAME).write_text(json.dumps(data, indent=1, default=str))
    return out


def _packed_loader(folder: Path | None, packed: dict[str, Any]) -> Any:
    """The ``load_weights`` step of a packed folder's recipe: its layers, then every stored tensor."""
    from surefast.compress.lowbit.linear import PackedSpec
    from surefast.compress.lowbit.pack import load_packed_
    from surefast.compress.lowbit.read import read_safetensors

    if folder is None or not (folder / PACKED_WEIGHTS).is_file():
        where = folder / PACKED_WEIGHTS if folder is not None else PACKED_WEIGHTS
        raise SurefastError(f"{where} is missing: the recipe describes a packed model", "copy the whole folder")
    path = folder / PACKED_WEIGHTS
    specs = {name: PackedSpec.from_dict(d, f"{folder / JSON_NAME} layer {name}") for name, d in packed.items()}

    def load(model: torch.nn.Module) -> None:
        # Owned, aligned tensors read one at a time (not views of a mapped file: lowbit/read.py)
        load_packed_(model, specs, read_safetensors(path), where=str(path))

    return load


def read_compression(folder: str | Path) -> dict[str, Any] | None:
    """The parsed ``surefast_compression.json`` of ``folder``, or None when it has none."""
    path = Path(folder) / JSON_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def apply_saved_compression_(model: torch.nn.Module, folder: str | Path | dict[str, Any]) -> dict[str, Any] | None:
    """Re-install activation quantizers and online rotations recorded in ``folder``'s JSON.

    Call right after ``from_pretrained(folder)`` (:func:`surefast.models.load_model` does); a
    folder without the JSON is left alone. A packed folder's layers and weights are loaded too
    (into a model built empty, as ``load_model`` does, or over any model of its config).
    Returns the parsed JSON (None if absent).
    """
    data = folder if isinstance(folder, dict) else read_compression(folder)
    if data is None:
        return None
    method = method_for(config_from_dict(data["config"]))
    recipe = data.get("recipe", {})
    load = None
    if recipe.get("packed"):
        load = _packed_loader(None if isinstance(folder, dict) else Path(folder), recipe["packed"])
    install_recipe_(model, recipe, method.reapply, load)
    return data


register_post_load(JSON_NAME, apply_saved_compression_)
