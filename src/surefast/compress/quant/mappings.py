"""Which module feeds which linears inside a decoder block, and exact channel rescaling.

A *scale group* is a producer (an RMSNorm, or a linear whose output rows feed the next linear)
and the consumers that read its output. Dividing the producer's output channel ``j`` by ``s_j``
and multiplying every consumer's input column ``j`` by ``s_j`` leaves the block's function
unchanged (``W diag(s) diag(s)^-1 x = W x``); AWQ and SmoothQuant choose ``s`` to make
quantization easier. Groups (from the architecture table, :mod:`surefast.models.arch`):

* attention norm -> q, k, v;
* MLP norm -> gate, up (MoE: the router and every expert's fused gate_up);
* v -> o, only when v's outputs map one to one onto o's inputs (no grouped-query sharing);
* up -> down (dense MLP only).

Gemma's norms compute ``x_hat * (1 + w)``: the offset is kept when rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surefast.compress.arch import UnfusedExperts
from surefast.models.arch import ArchFacts, get


@dataclass
class ScaleGroup:
    producer: Any  # an RMSNorm or nn.Linear
    kind: str  # "norm" or "linear"
    consumers: list[Any]  # modules with a 2D ``weight [out, in]`` reading the output
    names: list[str]  # their paths relative to the block
    producer_name: str
    rows: slice | None = None  # for a fused producer: the slice of its output rows (unused today)


def mlp_consumers(block: nn.Module, arch: ArchFacts) -> tuple[list[Any], list[str]]:
    mlp = get(block, arch.mlp)
    experts = getattr(mlp, "experts", None)
    if isinstance(experts, UnfusedExperts):
        router = get(mlp, "gate")
        mods = [router, *experts.gate_up]
        names = [f"{arch.mlp}.gate"] + [f"{arch.mlp}.experts.gate_up.{e}" for e in range(len(experts.gate_up))]
        return mods, names
    return [get(mlp, arch.gate), get(mlp, arch.up)], [f"{arch.mlp}.{arch.gate}", f"{arch.mlp}.{arch.up}"]


def scale_groups(block: nn.Module, arch: ArchFacts, inner: bool = True) -> list[ScaleGroup]:
    """The scale groups of one block; ``inner=False`` keeps only the two norm groups."""
    attn = f"{arch.attn}."
    groups = [
        ScaleGroup(
            get(block, arch.attn_norm),
            "norm",
            [get(block, attn + p) for p in (arch.q, arch.k, arch.v)],
            [attn + p for p in (arch.q, arch.k, arch.v)],
            arch.attn_norm,
        )
    ]
    mods, names = mlp_consumers(block, arch)
    groups.append(ScaleGroup(get(block, arch.mlp_norm), "norm", mods, names, arch.mlp_norm))
    if inner:
        v, o = get(block, attn + arch.v), get(block, attn + arch.o)
        if v.out_features == o.in_features:
            groups.append(ScaleGroup(v, "linear", [o], [attn + arch.o], attn + arch.v))
        up, down = get(block, f"{arch.mlp}.{arch.up}"), get(block, f"{arch.mlp}.{arch.down}")
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear):
            groups.append(ScaleGroup(up, "linear", [down], [f"{arch.mlp}.{arch.down}"], f"{arch.mlp}.{arch.up}"))
    return groups


def scale_group_(group: ScaleGroup, s: torch.Tensor, norm_offset: float = 0.0) -> None:
    """Producer output channel ``j`` / ``s_j``; consumers' input column ``j`` * ``s_j``. Exact."""
    s = s.float()
    p = group.producer
    if group.kind == "norm":
        w = p.weight.data.float()
        p.weight.data.copy_(((w + norm_offset) / s - norm_offset).to(p.weight.dtype))
    else:
        p.weight.data.copy_((p.weight.data.float() / s[:, None]).to(p.weight.dtype))
        if getattr(p, "bias", None) is not None:
            p.bias.data.copy_((p.bias.data.float() / s).to(p.bias.dtype))
    for c in group.consumers:
        c.weight.data.copy_((c.weight.data.float() * s[None, :]).to(c.weight.dtype))


def consumer_weight_absmax(group: ScaleGroup) -> torch.Tensor:
    """``max_i |W_ij|`` over all consumers' rows: ``[in]``."""
    return torch.stack([c.weight.detach().float().abs().amax(0) for c in group.consumers]).amax(0)


def group_stats(stats: dict[str, Any], block_name: str, names: list[str]) -> Any:
    """Statistics of a group's shared input. Consumers that all saw every token (q, k, v) share
    one input: the first one's stats. MoE experts each saw their routed tokens: merged (sums
    added, maxima taken, rows concatenated), which covers every token the router sent anywhere."""
    from surefast.compress.calibrate import MAX_INPUT_ROWS, LinearStats

    found = [st for n in names if (st := stats.get(f"{block_name}.{n}")) is not None and st.n_rows > 0]
    if not found:
        return None
    if not any(".experts." in n for n in names):
        return found[0]
    merged = LinearStats(n_rows=sum(st.n_rows for st in found))
    if found[0].sumsq is not None:
        merged.sumsq = torch.stack([st.sumsq for st in found]).sum(0)
    if found[0].absmax is not None:
        merged.absmax = torch.stack([st.absmax for st in found]).amax(0)
    if found[0].inputs is not None:
        rows = torch.cat([st.inputs for st in found])
        merged.inputs = rows[:: max(1, -(-len(rows) // MAX_INPUT_ROWS))]
    return merged
