"""Fake-quantization helpers: integer grids per group (weights) and per token (activations).

Weights ``W [out, in]`` are quantized in groups of ``group_size`` consecutive input channels
(``group_size <= 0``: one group per output row, i.e. per channel; a last group may be partial,
e.g. 576 = 4 x 128 + 64 for SmolLM2). Grids:

* symmetric: ``q = clamp(round(w / s), -2^(b-1), 2^(b-1) - 1)``, ``s = max|w| / (2^(b-1) - 1)``;
* asymmetric: ``q = clamp(round(w / s) + z, 0, 2^b - 1)``, ``s = (max - min) / (2^b - 1)``,
  ``z = round(-min / s)``, with the range widened to contain 0 (as GPTQ's reference does) so
  that zero stays exactly representable.

Activations are quantized per token (one scale per row of the last dimension), dynamically,
by :class:`InputTransform`, a forward pre-hook on a linear layer that can first apply an online
Hadamard rotation (QuaRot). Its spec is a plain dict so that it is saved in
``surefast_compression.json`` and re-installed after loading.

Recorded codes: the de-quantized weight a quantizer returns carries the integer codes, scales
and zero points it was rounded from, as a :class:`~surefast.compress.lowbit.codes.QuantizedWeight`
in the tensor's attribute ``CODES_ATTR`` (:func:`attach_codes`, read by :func:`codes_of`).
The pipeline's ``BlockContext.set_weight`` moves them onto the linear it writes (the same
attribute on the module), where :func:`surefast.compress.lowbit.pack.pack_` finds them. Riding
on the tensor, they reach the pipeline through any method that hands the quantizer's tensor on
unchanged (RTN, GPTQ, AWQ, SmoothQuant, QuaRot and SpinQuant's weight step, a plugin calling
:func:`fake_quant_weight`), and are lost, as they should be, by any later arithmetic on it. A
grid that cannot be packed records a string instead: the reason, which packing reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

if TYPE_CHECKING:
    from surefast.compress.lowbit.codes import QuantizedWeight

HOOK_ATTR = "_surefast_input_transform"
CODES_ATTR = "_surefast_codes"  # on a de-quantized weight tensor, then on its linear: see the module docstring
Codes = Union["QuantizedWeight", str]  # the codes, or why this grid has none that can be packed


def check_bits(bits: int, what: str = "bits", off: int | None = None) -> None:
    """``bits`` in 2..8; with ``off``, also ``off`` or more (that many bits means not quantized)."""
    from surefast.errors import SurefastError

    try:
        ok = 2 <= int(bits) <= 8 or (off is not None and int(bits) >= off)
    except (TypeError, ValueError, OverflowError):  # "x", NaN, infinity: one line, not int()'s traceback
        ok = False
    if not ok:
        raise SurefastError(f"{what}={bits} is out of range", "integer quantization supports 2 to 8 bits (16 = off)")


def qparams(w: torch.Tensor, bits: int, symmetric: bool, clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point along the last dim of ``w [..., g]``: both ``[..., 1]``."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (w.abs().amax(-1, keepdim=True) * clip / qmax).clamp_min(1e-10)
        return scale, torch.zeros_like(scale)
    lo = w.amin(-1, keepdim=True).clamp(max=0) * clip
    hi = w.amax(-1, keepdim=True).clamp(min=0) * clip
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-10)
    return scale, torch.round(-lo / scale)


def search_qparams(
    w: torch.Tensor, bits: int, symmetric: bool, grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped scale and zero of ``w [..., g]`` (``[..., 1]`` each) minimising ``sum |w - Q(w)|^norm``.

    Tries the ranges ``clip * [min, max]`` for ``clip = 1, 1 - 1/grid, ..., 1 - max_shrink`` and keeps,
    per group, the one with the least error: clipping a few large weights buys a finer grid for
    the rest. The search and its constants (100 steps, shrink to 0.2, the 2.4-norm) follow the
    ``mse`` option of the GPTQ reference quantizer, which QuaRot uses for its weights (``w_clip``).
    """
    best_scale, best_zero = qparams(w, bits, symmetric)
    best_err = (quant_dequant(w, best_scale, best_zero, bits, symmetric) - w).abs().pow(norm).sum(-1, keepdim=True)
    for i in range(1, int(max_shrink * grid) + 1):
        scale, zero = qparams(w, bits, symmetric, clip=1 - i / grid)
        err = (quant_dequant(w, scale, zero, bits, symmetric) - w).abs().pow(norm).sum(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def quant_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The grid points ``q`` of ``w`` (integer-valued floats, same shape): what packing stores."""
    if symmetric:
        return torch.clamp(torch.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def dequant(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """Grid points back to reals: ``q s`` or ``(q - z) s`` (the very operations QuantizedWeight.dequantize does)."""
    return q * scale if symmetric else (q - zero) * scale


def quant_dequant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round ``w`` onto the grid given by ``scale``/``zero`` and map back to reals."""
    return dequant(quant_codes(w, scale, zero, bits, symmetric), scale, zero, symmetric)


def weight_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, group_size: int) -> Codes:
    """The record of a weight's grid: ``q [out, in]`` integer-valued, ``scale``/``zero`` ``[out, n_groups]``
    (``zero`` None when symmetric), ``group_size`` as the quantizer used it (``<= 0``: per channel)."""
    from surefast.compress.lowbit.codes import QuantizedWeight  # late: lowbit may import this module

    if zero is not None and bits == 8:  # 0..255 does not fit the int8 codes of the contract
        return "8-bit asymmetric codes (0..255) do not fit int8; quantize 8 bits with symmetric=True to pack"
    cols = q.shape[1]
    g = cols if group_size <= 0 or group_size >= cols else group_size
    return QuantizedWeight(
        q.to(torch.int8), scale.float().contiguous(), None if zero is None else zero.float(), bits, g
    )


def attach_codes(weight: torch.Tensor, codes: Codes | None) -> torch.Tensor:
    """``weight`` itself, now carrying ``codes`` (the grid it was rounded from); returned for chaining."""
    if codes is not None:
        setattr(weight, CODES_ATTR, codes)
    return weight


def codes_of(obj: torch.Tensor | nn.Module) -> Codes | None:
    """The codes a de-quantized weight tensor carries, or those recorded on a linear; None without."""
    return getattr(obj, CODES_ATTR, None)


def record_codes_(linear: nn.Module, codes: Codes | None) -> None:
    """Keep ``codes`` on ``linear`` (None forgets older ones: its weight was just overwritten without)."""
    if codes is not None:
        setattr(linear, CODES_ATTR, codes)
    elif hasattr(linear, CODES_ATTR):
        delattr(linear, CODES_ATTR)


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[out, in] -> [out, n_groups, g]``; a partial last group is padded with zeros, which
    changes neither grid (``max|w|`` ignores them; the asymmetric range always contains 0)."""
    out, cols = w.shape
    g = cols if group_size <= 0 or group_size >= cols else group_size
    pad = -cols % g
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(out, (cols + pad) // g, g)  # [out, n_groups, g]


def group_qparams(
    w: torch.Tensor, bits: int, symmetric: bool, clip_search: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero of ``w [..., g]``: the full range, or the searched clip (:func:`search_qparams`)."""
    return search_qparams(w, bits, symmetric) if clip_search else qparams(w, bits, symmetric)


def weight_qparams(
    w: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip_search: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group scale and zero of ``w [out, in]``: ``[out, n_groups, 1]`` each."""
    return group_qparams(_groups(w.float(), group_size), bits, symmetric, clip_search)


def fake_quant_weight(
    w: torch.Tensor, bits: int, group_size: int = 128, symmetric: bool = True, clip_search: bool = False
) -> torch.Tensor:
    """Round-to-nearest group quantization of ``w [out, in]``, de-quantized (fp32), carrying its codes."""
    out, cols = w.shape
    g = _groups(w.float(), group_size)  # [out, n_groups, g]
    scale, zero = group_qparams(g, bits, symmetric, clip_search)  # [out, n_groups, 1] each
    q = quant_codes(g, scale, zero, bits, symmetric)  # [out, n_groups, g]
    deq = dequant(q, scale, zero, symmetric).reshape(out, -1)[:, :cols]
    codes = weight_codes(
        q.reshape(out, -1)[:, :cols], scale[..., 0], None if symmetric else zero[..., 0], bits, group_size
    )
    return attach_codes(deq, codes)


def fake_quant_tokens(x: torch.Tensor, bits: int, symmetric: bool = True, clip: float = 1.0) -> torch.Tensor:
    """Dynamic per-token quantization of ``x [..., H]`` (one scale per row), same dtype back.

    When ``x`` needs a gradient (SpinQuant's rotation learning), rounding passes it straight
    through (the straight-through estimator, Bengio et al. 2013).
    """
    xf = x.float()
    scale, zero = qparams(xf.detach() if x.requires_grad else xf, bits, symmetric, clip)
    q = quant_dequant(xf, scale, zero, bits, symmetric)
    if x.requires_grad:
        q = xf + (q - xf).detach()
    return q.to(x.dtype)


class InputTransform:
    """Forward pre-hook of a linear: optional online Hadamard, then optional per-token fake-quant.

    ``spec``: ``{"hadamard": bool, "act_bits": int (16 = off), "act_sym": bool, "act_clip": float}``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = dict(spec)
        self._had: Any = None

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if self.spec.get("hadamard"):
            if self._had is None:
                from surefast.compress.quant.hadamard import HadamardTransform

                self._had = HadamardTransform(x.shape[-1])
            x = self._had(x)
        bits = int(self.spec.get("act_bits", 16))
        if bits < 16:
            x = fake_quant_tokens(x, bits, self.spec.get("act_sym", True), self.spec.get("act_clip", 1.0))
        return (x, *args[1:])


def install_input_transform_(linear: nn.Module, spec: dict[str, Any]) -> None:
    """Attach (or replace) the input transform of ``linear``."""
    old = getattr(linear, HOOK_ATTR, None)
    if old is not None:
        old[1].remove()
        spec = {**old[0].spec, **spec}
    hook = InputTransform(spec)
    setattr(linear, HOOK_ATTR, (hook, linear.register_forward_pre_hook(hook)))


def input_transforms(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Qualified name -> spec of every installed input transform (what gets saved)."""
    return {name: getattr(m, HOOK_ATTR)[0].spec for name, m in model.named_modules() if hasattr(m, HOOK_ATTR)}


def install_act_quant_(linears: dict[str, nn.Module], bits: int, symmetric: bool = True, clip: float = 1.0) -> None:
    if bits >= 16:
        return
    check_bits(bits, "act_bits")
    for lin in linears.values():
        install_input_transform_(lin, {"act_bits": int(bits), "act_sym": symmetric, "act_clip": clip})
