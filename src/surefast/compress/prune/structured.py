"""Shape surgery shared by the structured pruners: shrink linears, embeddings, experts; count params.

These functions really shrink a model (new, smaller parameters) so the result saves and loads as
an ordinary Hugging Face checkpoint once the config is updated to match. Pure tensor helpers
(``select_rows``) sit beside the in-place module edits (names ending in ``_``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from surefast.compress.api import Method
from surefast.compress.arch import fuse_experts_, is_fused_experts
from surefast.models.arch import ArchFacts, decoder_layers, get


def keep_linear_(lin: nn.Linear, keep: torch.Tensor, dim: str) -> None:
    """Keep only output rows (``dim="out"``) or input columns (``dim="in"``) ``keep`` of ``lin``."""
    keep = keep.to(lin.weight.device)
    if dim == "out":
        lin.weight = nn.Parameter(lin.weight.detach().index_select(0, keep).clone(), requires_grad=False)
        if lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias.detach().index_select(0, keep).clone(), requires_grad=False)
        lin.out_features = int(keep.numel())
    elif dim == "in":
        lin.weight = nn.Parameter(lin.weight.detach().index_select(1, keep).clone(), requires_grad=False)
        lin.in_features = int(keep.numel())
    else:
        raise ValueError(dim)


def set_linear_weight_(lin: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Replace ``lin``'s weight (any new shape) and optionally its bias, in ``lin``'s dtype."""
    dtype, device = lin.weight.dtype, lin.weight.device
    lin.weight = nn.Parameter(weight.to(device, dtype).contiguous(), requires_grad=False)
    lin.out_features, lin.in_features = lin.weight.shape
    if bias is not None:
        lin.bias = nn.Parameter(bias.to(device, dtype).contiguous(), requires_grad=False)


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the given heads in a ``[n_heads * head_dim, ...]`` projection."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def lowest_per_group(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Indices to keep ``[G, n - remove]`` (sorted, local to each group) of ``scores [G, n]``
    after dropping the ``remove`` lowest of every group (stable: earlier index dropped first)."""
    order = torch.sort(scores, dim=1, stable=True).indices[:, remove:]
    return torch.sort(order, dim=1).values


def experts_of(mlp: Any) -> Any:
    """The fused experts module of an MoE block (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``)."""
    experts = getattr(mlp, "experts", None)
    return experts if experts is not None and is_fused_experts(experts) else None


def keep_expert_channels_(experts: Any, keep: torch.Tensor) -> None:
    """Keep intermediate channels ``keep [E, I']`` (per expert) of fused experts."""
    gu, down = experts.gate_up_proj.detach(), experts.down_proj.detach()  # [E, 2I, H], [E, H, I]
    inter = down.shape[2]
    keep = keep.to(gu.device)
    rows = torch.cat([keep, keep + inter], dim=1)  # gate rows then up rows
    gu = torch.gather(gu, 1, rows[:, :, None].expand(-1, -1, gu.shape[2]))
    down = torch.gather(down, 2, keep[:, None, :].expand(-1, down.shape[1], -1))
    experts.gate_up_proj = nn.Parameter(gu.contiguous(), requires_grad=False)
    experts.down_proj = nn.Parameter(down.contiguous(), requires_grad=False)
    if hasattr(experts, "intermediate_dim"):
        experts.intermediate_dim = int(keep.shape[1])


def ensure_fused_experts_(model: nn.Module) -> None:
    """Structured pruners edit the fused 3D expert tensors: undo the pipeline's unfusing first."""
    fuse_experts_(model)


def block_param_count(model: nn.Module, facts: ArchFacts) -> int:
    """Parameters of the prunable projections (attention q/k/v/o and MLP or experts) of all blocks."""
    total = 0
    for layer in decoder_layers(model):
        for path in (facts.attn, facts.mlp):
            module = get(layer, path)
            for name, p in module.named_parameters():
                if "norm" in name or name.endswith("gate.weight"):  # q/k norms and the MoE router stay
                    continue
                total += p.numel()
    return total


def config_accepts(config: Any, **changes: Any) -> bool:
    """Whether ``config`` stays valid with ``changes`` applied (Llama's config insists that
    ``hidden_size`` is a multiple of ``num_attention_heads``, even with an explicit ``head_dim``)."""
    trial = copy.deepcopy(config)
    trial.head_dim = getattr(trial, "head_dim", None) or trial.hidden_size // trial.num_attention_heads
    for key, value in changes.items():
        setattr(trial, key, value)
    validate = getattr(trial, "validate", None)
    if validate is None:
        return True
    try:
        validate()
    except Exception:  # huggingface_hub's strict-dataclass error wraps the config's ValueError
        return False
    return True


def param_count(model: nn.Module) -> int:
    """All distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


class WholeModelMethod(Method):
    """A structured method that rewrites the whole model in ``prepare_model``: shapes change, so
    the pipeline's per-block pass has nothing left to do. Subclasses set ``label`` and ``transform``."""

    label = ""

    def transform(self, model: nn.Module, ids: torch.Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def prepare_model(self, model: nn.Module, ctx: Any) -> None:
        ctx.say(self.label)
        self.stats = self.transform(model, ctx.ids())
        ctx.layers = decoder_layers(model)
        ctx.unfused_experts = []  # the transform fused experts back

    def compress_block(self, block: Any) -> None:
        pass

    def finalize_model(self, model: nn.Module, ctx: Any) -> dict[str, Any]:
        return {"structured": True, "stats": self.stats}
