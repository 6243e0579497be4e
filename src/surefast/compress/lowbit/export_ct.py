"""Export to compressed-tensors checkpoints: what llm-compressor writes and vLLM serves.

The layout follows compressed-tensors 0.20.1 (``compressors/pack_quantized/{base,helpers}.py``
and ``compressors/naive_quantized/base.py`` in vllm-project/compressed-tensors), and the tests
read our folders back with that package's own decompressor:

* ``pack-quantized`` (weight-only, 4 or 8 bits): per linear ``weight_packed`` int32
  ``[out, ceil(in * b / 32)]``, ``weight_scale`` ``[out, n_groups]``, ``weight_shape`` int64
  ``[2]`` and, for asymmetric grids only, ``weight_zero_point`` int32
  ``[ceil(out * b / 32), n_groups]`` (packed along the *output* dimension). compressed-tensors'
  grid is signed for both symmetric and asymmetric weights (``[-2^(b-1), 2^(b-1) - 1]``) and it
  stores ``code + 2^(b-1)``; element ``i`` of a row sits at bit ``(i * b) % 32`` of word
  ``i * b // 32`` (for 4 bits: eight nibbles per word, the lowest nibble first). Codes of 2-3
  bits are stored as 4-bit ones, 5-7 as 8-bit ones: they fit the wider grid exactly.
* ``int-quantized`` (W8A8, SmoothQuant): ``weight`` int8 ``[out, in]`` and ``weight_scale``
  ``[out, 1]``; the config group's ``input_activations`` asks for dynamic per-token int8.

Our grids map onto theirs without rounding. Symmetric codes ``q`` are already signed. Asymmetric
codes ``q`` in ``[0, 2^b - 1]`` with zero point ``z`` become ``q - 2^(b-1)`` and ``z - 2^(b-1)``,
so the stored unsigned values are our ``q`` and ``z`` themselves, and ``(q_ct - z_ct) * s`` is our
``(q - z) * s``. The only rounding is the scale's cast to ``scale_dtype`` (the model's dtype by
default, as llm-compressor writes; ``torch.float32`` keeps :meth:`QuantizedWeight.dequantize`
bit for bit).

compressed-tensors needs whole groups (``in % group_size == 0``). A layer whose last group is
partial (SmolLM2's 576 inputs at group 128) is written with the largest group that divides both
(64 there), each scale repeated: the same weights, a few more scales, and a warning.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surefast.atomic import write_errors
from surefast.compress.arch import UnfusedExperts, is_fused_experts
from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.quant.fake import input_transforms
from surefast.errors import SurefastError
from surefast.registry import suggestion

# The compressed-tensors release whose format this writes (and the tests read back with).
CT_VERSION = "0.20.1"
PACKED_BITS = (4, 8)  # what vLLM's pack-quantized kernels take (and the packing below handles)


@dataclass(frozen=True)
class CTScheme:
    """One compressed-tensors config group: the weight grid and, for W8A8, the activations'."""

    bits: int
    group_size: int | None  # None: one scale per output channel ("channel" strategy)
    symmetric: bool
    act_bits: int | None = None  # 8: dynamic per-token int8 activations ("int-quantized"); None: weight-only

    @property
    def format(self) -> str:
        return "int-quantized" if self.act_bits is not None else "pack-quantized"

    def config_group(self, targets: list[str]) -> dict[str, Any]:
        """The ``config_groups`` entry, with the keys compressed-tensors 0.20.1 dumps."""
        weights = {
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.symmetric,
            "group_size": self.group_size,
            "strategy": "channel" if self.group_size is None else "group",
            "dynamic": False,
        }
        acts = None
        if self.act_bits is not None:
            acts = {
                "num_bits": self.act_bits,
                "type": "int",
                "symmetric": True,
                "group_size": None,
                "strategy": "token",
                "dynamic": True,
            }
        return {
            "targets": targets,
            "weights": weights,
            "input_activations": acts,
            "output_activations": None,
            "format": self.format,
        }


# --- pure layout ----------------------------------------------------------------------------
def pack_int32(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes ``[rows, cols]`` (each in ``[0, 2^bits)``) -> int32 ``[rows, ceil(cols * bits / 32)]``.

    compressed-tensors' dense packing (``pack_to_int32``): code ``i`` at bit ``(i * bits) % 32``
    of word ``i * bits // 32``; for 4 and 8 bits no code straddles two words.
    """
    if bits not in PACKED_BITS:
        raise SurefastError(f"internal: packing supports {PACKED_BITS} bits, not {bits}")
    per = 32 // bits
    rows, cols = values.shape
    v = values.to(torch.int64)
    if cols % per:
        v = torch.nn.functional.pad(v, (0, per - cols % per))  # padded codes are zeros, as compressed-tensors pads
    shifts = torch.arange(per, dtype=torch.int64) * bits  # [per]
    words = (v.reshape(rows, -1, per) << shifts).sum(-1)  # [rows, words] in [0, 2^32)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # the same bits, as int32


def unpack_int32(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """The inverse of :func:`pack_int32`: int32 ``[rows, words]`` -> unsigned codes int64 ``[rows, cols]``."""
    if bits not in PACKED_BITS:
        raise SurefastError(f"internal: packing supports {PACKED_BITS} bits, not {bits}")
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    words = packed.to(torch.int64) & 0xFFFFFFFF  # [rows, words]: the unsigned word
    codes = (words.unsqueeze(-1) >> shifts) & (2**bits - 1)  # [rows, words, per]
    return codes.reshape(packed.shape[0], -1)[:, :cols]


def whole_groups(qw: QuantizedWeight) -> tuple[int | None, torch.Tensor, torch.Tensor | None]:
    """``(group_size or None for per channel, scales, zeros)`` with every group whole.

    A partial last group (``in % group_size != 0``) is re-expressed with ``gcd(group_size, in)``:
    each finer group lies inside one original group, so repeating that group's scale and zero
    point gives the same ``W_hat``.
    """
    inn, g = qw.shape[1], qw.group_size
    if g >= inn:
        return None, qw.scales, qw.zeros
    fine = math.gcd(g, inn)
    if fine == g:
        return g, qw.scales, qw.zeros
    rep = g // fine
    n = inn // fine

    def spread(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(rep, dim=1)[:, :n].contiguous()  # [out, in / fine]

    return fine, spread(qw.scales), None if qw.zeros is None else spread(qw.zeros)


def compress_weight(
    qw: QuantizedWeight, scheme: CTScheme, scales: torch.Tensor, zeros: torch.Tensor | None, scale_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one linear (names without the module prefix)."""
    offset = 2 ** (scheme.bits - 1)
    scale = scales.to(scale_dtype).contiguous()
    if scheme.act_bits is not None:  # int-quantized: the signed int8 codes as they are
        return {"weight": qw.codes.contiguous(), "weight_scale": scale}
    unsigned = qw.codes.to(torch.int64) + (offset if qw.symmetric else 0)  # [out, in] in [0, 2^b)
    out = {
        "weight_packed": pack_int32(unsigned, scheme.bits),
        "weight_scale": scale,
        "weight_shape": torch.tensor(qw.shape, dtype=torch.int64),
    }
    if zeros is not None:
        z = zeros.to(torch.int64)  # [out, n_groups]: already the stored (unsigned) zero points
        out["weight_zero_point"] = pack_int32(z.T.contiguous(), scheme.bits).T.contiguous()  # packed along out
    return out


# --- checks and the folder ------------------------------------------------------------------
def scheme_for(name: str, qw: QuantizedWeight, act: dict[str, Any] | None) -> tuple[CTScheme, torch.Tensor, Any]:
    """The scheme of one layer (and its whole-group scales and zeros), or a one-line refusal."""
    if act and act.get("hadamard"):
        raise SurefastError(
            f"{name} rotates its inputs online (QuaRot/SpinQuant Hadamard): compressed-tensors cannot express that",
            "export a weight-only model, or one whose rotations are all folded into the weights",
        )
    act_bits = int(act.get("act_bits", 16)) if act else 16
    # Fewer bits fit the next container exactly: signed codes keep their value, asymmetric ones are
    # stored unsigned as they are (q and z both in [0, 2^b - 1], inside the wider grid).
    bits = 4 if qw.bits <= 4 else 8
    group, scales, zeros = whole_groups(qw)
    if zeros is not None and (zeros.min() < 0 or zeros.max() > 2**qw.bits - 1):
        raise SurefastError(f"{name} has zero points outside its {qw.bits}-bit grid: they cannot be stored")
    if act_bits >= 16:
        return CTScheme(bits, group, qw.symmetric), scales, zeros
    if act_bits != 8 or bits != 8 or not qw.symmetric or group is not None:
        raise SurefastError(
            f"{name}: W{qw.bits}A{act_bits} (group {qw.group_size}, "
            f"{'symmetric' if qw.symmetric else 'asymmetric'}) has no compressed-tensors format here",
            "W8A8 needs 8-bit symmetric per-channel weights and 8-bit activations (SmoothQuant's defaults)",
        )
    if not act.get("act_sym", True) or float(act.get("act_clip", 1.0)) != 1.0:  # type: ignore[union-attr]
        raise SurefastError(
            f"{name} quantizes its activations asymmetrically or clipped",
            "servers quantize W8A8 activations symmetrically over each token's full range",
        )
    return CTScheme(8, None, True, act_bits=8), scales, zeros


def checked_codes(model: nn.Module, codes: Mapping[str, QuantizedWeight]) -> dict[str, nn.Module]:
    if not codes:
        raise SurefastError("no quantized weights to export", "quantize the model first (RTN, GPTQ, AWQ, SmoothQuant)")
    modules = dict(model.named_modules())
    if any(is_fused_experts(m) or isinstance(m, UnfusedExperts) for m in modules.values()):
        raise SurefastError("exporting mixture-of-experts models is not supported yet", "export a dense model")
    linears = {n: m for n, m in modules.items() if isinstance(m, nn.Linear) or n in codes}
    # A tied weight (lm_head = the embeddings) is one tensor under two names: written compressed
    # under one and in float under the other, the two copies would disagree.
    sharing: dict[int, list[str]] = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        sharing.setdefault(param.data_ptr(), []).append(key)
    for name, qw in codes.items():
        if name not in modules:
            raise SurefastError(f"{name!r} is not a module of the model", suggestion(name, linears))
        weight = getattr(modules[name], "weight", None)
        check_against_weight(name, qw, weight)
        if isinstance(weight, torch.Tensor):
            tied = [k for k in sharing.get(weight.data_ptr(), []) if k != f"{name}.weight"]
            if tied:
                raise SurefastError(
                    f"{name} shares its weight with {tied[0]} (tied embeddings)", f"export without codes for {name}"
                )
    return linears


def check_against_weight(name: str, qw: QuantizedWeight, weight: Any) -> None:
    """Refuse codes that are not the layer's weight: ``dequantize()`` in the weight's dtype must equal
    it exactly, as packing requires. A weight changed after quantization (pruned, rotated, edited)
    would otherwise be exported as its stale codes. A packed layer (no float weight) is not checked."""
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        return
    if tuple(weight.shape) != qw.shape:
        raise SurefastError(f"internal: codes of {name} are {qw.shape}, its weight {tuple(weight.shape)}")
    if not qw.matches(weight):
        raise SurefastError(
            f"the recorded codes of {name} do not reproduce its weight (changed after quantization?)",
            "export right after quantizing, with the codes the quantizer recorded",
        )


def _dense_tensors(model: nn.Module, quantized: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of the state dict outside the quantized linears (their biases included),
    each storage once (tied embeddings: the first name, as ``save_pretrained`` keeps it)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for key, t in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in quantized and leaf != "bias":
            continue
        ident = (t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size(), tuple(t.shape))
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = t.detach().contiguous()
    return out


def quantization_config(schemes: Mapping[str, CTScheme], linears: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``quantization_config``: one group per scheme, like llm-compressor's."""
    by_scheme: dict[CTScheme, list[str]] = {}
    for name, scheme in schemes.items():
        by_scheme.setdefault(scheme, []).append(name)
    single = len(by_scheme) == 1
    groups = {
        f"group_{i}": scheme.config_group(["Linear"] if single else names)
        for i, (scheme, names) in enumerate(by_scheme.items())
    }
    formats = {s.format for s in by_scheme}
    return {
        "config_groups": groups,
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "global_compression_ratio": None,
        "ignore": [n for n in linears if n not in schemes],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    }


def export_compressed_tensors(
    model: nn.Module,
    codes: Mapping[str, QuantizedWeight],
    tokenizer: Any,
    out_dir: str | Path,
    *,
    scale_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``out_dir``: ``model.safetensors``, ``config.json`` with its ``quantization_config``, the tokenizer.

    ``codes``: linear module name -> the :class:`QuantizedWeight` its quantizer recorded. Those
    linears are written compressed; every other tensor (embeddings, norms, an unquantized
    ``lm_head``) as it is in the model. ``scale_dtype``: the scales' dtype on disk (default: the
    model's dtype, what llm-compressor writes and compressed-tensors allocates on load).
    """
    linears = checked_codes(model, codes)
    acts = input_transforms(model)
    for name, spec in acts.items():
        if name not in codes and (spec.get("hadamard") or int(spec.get("act_bits", 16)) < 16):
            raise SurefastError(
                f"{name} transforms its inputs but has no recorded weight codes", "compressed-tensors cannot express it"
            )
    dtype = scale_dtype or next(model.parameters()).dtype
    tensors = _dense_tensors(model, codes)
    schemes: dict[str, CTScheme] = {}
    regrouped: dict[tuple[int, int, int], list[str]] = {}  # (inputs, group, finer group) -> layers
    for name, qw in codes.items():
        scheme, scales, zeros = scheme_for(name, qw, acts.get(name))
        schemes[name] = scheme
        tensors.update({f"{name}.{k}": v for k, v in compress_weight(qw, scheme, scales, zeros, dtype).items()})
        if scheme.group_size is not None and scheme.group_size != qw.group_size:
            regrouped.setdefault((qw.shape[1], qw.group_size, scheme.group_size), []).append(name)
    for (inn, group, fine), names in regrouped.items():
        warnings.warn(
            f"{len(names)} layers with {inn} inputs (the first: {names[0]}) are not whole groups of {group}: "
            f"written with group {fine}, each scale repeated (the same weights); compressed-tensors needs whole groups",
            stacklevel=2,
        )
    hf: Any = model  # a transformers model: PretrainedConfig is untyped here
    config = hf.config.to_dict()
    config["quantization_config"] = quantization_config(schemes, linears)

    from safetensors.torch import save_file

    out = Path(out_dir)
    with write_errors(out, "choose a writable output folder"):
        out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    return out
