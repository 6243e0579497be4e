"""Read compressed-tensors checkpoints back into :class:`QuantizedWeight` codes.

The inverse of :mod:`.export_ct`, and a reader for the integer formats llm-compressor writes:
``pack-quantized`` (4- and 8-bit weights, packed int32, symmetric or with packed zero points),
``int-quantized`` and ``naive-quantized`` (int8 ``weight`` tensors; W8A8 when the group's
``input_activations`` are dynamic per-token int8). Their codes are signed (``q_ct`` in
``[-2^(b-1), 2^(b-1) - 1]``, zero points likewise); ours are signed for symmetric grids and
``q_ct + 2^(b-1)`` (zero point ``z_ct + 2^(b-1)``) for asymmetric ones, so ``(q - z) * s`` is
unchanged and no value is rounded. Scales come back as fp32 from whatever dtype the file holds.

Refused with one line each: float formats (FP8, NVFP4, MX), activation-ordered groups
(``weight_g_idx``), tensor or block strategies, static activation scales, other bit widths, and
8-bit asymmetric weights (our codes ``0..255`` do not fit :class:`QuantizedWeight`'s int8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.export_ct import PACKED_BITS, CTScheme, unpack_int32
from surefast.errors import SurefastError

INT_FORMATS = ("pack-quantized", "int-quantized", "naive-quantized")


@dataclass(frozen=True)
class CTCheckpoint:
    codes: dict[str, QuantizedWeight]  # linear module name -> its codes
    schemes: dict[str, CTScheme]  # linear module name -> the config group it was stored with
    tensors: dict[str, torch.Tensor]  # every other tensor (embeddings, norms, biases, unquantized linears)
    config: dict[str, Any]  # config.json, its quantization_config included


def scheme_of(group: Mapping[str, Any], where: str) -> CTScheme:
    """Our :class:`CTScheme` for one ``config_groups`` entry (``where`` names it in errors)."""
    w = group.get("weights") or {}
    strategy = w.get("strategy") or ("group" if (w.get("group_size") or 0) > 0 else "channel")
    if w.get("type", "int") != "int":
        raise SurefastError(f"{where}: {w.get('type')} weights are not supported", "integer formats only")
    if strategy not in ("group", "channel"):
        raise SurefastError(f"{where}: weight strategy {strategy!r} is not supported", "group or channel only")
    if w.get("actorder") in ("group", "dynamic"):
        raise SurefastError(f"{where}: activation-ordered groups (weight_g_idx) are not supported")
    acts = group.get("input_activations")
    act_bits = None
    if acts:
        if not (acts.get("dynamic") is True and acts.get("strategy") == "token" and acts.get("type", "int") == "int"):
            raise SurefastError(
                f"{where}: input activations {acts.get('strategy')} (dynamic {acts.get('dynamic')}) are not supported",
                "only dynamic per-token integer activations (W8A8)",
            )
        act_bits = int(acts.get("num_bits", 8))
    bits = int(w.get("num_bits", 8))
    group_size = int(w["group_size"]) if strategy == "group" else None
    return CTScheme(bits, group_size, bool(w.get("symmetric", True)), act_bits)


def decode_weight(local: Mapping[str, torch.Tensor], scheme: CTScheme, fmt: str, where: str) -> QuantizedWeight:
    """One linear's tensors (names without the module prefix) -> its :class:`QuantizedWeight`."""
    bits = scheme.bits
    if bits == 8 and not scheme.symmetric:  # our asymmetric codes would be 0..255, past QuantizedWeight's int8
        raise SurefastError(f"{where}: 8-bit asymmetric weights are not supported", "8-bit weights must be symmetric")
    offset = 0 if scheme.symmetric else 2 ** (bits - 1)  # ours = theirs + offset for asymmetric grids
    scales = local["weight_scale"].float()
    scales = scales.reshape(scales.shape[0], -1)  # [out, n_groups]
    if fmt == "pack-quantized":
        if bits not in PACKED_BITS:
            raise SurefastError(f"{where}: {bits}-bit packed weights are not supported", "4- or 8-bit only")
        out, inn = (int(v) for v in local["weight_shape"].tolist())
        stored = unpack_int32(local["weight_packed"], bits, inn)  # [out, in]: q_ct + 2^(b-1)
        codes = stored - (2 ** (bits - 1) if scheme.symmetric else 0)
        zeros = None
        if not scheme.symmetric:
            zp = local["weight_zero_point"]  # int32 [ceil(out * b / 32), n_groups], packed along out
            zeros = unpack_int32(zp.T.contiguous(), bits, out).T.float()  # already q_ct's + 2^(b-1)
    else:
        weight = local["weight"]
        if weight.dtype != torch.int8:
            raise SurefastError(f"{where}: {fmt} weight is {weight.dtype}, expected int8")
        out, inn = weight.shape
        codes = weight.to(torch.int64) + offset
        zeros = None
        if not scheme.symmetric:
            zeros = local["weight_zero_point"].float().reshape(out, -1) + offset
    group = inn if scheme.group_size is None else scheme.group_size
    return QuantizedWeight(codes.to(torch.int8), scales.contiguous(), zeros, bits, group)


def _targets_match(name: str, targets: list[str]) -> int:
    """How specifically ``targets`` name the linear ``name``: 3 exact, 2 regex, 1 the class ``Linear``, 0 not."""
    if name in targets:
        return 3
    if any(t.startswith("re:") and re.match(t[3:], name) for t in targets):
        return 2
    return 1 if "Linear" in targets else 0


def _load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SurefastError(f"{folder} holds no .safetensors file", "point at a compressed-tensors checkpoint folder")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def read_compressed_tensors(folder: str | Path) -> CTCheckpoint:
    """Read ``folder`` (``config.json`` + ``*.safetensors``) into codes and the remaining tensors."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SurefastError(f"{config_path} does not exist", "point at a compressed-tensors checkpoint folder")
    config = json.loads(config_path.read_text())
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "compressed-tensors":
        raise SurefastError(
            f"{config_path} has no compressed-tensors quantization_config",
            "its quantization_config.quant_method must be 'compressed-tensors'",
        )
    groups = qc.get("config_groups") or {}
    schemes_by_group = {key: scheme_of(g, f"{config_path}: config_groups.{key}") for key, g in groups.items()}
    tensors = _load_tensors(folder)
    layers = sorted({k.rsplit(".", 1)[0] for k in tensors if k.endswith(".weight_scale")})
    codes: dict[str, QuantizedWeight] = {}
    schemes: dict[str, CTScheme] = {}
    for name in layers:
        ranked = sorted(((_targets_match(name, g.get("targets", [])), key) for key, g in groups.items()), reverse=True)
        if not ranked or ranked[0][0] == 0:
            raise SurefastError(f"{config_path}: no config group targets {name}, which holds quantized tensors")
        key = ranked[0][1]
        fmt = groups[key].get("format") or qc.get("format")
        if fmt not in INT_FORMATS:
            raise SurefastError(
                f"{config_path}: config_groups.{key} has format {fmt!r}", f"supported: {', '.join(INT_FORMATS)}"
            )
        prefix = f"{name}."
        local = {
            k[len(prefix) :]: tensors.pop(k)
            for k in list(tensors)
            if k.startswith(prefix) and "." not in k[len(prefix) :]
        }
        if "weight_g_idx" in local:
            raise SurefastError(f"{config_path}: {name} has activation-ordered groups (weight_g_idx): not supported")
        bias = local.pop("bias", None)
        if bias is not None:
            tensors[f"{name}.bias"] = bias
        codes[name] = decode_weight(local, schemes_by_group[key], fmt, f"{config_path}: {name}")
        schemes[name] = schemes_by_group[key]
    return CTCheckpoint(codes, schemes, tensors, config)


def load_compressed_tensors(folder: str | Path, *, dtype: torch.dtype = torch.bfloat16) -> tuple[Any, CTCheckpoint]:
    """A compressed-tensors ``folder`` as our packed model: ``(model, checkpoint)``.

    The model is built empty from ``config.json`` (its ``quantization_config`` left out, so
    transformers does not install compressed-tensors' own modules), every quantized linear
    becomes a :class:`~.linear.PackedLinear` holding the file's codes (``w8a8`` where the group
    quantizes activations, else ``int4`` for codes of at most 4 bits, else ``int8``), and every
    other tensor is assigned as stored (cast to ``dtype``). No dense weight of a packed layer is
    allocated (:func:`~.pack.load_packed_`).
    """
    import transformers

    from surefast.compress.lowbit.formats import get_format
    from surefast.compress.lowbit.linear import PackedSpec
    from surefast.compress.lowbit.pack import load_packed_
    from surefast.compress.lowbit.w8a8 import ActQuant
    from surefast.models.load import empty_model

    ckpt = read_compressed_tensors(folder)
    config_dict = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
    config = transformers.AutoConfig.for_model(**config_dict)
    model = empty_model(transformers.AutoModelForCausalLM, config, dtype)
    specs: dict[str, PackedSpec] = {}
    tensors = dict(ckpt.tensors)
    for name, qw in ckpt.codes.items():
        scheme = ckpt.schemes[name]
        act = ActQuant(scheme.act_bits) if scheme.act_bits is not None else None
        fmt = "w8a8" if act is not None else "int4" if qw.bits <= 4 else "int8"
        bias = f"{name}.bias" in tensors
        specs[name] = PackedSpec(fmt, qw.shape[1], qw.shape[0], qw.bits, qw.group_size, qw.symmetric, bias, act)
        tensors[f"{name}.qweight"] = get_format(fmt).pack(qw.codes, qw.symmetric)
        tensors[f"{name}.scales"] = qw.scales
        if qw.zeros is not None:
            tensors[f"{name}.zeros"] = qw.zeros
    load_packed_(model, specs, tensors, where=str(Path(folder)))
    return model.eval(), ckpt
