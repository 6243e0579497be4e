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
from surefast.compress.quant.fake import check_bits, group_qparams, install_act_quant_, quant_dequant, weight_qparams
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
    """Pure core: ``W [out, in]``, ``H [in, in]`` -> (de-quantized ``Q(W)`` fp32, info).

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
        Q, loss = _columns(W, Hinv, config, static, perm)
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q, {"gptq_loss": float(loss.sum())}


def _columns(
    W: torch.Tensor, Hinv: torch.Tensor, config: GPTQConfig, static: Any, perm: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The column sweep: ``(Q(W) [out, in], per-row loss [out])``; ``W`` is updated in place."""
    n_out, n_in = W.shape
    bits, sym = config.bits, config.symmetric
    g = n_in if config.group_size <= 0 else config.group_size
    Q = torch.zeros_like(W)
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
            q = quant_dequant(w.unsqueeze(1), scale, zero, bits, sym).squeeze(1)  # type: ignore[arg-type]
            d = Hinv1[i, i]
            Q[:, col] = q
            err = (w - q) / d
            loss += (w - q) ** 2 / d**2 / 2
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q, loss


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
