"""GPTQ: one-shot weight quantization with second-order error compensation.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers" (ICLR 2023), Algorithm 1. Per linear layer, minimise
``||W X - Q(W) X||^2`` with the Hessian ``H = 2 X^T X / n`` of the calibration inputs:
columns are quantized left to right and each column's error ``(w_q - q) / [H^-1]_qq`` is spread
over the columns not yet quantized with the upper Cholesky factor of ``H^-1`` (eq. 3 and the
"Cholesky reformulation"); updates are applied lazily in blocks of ``block_size`` columns.

Choices where the paper is silent (as in its reference code): dead inputs (``H_jj = 0``) get
``H_jj = 1`` and zero weight; damping adds ``damp * mean(diag H)`` to the diagonal; with
``act_order`` columns go in order of decreasing ``H_jj``, and groups are by default "static"
(scales computed up front on the original contiguous groups), so the result lies on the same
grid layout as RTN and needs no ``g_idx``; otherwise (no act-order, or ``static_groups=False``)
a group is a run of ``group_size`` columns in quantization order and its scale is computed from
the error-updated weights when the group is reached (with act-order, a real kernel would need
a ``g_idx``; fake quantization does not care). With ``clip_search`` each group's range is
the clipped one that minimises its own rounding error (:func:`~.fake.search_qparams`).

The sweep records the code of each column as it quantizes it, and each group's scale and zero
point, and the returned weight carries them (:func:`~.fake.attach_codes`), so the packed model
holds exactly the grid GPTQ chose. Dynamic groups with act-order have no contiguous grid (a
group's columns are scattered): they record why instead, and packing refuses them.

Defaults: act-order (static groups) and the clip search are on. Both are in the reference code
but off there by default; together they were best or near best on every model we measured, at
some extra time (docs/compress.md, "GPTQ's defaults").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, Method, register
from surefast.compress.linalg import inverse_upper_cholesky, one_thread_on_cpu
from surefast.compress.quant.fake import (
    Codes,
    attach_codes,
    check_bits,
    dequant,
    group_qparams,
    install_act_quant_,
    quant_codes,
    weight_codes,
    weight_qparams,
)
from surefast.errors import SurefastError


@dataclass(frozen=True)
class GPTQConfig(CompressionConfig):
    method: ClassVar[str] = "gptq"
    bits: int = 4
    group_size: int = 128  # -1 = per output channel
    symmetric: bool = True
    damp: float = 0.01  # fraction of mean(diag H) added to the diagonal
    block_size: int = 128  # columns per lazy-update block
    act_order: bool = True  # columns by decreasing H_jj (llm-compressor's default too)
    static_groups: bool = True  # with act_order: scales of the original groups, computed up front
    clip_search: bool = True  # per-group clipped ranges (fake.search_qparams) instead of full ranges
    act_bits: int = 16  # 16 = weight-only (W4A16)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_bits(self.act_bits, "act_bits", off=16)  # here, not once the model has loaded (and GPTQ run)


def gptq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, config: GPTQConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pure core: ``W [out, in]``, ``H [in, in]`` -> (de-quantized ``Q(W)`` fp32 carrying its codes, info).

    The factorisation uses every thread; the column sweep runs on one (see ``one_thread_on_cpu``).
    """
    W = weight.float().clone()  # [out, in]
    H = hessian.float().clone()  # [in, in]
    g = W.shape[1] if config.group_size <= 0 else config.group_size

    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    static = None
    if config.act_order:
        if config.static_groups:  # ([out, n_groups, 1], [out, n_groups, 1]) on the original groups
            static = weight_qparams(W, config.bits, g, config.symmetric, config.clip_search)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    else:
        perm = None

    H.diagonal().add_(config.damp * torch.mean(torch.diag(H)))
    Hinv = inverse_upper_cholesky(H)  # [in, in] upper factor of H^-1
    if Hinv is None:  # badly conditioned: fall back to a stronger damping once
        H.diagonal().add_(0.1 * torch.mean(torch.diag(H)))
        Hinv = inverse_upper_cholesky(H)
        if Hinv is None:
            raise SurefastError(
                "GPTQ: a layer Hessian is not positive definite even after dampening",
                "raise damp (e.g. 0.1) or use more calibration samples",
            )
    with one_thread_on_cpu(W.device):
        Q, C, scales, zeros, loss = _columns(W, Hinv, config, static, perm)
    if perm is not None:
        back = torch.argsort(perm)
        Q, C = Q[:, back], C[:, back]
    codes: Codes
    if config.act_order and not config.static_groups:
        codes = (
            "GPTQ with act_order and static_groups=False has no contiguous group grid (a packed "
            "format would need a g_idx); compress with static_groups=True to pack"
        )
    else:
        codes = weight_codes(C, scales, None if config.symmetric else zeros, config.bits, config.group_size)
    return attach_codes(Q, codes), {"gptq_loss": float(loss.sum())}


def _columns(
    W: torch.Tensor, Hinv: torch.Tensor, config: GPTQConfig, static: Any, perm: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The column sweep; ``W`` is updated in place. Returns ``Q(W) [out, in]``, its codes
    ``C [out, in]`` (integer-valued, in sweep order like ``Q``), the scales and zero points of
    the original contiguous groups ``[out, n_groups]`` (not meaningful for dynamic groups with
    act-order) and the per-row loss ``[out]``."""
    n_out, n_in = W.shape
    bits, sym = config.bits, config.symmetric
    g = n_in if config.group_size <= 0 else config.group_size
    Q = torch.zeros_like(W)
    C = torch.zeros_like(W)
    n_groups = -(-n_in // g)
    if static is not None:
        scales, zeros = static[0][..., 0], static[1][..., 0]  # [out, n_groups]
    else:
        scales, zeros = torch.zeros(n_out, n_groups), torch.zeros(n_out, n_groups)
    loss = torch.zeros(n_out)
    scale = zero = None
    bs = config.block_size
    for i1 in range(0, n_in, bs):
        i2 = min(i1 + bs, n_in)
        W1 = W[:, i1:i2].clone()  # [out, b]
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            w = W1[:, i]  # [out]
            if static is not None:
                gi = int(perm[col]) // g  # type: ignore[index]
                scale, zero = static[0][:, gi], static[1][:, gi]  # [out, 1]
            elif col % g == 0:  # entering a group: scale from the current (error-updated) weights
                cols = torch.cat([W1[:, i : i + g], W[:, i2 : i2 + max(0, g - (i2 - col))]], dim=1)  # [out, g]
                scale, zero = group_qparams(cols, bits, sym, config.clip_search)
                scales[:, col // g], zeros[:, col // g] = scale[:, 0], zero[:, 0]  # group col // g, in sweep order
            c = quant_codes(w.unsqueeze(1), scale, zero, bits, sym)  # type: ignore[arg-type]  # [out, 1]
            q = dequant(c, scale, zero, sym).squeeze(1)  # type: ignore[arg-type]  # = quant_dequant, bit for bit
            d = Hinv1[i, i]
            Q[:, col] = q
            C[:, col] = c.squeeze(1)
            err = (w - q) / d
            loss += (w - q) ** 2 / d**2 / 2
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q, C, scales, zeros, loss


@register(GPTQConfig, needs=("hessian",))
class GPTQ(Method):
    config: GPTQConfig

    def compress_layer(self, name: str, weight: torch.Tensor, stats: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        if stats is None or stats.n_rows == 0:  # an MoE expert no calibration token reached: RTN
            from surefast.compress.quant.fake import fake_quant_weight

            return fake_quant_weight(weight, cfg.bits, cfg.group_size, cfg.symmetric, cfg.clip_search), {
                "fallback": "rtn"
            }
        return gptq_quantize(weight, stats.hessian, cfg)

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        install_act_quant_(ctx.selected, self.config.act_bits)
        return {}
