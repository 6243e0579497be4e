"""``pack_(model)``: every linear whose quantizer recorded its codes becomes a :class:`PackedLinear`.

Where the codes come from: a quantizer's de-quantized weight carries the
:class:`~.codes.QuantizedWeight` it was rounded from, and the pipeline's ``set_weight`` keeps it
on the linear it writes (:mod:`surefast.compress.quant.fake`, "Recorded codes"). Packing reads
those records, never the floats: codes re-derived from de-quantized weights can round
differently (a scale recomputed from ``max|W_hat|`` is not the one the quantizer used, and GPTQ's
clipped or error-updated grids are not recoverable at all). A model without records (loaded from
a fake-quant folder) is refused.

Formats, chosen per layer when ``format`` is None:

* ``w8a8`` for an 8-bit symmetric per-channel weight whose input is fake-quantized per token to
  8 bits (SmoothQuant, QuaRot W8A8), so the int8 x int8 kernel may run it;
* ``int4`` for codes of 4 bits or fewer, ``int8`` for the rest.

A layer's activation fake-quantizer moves into the packed module (its ``act`` grid, applied the
same way, or by the int8 x int8 kernel itself); an online Hadamard stays a pre-hook before it.
Before packing, each record is checked against its weight (``dequantize()`` cast to the weight's
dtype must equal it exactly): a weight changed after quantization (pruned, rotated, edited) is
refused instead of silently replaced by stale codes.

A packed folder (:mod:`surefast.compress.saved`) stores :func:`packed_state` and each layer's
:class:`PackedSpec`; :func:`load_packed_` rebuilds the layers empty and assigns the stored tensors,
so no dense weight of a packed layer is ever allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.formats import get_format
from surefast.compress.lowbit.linear import PackedLinear, PackedSpec
from surefast.compress.lowbit.w8a8 import ActQuant
from surefast.compress.quant.fake import (
    HOOK_ATTR,
    codes_of,
    fake_quant_weight,
    install_input_transform_,
    record_codes_,
)
from surefast.errors import SurefastError
from surefast.models.load import unfilled
from surefast.registry import suggestion

DENSE_BYTES = 2  # a bf16 weight element: what the unpacked model holds per weight


@dataclass(frozen=True)
class PackedLayer:
    """One packed linear: its spec and what its weight costs packed and dense."""

    name: str  # qualified module name
    spec: PackedSpec
    weight_bytes: int  # the packed codes, scales and zero points

    @property
    def dense_bytes(self) -> int:
        return self.spec.in_features * self.spec.out_features * DENSE_BYTES


@dataclass(frozen=True)
class PackReport:
    """The packed layers of a model, in module order (what :func:`pack_` did, what ``models info`` shows)."""

    layers: tuple[PackedLayer, ...]

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def dense_bytes(self) -> int:
        return sum(layer.dense_bytes for layer in self.layers)

    def count(self, describe: Any = None) -> dict[str, int]:
        """``describe(spec)`` (default: the format name) -> number of layers, in first-seen order."""
        out: dict[str, int] = {}
        for layer in self.layers:
            key = describe(layer.spec) if describe else layer.spec.format
            out[key] = out.get(key, 0) + 1
        return out


def packed_report(model: nn.Module) -> PackReport:
    """Every :class:`PackedLinear` of ``model`` (packed here or loaded from a packed folder)."""
    return PackReport(
        tuple(
            PackedLayer(name, m.spec, m.weight_bytes())
            for name, m in model.named_modules()
            if isinstance(m, PackedLinear)
        )
    )


def model_bytes(model: nn.Module) -> tuple[int, int]:
    """``(bytes held, bytes as bf16)`` of every stored tensor (each storage once): a packed layer
    counts its codes, scales and zero points against its weight's bf16 size."""
    packed = {layer.name: layer for layer in packed_report(model).layers}
    held = dense = 0
    for key, t in packed_state(model).items():
        module, _, leaf = key.rpartition(".")
        held += t.numel() * t.element_size()
        if module not in packed:
            dense += t.numel() * DENSE_BYTES if t.is_floating_point() else t.numel() * t.element_size()
        elif leaf == "bias":
            dense += t.numel() * DENSE_BYTES
    return held, dense + sum(layer.dense_bytes for layer in packed.values())


def recorded_codes(model: nn.Module) -> dict[str, QuantizedWeight]:
    """Qualified linear name -> the codes its quantizer recorded (what the exporters take).

    A layer that recorded why it has none (GPTQ with dynamic act-order groups) is refused."""
    out: dict[str, QuantizedWeight] = {}
    for name, module in model.named_modules():
        codes = codes_of(module)
        if isinstance(codes, str):
            raise SurefastError(f"cannot pack {name}: {codes}")
        if codes is not None:
            out[name] = codes
    return out


def model_codes(model: nn.Module) -> dict[str, QuantizedWeight]:
    """Every quantized linear's codes, packed or not: what the exporters write.

    A packed layer gives back what it holds (:meth:`PackedLinear.to_quantized`); an unpacked one
    what its quantizer recorded (:func:`recorded_codes`)."""
    packed = {name: m.to_quantized() for name, m in model.named_modules() if isinstance(m, PackedLinear)}
    return {**recorded_codes(model), **packed}


HEADS = {"int8": (8, -1), "int4": (4, 128)}  # head format -> (bits, group size; -1 per channel)


def _head_codes(model: nn.Module, head: str) -> tuple[str, nn.Linear, QuantizedWeight]:
    """The output head, its RTN codes (symmetric), and untied from the input embedding if it was tied."""
    hf: Any = model
    linear = hf.get_output_embeddings()
    name = next((n for n, m in model.named_modules() if m is linear), None)
    if not isinstance(linear, nn.Linear) or name is None:
        raise SurefastError("this model has no linear output head to pack", "pack without --pack-head")
    if codes_of(linear) is not None:
        raise SurefastError(f"{name} is already quantized", "pack without --pack-head")
    bits, group = HEADS[head]
    weight = linear.weight.detach()
    codes = codes_of(fake_quant_weight(weight.float(), bits, group, True))
    assert codes is not None and not isinstance(codes, str)
    if hf.get_input_embeddings().weight is linear.weight:  # tied: the embedding keeps the float weight
        hf.config.tie_word_embeddings = False
    return name, linear, codes


def packable(config: Any) -> tuple[str, str] | None:
    """Why a compression config yields nothing :func:`pack_` can pack, as (message, hint), or None.

    Read from the config's fields, so it is checked before any model loads."""
    if not hasattr(config, "bits"):
        return f"{config.method} does not quantize weights", "pack rtn, gptq, awq, smoothquant, quarot or spinquant"
    if getattr(config, "quantize", True) is False:
        return f"{config.method} with quantize=False leaves the weights in floating point", "drop quantize=False"
    if int(config.bits) == 8 and getattr(config, "symmetric", True) is False:
        return "8-bit asymmetric codes (0..255) do not fit int8", "quantize 8 bits with symmetric=True to pack"
    if getattr(config, "act_order", False) and getattr(config, "static_groups", True) is False:
        return (
            "GPTQ with act_order and static_groups=False has no contiguous group grid (it would need a g_idx)",
            "compress with static_groups=True (the default) or act_order=False",
        )
    return None


def _input_spec(linear: nn.Module) -> dict[str, Any]:
    hook = getattr(linear, HOOK_ATTR, None)
    return dict(hook[0].spec) if hook is not None else {}


def _is_w8a8(codes: QuantizedWeight, act: ActQuant | None) -> bool:
    per_channel = codes.group_size >= codes.shape[1]
    return act is not None and act.bits == 8 and codes.bits == 8 and codes.symmetric and per_channel


def choose_format(name: str, codes: QuantizedWeight, act: ActQuant | None, format: str | None = None) -> str:
    """The format layer ``name`` packs to (module docstring); a forced one that would change the layer is refused."""
    if format is None:
        return "w8a8" if _is_w8a8(codes, act) else "int4" if codes.bits <= 4 else "int8"
    format = get_format(format).name  # unknown: did-you-mean
    if format == "w8a8" and not _is_w8a8(codes, act):
        raise SurefastError(
            f"cannot pack {name} as w8a8: it needs 8-bit symmetric per-channel weights and inputs quantized per "
            f"token to 8 bits (this layer: {codes.bits}-bit weights, act_bits={act.bits if act else 16})",
            "leave the format out to choose one per layer, or compress with smoothquant",
        )
    try:
        get_format(format).check(codes)  # e.g. 8-bit codes in int4
    except SurefastError as exc:
        raise SurefastError(f"cannot pack {name}: {exc.message}", exc.hint) from None
    return format


def _check_record(name: str, linear: nn.Linear, codes: QuantizedWeight) -> None:
    if not codes.matches(linear.weight):
        raise SurefastError(
            f"cannot pack {name}: its weight changed after it was quantized (the recorded codes no longer match)",
            "pack right after compressing, before anything else edits the weights",
        )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _move_hadamard(old: nn.Module, new: nn.Module, spec: dict[str, Any]) -> None:
    """The old module's input transform comes off; its online Hadamard goes onto ``new``."""
    hook = getattr(old, HOOK_ATTR, None)
    if hook is not None:
        hook[1].remove()
        delattr(old, HOOK_ATTR)
    if spec.get("hadamard"):
        install_input_transform_(new, {"hadamard": True})


def pack_(
    model: nn.Module, format: str | None = None, *, kernel: str | None = None, head: str | None = None
) -> PackReport:
    """Replace, in place, every linear with recorded codes by a :class:`PackedLinear` holding them.

    ``format``: ``"int4"``, ``"int8"`` or ``"w8a8"`` for every layer, or None to choose per layer
    (module docstring). ``kernel``: force one for the packed layers (default: ``auto``, or
    ``SUREFAST_LOWBIT_KERNEL``). The de-quantized weights and the unpacked codes are dropped.
    ``head``: also round the output head (``lm_head``, which no quantizer touches) to ``"int8"``
    (per channel) or ``"int4"`` (groups of 128) with round-to-nearest, and pack it (:data:`HEADS`).
    That changes the model beyond what it was compressed (and certified) as; a decode reads the
    head every token, so it buys speed where the head is a large share of the weights.
    """
    if format is not None:
        get_format(format)  # an unknown name fails before any layer changes
    if head is not None and head not in HEADS:
        raise SurefastError(f"unknown head format {head!r}", suggestion(head, list(HEADS)))
    todo: list[tuple[str, nn.Linear, QuantizedWeight]] = []
    for name, module in model.named_modules():
        codes = codes_of(module)
        if isinstance(codes, str):
            raise SurefastError(f"cannot pack {name}: {codes}")
        if codes is not None and isinstance(module, nn.Linear):
            _check_record(name, module, codes)
            todo.append((name, module, codes))
    if head is not None:
        todo.append(_head_codes(model, head))
    if not todo:
        if packed_report(model).layers:
            raise SurefastError("this model is already packed")
        raise SurefastError(
            "this model has no recorded quantization codes to pack",
            "pack right after compressing with rtn, gptq, awq, smoothquant, quarot or spinquant (a fake-quant folder "
            "holds only de-quantized floats, and codes are never re-derived from them): compress the base model "
            "again with --pack",
        )
    plans = []
    for name, linear, codes in todo:  # every choice first: a refusal leaves the model as it was
        spec = _input_spec(linear)
        act = ActQuant.from_spec(spec)
        plans.append((name, linear, codes, spec, act, choose_format(name, codes, act, format)))
    for name, linear, codes, spec, act, fmt in plans:
        packed = PackedLinear.from_quantized(codes, linear.bias, format=fmt, act=act, kernel=kernel)
        _move_hadamard(linear, packed, spec)
        record_codes_(linear, None)
        _replace(model, name, packed)
    return packed_report(model)


# --- packed folders ---------------------------------------------------------------------------


def packed_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to store: packed buffers and every other tensor, each storage once (tied
    embeddings keep their first name; :func:`load_packed_` gives the value to every alias)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for key, t in model.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = t.detach().contiguous()
    return out


def _aliases(model: nn.Module) -> list[list[str]]:
    """Names of each parameter and buffer, grouped by the tensor they share (tied weights)."""
    groups: dict[int, list[str]] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        groups.setdefault(id(tensor), []).append(name)
    return list(groups.values())


def _assign(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    old = module._parameters.get(leaf) if leaf in module._parameters else None
    if old is not None:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[leaf] = value


def load_packed_(
    model: nn.Module,
    specs: dict[str, PackedSpec],
    tensors: dict[str, torch.Tensor],
    *,
    where: str = "the packed folder",
    kernel: str | None = None,
) -> PackReport:
    """Turn ``specs``' layers into empty :class:`PackedLinear` modules and assign ``tensors`` (a
    :func:`packed_state`) to the whole model, in place; ``where`` names the file in errors.

    Built for a model whose parameters are on the meta device (``load_model`` builds a packed
    folder's model so): nothing dense is allocated for a packed layer, and every other tensor is
    the stored one, cast to the dtype the model was built in (packed scales stay fp32).
    """
    modules = dict(model.named_modules())
    for name, spec in specs.items():
        old = modules.get(name)
        if not isinstance(old, nn.Linear) or (old.in_features, old.out_features) != (
            spec.in_features,
            spec.out_features,
        ):
            raise SurefastError(
                f"{where} packs a layer {name!r} of {spec.out_features} x {spec.in_features} this model does not have",
                "load the folder with the config.json it was saved with",
            )
        bias_dtype = old.bias.dtype if old.bias is not None else old.weight.dtype
        _replace(model, name, PackedLinear(spec, bias_dtype=bias_dtype, device="meta", kernel=kernel))
    targets = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    for key, value in tensors.items():
        target = targets.get(key)
        if target is None:
            raise SurefastError(f"{where} holds {key!r}, which this model has no place for", "re-pack the model")
        if tuple(value.shape) != tuple(target.shape):
            raise SurefastError(
                f"{where}: {key} is {tuple(value.shape)}, the model expects {tuple(target.shape)}", "re-pack the model"
            )
    for names in _aliases(model):
        stored = next((n for n in names if n in tensors), None)
        if stored is None:
            continue
        target = targets[stored]
        value = tensors[stored]
        if value.is_floating_point() and target.is_floating_point():
            value = value.to(target.dtype)  # the model's dtype (fp32 for the packed scales)
        for n in names:
            _assign(model, n, value)
    missing = unfilled(model)
    if missing is not None:
        raise SurefastError(f"{where} has no {missing[0]} {missing[1]}", "re-pack the model")
    return packed_report(model)
