"""Which linear layers compression touches, and mixture-of-experts modules as ordinary linears.

The decoder blocks, the text config and the per-architecture facts (which norm feeds which
projections, Gemma's ``1 + w`` norms, sandwich post-norms) are read by
:mod:`surefast.models.arch`, the one home of a model's structure; this module adds what only
compression needs on top: the linears of a block (:func:`block_linears`) and, below, the
unfusing of MoE experts.

Mixture-of-experts (qwen3_moe): transformers 5 stores all experts of a layer as two fused 3D
parameters (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``). :func:`unfuse_experts_`
swaps such a module for :class:`UnfusedExperts` (one ``nn.Linear`` per expert and projection,
same forward), so hooks, statistics and quantizers see each expert as an ordinary linear;
:func:`fuse_experts_` folds them back before saving so the folder loads with plain transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def default_filter(module: nn.Module, name: str) -> bool:
    """Every ``nn.Linear`` inside a decoder block (names are relative to the whole model)."""
    return isinstance(module, nn.Linear)


def block_linears(block: nn.Module, prefix: str, filter_fn: Any = None) -> dict[str, nn.Linear]:
    """Qualified name -> linear for the selected linears of one block, in module order."""
    keep = filter_fn or default_filter
    out = {}
    for name, module in block.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if isinstance(module, nn.Linear) and keep(module, full):
            out[full] = module
    return out


# --- mixture of experts ---------------------------------------------------------------------


def is_fused_experts(module: Any) -> bool:
    gu, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return (
        isinstance(gu, torch.Tensor)
        and isinstance(down, torch.Tensor)
        and gu.dim() == 3
        and down.dim() == 3
        and not isinstance(module, UnfusedExperts)
    )


class UnfusedExperts(nn.Module):
    """The experts of one MoE layer as per-expert ``nn.Linear`` pairs; same forward as the fused one.

    ``forward(hidden [T, H], top_k_index [T, k], top_k_weights [T, k]) -> [T, H]``: each token
    goes through the experts it was routed to, ``down(act(gate) * up)``, weighted and summed.
    """

    def __init__(self, fused: Any) -> None:
        super().__init__()
        gu, down = fused.gate_up_proj.detach(), fused.down_proj.detach()  # [E, 2I, H], [E, H, I]
        self.num_experts = gu.shape[0]
        self.act_fn = fused.act_fn
        self.fused_class = type(fused)
        self.gate_up: Any = nn.ModuleList()
        self.down: Any = nn.ModuleList()
        for e in range(self.num_experts):
            lin = nn.Linear(gu.shape[2], gu.shape[1], bias=False, device=gu.device, dtype=gu.dtype)
            lin.weight.data.copy_(gu[e])
            self.gate_up.append(lin)
            lin = nn.Linear(down.shape[2], down.shape[1], bias=False, device=down.device, dtype=down.dtype)
            lin.weight.data.copy_(down[e])
            self.down.append(lin)
        self._fused = [fused]  # a list, so the fused module is not registered as a child

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden)  # [T, H]
        for e in range(self.num_experts):
            token_idx, slot = torch.where(top_k_index == e)  # tokens routed to expert e
            if token_idx.numel() == 0:
                continue
            gate, up = self.gate_up[e](hidden[token_idx]).chunk(2, dim=-1)
            y = self.down[e](self.act_fn(gate) * up) * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out

    def fused(self) -> Any:
        """The original fused module with this module's (possibly compressed) weights."""
        fused = self._fused[0]
        fused.gate_up_proj.data.copy_(torch.stack([m.weight.data for m in self.gate_up]))
        fused.down_proj.data.copy_(torch.stack([m.weight.data for m in self.down]))
        return fused


def _swap(model: nn.Module, pred: Any, make: Any) -> list[str]:
    names = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if pred(child):
                setattr(module, child_name, make(child))
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


def unfuse_experts_(model: nn.Module) -> list[str]:
    """Replace every fused-experts module by :class:`UnfusedExperts`; returns their names."""
    return _swap(model, is_fused_experts, UnfusedExperts)


def fuse_experts_(model: nn.Module) -> list[str]:
    """Undo :func:`unfuse_experts_` (copying the current weights into the fused parameters)."""
    return _swap(model, lambda m: isinstance(m, UnfusedExperts), lambda m: m.fused())
