"""AWQ: activation-aware weight quantization (W4A16 by default).

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight
Quantization for LLM Compression and Acceleration" (MLSys 2024), Sec. 3.2, eq. 4-5: per scale
group (a norm or linear and the linears reading its output), search
``s = s_X^alpha`` with ``s_X`` the mean input magnitude per channel and ``alpha`` on a grid of
``n_grid`` points in ``[0, 1)``, minimising ``|| Q(W diag(s)) (diag(s)^-1 X) - W X ||``; fold
``s`` into the producer (exact before quantization), then round-to-nearest group quantization.

Choices where the paper or its code differ from ours: the loss is the summed squared output
error of the group's own linears on ``max_rows`` sampled calibration rows (the
reference code runs the whole attention or MLP module; ours needs no modeling code); ``s`` is
normalised by ``sqrt(max(s) min(s))`` as in the reference; no weight-clipping search
(the reference's optional ``auto_clip``); v->o is searched only without grouped-query sharing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, Method, register
from surefast.compress.quant.fake import check_bits, fake_quant_weight, install_act_quant_
from surefast.compress.quant.mappings import group_stats, scale_group_, scale_groups


@dataclass(frozen=True)
class AWQConfig(CompressionConfig):
    method: ClassVar[str] = "awq"
    bits: int = 4
    group_size: int = 128
    symmetric: bool = False  # the AWQ reference uses zero points
    n_grid: int = 20
    max_rows: int = 1024  # calibration rows used by the scale search (a CPU-friendly subsample)
    act_bits: int = 16
    quantize: bool = True  # False: only migrate the scales (an exact transform; used by tests)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_bits(self.act_bits, "act_bits", off=16)  # here, not once the model has loaded (and GPTQ run)


def awq_search(weights: list[torch.Tensor], x: torch.Tensor, config: AWQConfig) -> tuple[torch.Tensor, float]:
    """Pure core: the best per-channel scale ``s [in]`` for linears ``W_i [out_i, in]`` sharing input ``x [r, in]``.

    Returns ``(s, alpha)``; ``alpha = 0`` (``s = 1``) is always on the grid, so AWQ never does
    worse than plain RTN on the calibration rows.
    """
    x = x.float()
    s_x = x.abs().mean(0).clamp_min(1e-8)  # [in], from all sampled rows
    x = x[:: max(1, -(-len(x) // config.max_rows))]  # [r, in] rows the loss is measured on
    refs = [x @ w.float().T for w in weights]  # [r, out_i]
    best, best_s, best_alpha = float("inf"), torch.ones_like(s_x), 0.0
    for k in range(config.n_grid):
        alpha = k / config.n_grid
        s = s_x.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        xs = x / s  # [r, in]
        loss = 0.0
        for w, ref in zip(weights, refs, strict=True):
            q = fake_quant_weight(w.float() * s, config.bits, config.group_size, config.symmetric)
            loss += (xs @ q.T - ref).pow(2).mean().item()
        if loss < best:
            best, best_s, best_alpha = loss, s, alpha
    return best_s, best_alpha


@register(AWQConfig, needs=("inputs",))
class AWQ(Method):
    config: AWQConfig

    def compress_block(self, block: Any) -> None:
        cfg = self.config
        alphas = {}
        for group in scale_groups(block.block, block.arch):
            st = group_stats(block.stats, block.name, group.names)
            if st is None or st.inputs is None:
                continue
            # search only over linears that will be quantized; all consumers are rescaled
            chosen = [
                c.weight.detach()
                for c, n in zip(group.consumers, group.names, strict=True)
                if block.qualified(n) in block.linears
            ]
            if not chosen:
                continue
            s, alpha = awq_search(chosen, st.inputs, cfg)
            scale_group_(group, s, block.arch.norm_offset)
            alphas[group.producer_name] = alpha
        if cfg.quantize:
            for name, lin in block.linears.items():
                q = fake_quant_weight(lin.weight.detach().float(), cfg.bits, cfg.group_size, cfg.symmetric)
                block.set_weight(name, q)
        if alphas:
            block.info.setdefault(f"{block.name}.awq", {})["alpha"] = alphas

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        if self.config.quantize:
            install_act_quant_(ctx.selected, self.config.act_bits)
        return {}
