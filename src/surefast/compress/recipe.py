"""The saved recipe: what a compressed model's weights cannot hold, written and read in one place.

Weights are saved fake-quantized (any tool that loads a Hugging Face folder loads them); the
rest goes in the ``recipe`` of ``surefast_compression.json``:

==================  ==========================================================================
``arch``            the model type it was made for (for humans; never read back)
``unfused_experts`` the MoE experts were split into per-expert linears; they are split again
                    before the ``inputs`` below are looked up (their names are per expert)
``inputs``          qualified linear name -> input transform (activation fake-quant bits,
                    online Hadamard), from :func:`~surefast.compress.quant.fake.input_transforms`
``packed``          packed folders only: qualified linear name -> its
                    :class:`~surefast.compress.lowbit.linear.PackedSpec` (format, bits, group
                    size, activation grid); the weights are in ``surefast_packed.safetensors``
anything else       what the method's ``finalize_model`` returned (``kv_bits``,
                    ``norm_rotation``, ...), re-installed by its ``Method.reapply``
==================  ==========================================================================

:func:`make_recipe` writes it at the end of :func:`~surefast.compress.api.compress_`;
:func:`install_recipe_` reads it back after loading
(:func:`~surefast.compress.saved.apply_saved_compression_`). The method's ``reapply`` is passed
in rather than looked up, so this module needs nothing from the method registry (``api``
imports it; the reverse would be a circle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from surefast.compress.arch import unfuse_experts_
from surefast.compress.quant.fake import input_transforms, install_input_transform_
from surefast.errors import SurefastError

Reapply = Callable[[nn.Module, dict[str, Any]], None]  # Method.reapply: (model, recipe) -> None, in place
LoadWeights = Callable[[nn.Module], None]  # a packed folder's loader: packed layers and every tensor, in place


def make_recipe(
    model: nn.Module, model_type: str, unfused_experts: list[str], method_recipe: dict[str, Any]
) -> dict[str, Any]:
    """The recipe of a just-compressed ``model``; the method's own keys come last (and win)."""
    return {"arch": model_type, "unfused_experts": unfused_experts, "inputs": input_transforms(model), **method_recipe}


def packed_recipe(model: nn.Module, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe of a packed ``model``: its input transforms as they are now (an activation
    grid moved into each packed layer, a Hadamard stayed) and every packed layer's spec."""
    # late: api imports this module, and the lowbit package imports quant/, whose method files import api
    from surefast.compress.lowbit.pack import packed_report

    packed = {layer.name: layer.spec.to_dict() for layer in packed_report(model).layers}
    return {**recipe, "inputs": input_transforms(model), "packed": packed}


def install_recipe_(
    model: nn.Module, recipe: dict[str, Any], reapply: Reapply, load_weights: LoadWeights | None = None
) -> None:
    """Re-install ``recipe`` on a model just loaded from its folder: experts, input transforms,
    then ``reapply``. A packed folder runs ``reapply`` first, then ``load_weights``, then the
    input transforms (onto the packed modules): a method's re-install may look for the decoder
    blocks by their ``nn.Linear`` layers (``models.arch.decoder_layers``; the KV quantizer does),
    which packing replaces."""
    if recipe.get("unfused_experts"):
        unfuse_experts_(model)  # on an empty model the per-expert linears are empty (meta) too
    if load_weights is not None:
        reapply(model, recipe)
        load_weights(model)
    modules = dict(model.named_modules())
    for name, spec in recipe.get("inputs", {}).items():
        if name not in modules:
            raise SurefastError(
                f"the saved compression names a layer {name!r} this model does not have",
                "load the folder the JSON was saved with",
            )
        install_input_transform_(modules[name], spec)
    if load_weights is None:
        reapply(model, recipe)
