"""LLM-Pruner: dependency-aware structured pruning by first-order Taylor importance.

Ma, Fang & Wang, "LLM-Pruner: On the Structural Pruning of Large Language Models" (NeurIPS 2023).
Coupled structures are removed together so the model stays consistent (paper section 3.1):

- **attention head**: the head's ``head_dim`` rows of ``q_proj`` (and its bias), and the same
  columns of ``o_proj``; with grouped-query attention the key/value heads are shared, so query
  heads are removed in equal numbers from every KV group (the KV projections stay). Without GQA
  (one query head per KV head) the head's ``k_proj``/``v_proj`` rows go with it;
- **MLP channel** ``j``: row ``j`` of ``gate_proj`` and ``up_proj`` and column ``j`` of
  ``down_proj``; in a mixture of experts, channel ``j`` of each expert separately ("experts
  pruned per expert"; the router is untouched).

Importance (paper eq. 4-6, element-wise first order, "sum" aggregation):
``I(group) = sum over the group's weights of |w * dL/dw|``, ``L`` the causal-LM loss on a few
calibration sequences (``n_samples`` x ``seq_len``, CPU-friendly defaults).

Our choices where the paper's setup does not fit a standard Hugging Face config:

- **Uniform per layer.** A config has one ``num_attention_heads`` and one ``intermediate_size``,
  so every block loses the same number of heads per KV group and the same number of channels
  (which ones is decided per block by importance). The paper also skips the first and last
  blocks; we prune all, keeping the config valid.
- **Budget.** ``ratio`` is the share of the blocks' projection parameters removed (embeddings,
  norms, ``lm_head`` and routers excluded). Heads are coarse, so ``floor(ratio * heads per KV
  group)`` heads per group go first (at least one stays); MLP channels then take the rest of the
  budget (``round``), so each block misses the target by at most half a channel group. Experts
  keep a multiple of 8 channels: transformers' grouped expert kernel needs 16-byte row strides.
- LoRA recovery (the paper's optional step 3) is not implemented here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from surefast.compress.api import CompressionConfig, register
from surefast.compress.prune.structured import (
    WholeModelMethod,
    block_param_count,
    config_accepts,
    ensure_fused_experts_,
    experts_of,
    head_rows,
    keep_expert_channels_,
    keep_linear_,
    lowest_per_group,
    param_bytes,
    param_count,
)
from surefast.errors import SurefastError
from surefast.models.arch import ArchFacts, arch_facts, decoder_layers, get, text_config


@dataclass(frozen=True)
class LLMPrunerConfig(CompressionConfig):
    """``ratio``: share of block projection parameters removed; ``prune_heads``: also remove
    attention heads (else MLP channels only); gradients from ``n_samples`` x ``seq_len`` tokens."""

    method: ClassVar[str] = "llm-pruner"
    ratio: float = 0.2
    prune_heads: bool = True
    n_samples: int = 8
    seq_len: int = 128

    def __post_init__(self) -> None:
        # numbers first: "x" < 1 would be a TypeError, not a one-line SurefastError
        if not isinstance(self.ratio, numbers.Real) or not 0.0 <= self.ratio < 0.9:
            raise SurefastError(f"llm-pruner ratio must be in [0, 0.9), got {self.ratio!r}", "the default is 0.2")
        sizes = (self.n_samples, self.seq_len)
        if not all(isinstance(v, numbers.Real) for v in sizes) or self.n_samples < 1 or self.seq_len < 2:
            raise SurefastError(
                "llm-pruner needs at least one calibration sequence of 2+ tokens",
                f"got n_samples={self.n_samples!r}, seq_len={self.seq_len!r}; the defaults are 8 and 128",
            )


# --- importance --------------------------------------------------------------------------------


def taylor(param: Any) -> torch.Tensor:
    """Element-wise first-order Taylor importance ``|w * grad|`` in fp32 (zeros without a grad)."""
    if param.grad is None:
        return torch.zeros(param.shape)
    return (param.detach().float() * param.grad.float()).abs().cpu()


def accumulate_gradients_(model: nn.Module, ids: torch.Tensor, facts: ArchFacts) -> None:
    """Backpropagate the causal-LM loss of ``ids [N, S]`` (one sequence at a time) into the
    ``.grad`` of the blocks' attention and MLP parameters only (embeddings need none)."""
    device = next(model.parameters()).device
    params = [
        p for layer in decoder_layers(model) for path in (facts.attn, facts.mlp) for p in get(layer, path).parameters()
    ]
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            for row in ids:
                batch = row[None].to(device)  # [1, S]
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss / len(ids)
                loss.backward()
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))


def head_scores(attn: Any, facts: ArchFacts, n_heads: int, n_kv: int, head_dim: int) -> torch.Tensor:
    """Importance of each query head ``[n_heads]``: its q rows (+bias) and o columns, plus its
    k/v rows when each KV head serves one query head (they are removed with it)."""
    q, k, v, o = (get(attn, name) for name in (facts.q, facts.k, facts.v, facts.o))
    s = taylor(q.weight).reshape(n_heads, head_dim, -1).sum((1, 2))
    s += taylor(o.weight).reshape(o.weight.shape[0], n_heads, head_dim).sum((0, 2))
    if q.bias is not None:
        s += taylor(q.bias).reshape(n_heads, head_dim).sum(1)
    if n_heads == n_kv:
        for lin in (k, v):
            s += taylor(lin.weight).reshape(n_kv, head_dim, -1).sum((1, 2))
            if lin.bias is not None:
                s += taylor(lin.bias).reshape(n_kv, head_dim).sum(1)
    return s


def channel_scores(mlp: Any, facts: ArchFacts) -> torch.Tensor:
    """Importance of each intermediate channel: ``[I]`` (dense MLP) or ``[E, I]`` (experts)."""
    experts = experts_of(mlp)
    if experts is not None:
        gu, down = taylor(experts.gate_up_proj), taylor(experts.down_proj)  # [E, 2I, H], [E, H, I]
        inter = down.shape[2]
        return gu[:, :inter].sum(2) + gu[:, inter:].sum(2) + down.sum(1)
    gate, up, down = (get(mlp, name) for name in (facts.gate, facts.up, facts.down))
    return taylor(gate.weight).sum(1) + taylor(up.weight).sum(1) + taylor(down.weight).sum(0)


# --- budget ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrunePlan:
    heads_per_group: int  # query heads removed from every KV group (or KV heads when no GQA)
    channels: int  # MLP channels removed per block (per expert in an MoE block)
    target_params: int
    planned_params: int


def plan(
    config: LLMPrunerConfig,
    n_heads: int,
    n_kv: int,
    head_dim: int,
    hidden: int,
    layers: int,
    inter: int,
    mlp_units: int,
    block_params: int,
    accepts: Callable[[int], bool] | None = None,
) -> PrunePlan:
    """How many heads and channels every block loses (see the module docstring).

    ``mlp_units``: matrices sharing a channel index (1 for dense, E for E experts); one channel
    costs ``3 * hidden * mlp_units`` parameters, one query head ``2 * hidden * head_dim``
    (``4 *`` when its K/V head goes with it). ``accepts(n_heads')``: whether the config allows
    that many query heads (fewer heads are removed until it does).
    """
    target = round(config.ratio * block_params)
    per_group = n_heads // n_kv
    units = n_heads if per_group == 1 else per_group
    heads = min(int(config.ratio * units + 1e-6), units - 1) if config.prune_heads else 0
    while heads and accepts is not None and not accepts(n_heads - heads * (n_kv if per_group > 1 else 1)):
        heads -= 1
    head_cost = (4 if per_group == 1 else 2) * hidden * head_dim
    removed_heads = heads * (n_kv if per_group > 1 else 1) * head_cost * layers
    channel_cost = 3 * hidden * mlp_units * layers
    channels = max(0, min(inter - 1, round((target - removed_heads) / channel_cost)))
    if mlp_units > 1:  # experts: keep a multiple of 8 channels (transformers' grouped_mm needs 16-byte strides)
        kept = max(8, round((inter - channels) / 8) * 8)
        channels = max(0, inter - kept)
    return PrunePlan(heads, channels, target, removed_heads + channels * channel_cost)


# --- surgery -----------------------------------------------------------------------------------


def prune_attention_(attn: Any, facts: ArchFacts, keep: torch.Tensor, n_kv: int, head_dim: int, with_kv: bool) -> None:
    """Keep query heads ``keep`` (sorted); with ``with_kv`` the same K/V heads too."""
    rows = head_rows(keep, head_dim)
    keep_linear_(get(attn, facts.q), rows, "out")
    keep_linear_(get(attn, facts.o), rows, "in")
    if with_kv:
        keep_linear_(get(attn, facts.k), rows, "out")
        keep_linear_(get(attn, facts.v), rows, "out")
        n_kv = int(keep.numel())
    attn.num_key_value_groups = int(keep.numel()) // n_kv
    for name in ("num_heads", "num_attention_heads"):
        if hasattr(attn, name):
            setattr(attn, name, int(keep.numel()))


def prune_mlp_(mlp: Any, facts: ArchFacts, keep: torch.Tensor) -> None:
    """Keep intermediate channels ``keep``: ``[I']`` (dense) or ``[E, I']`` (experts)."""
    experts = experts_of(mlp)
    if experts is not None:
        keep_expert_channels_(experts, keep)
        return
    keep_linear_(get(mlp, facts.gate), keep, "out")
    keep_linear_(get(mlp, facts.up), keep, "out")
    keep_linear_(get(mlp, facts.down), keep, "in")
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = int(keep.numel())


def llm_prune_(model: Any, ids: torch.Tensor, config: LLMPrunerConfig) -> dict[str, Any]:
    """Prune ``model`` in place (shapes and config change); returns before/after statistics."""
    facts = arch_facts(model)
    ensure_fused_experts_(model)
    cfg = text_config(model)
    layers = decoder_layers(model)
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    kinds = {experts_of(get(layer, facts.mlp)) is not None for layer in layers}
    if len(kinds) > 1:
        raise SurefastError(
            "llm-pruner: mixed dense and mixture-of-experts blocks are not supported",
            "use an unstructured method (wanda, sparsegpt) for this model",
        )
    moe = kinds.pop()
    if moe:
        experts = experts_of(get(layers[0], facts.mlp))
        n_exp, inter = experts.down_proj.shape[0], experts.down_proj.shape[2]
    else:
        n_exp, inter = 1, get(layers[0], f"{facts.mlp}.{facts.gate}").out_features
    before_params, before_bytes = param_count(model), param_bytes(model)
    before_block = block_param_count(model, facts)

    def accepts(heads: int) -> bool:
        return config_accepts(cfg, num_attention_heads=heads, num_key_value_heads=heads if n_heads == n_kv else n_kv)

    p = plan(config, n_heads, n_kv, head_dim, cfg.hidden_size, len(layers), inter, n_exp, before_block, accepts)

    accumulate_gradients_(model, ids[: config.n_samples, : config.seq_len], facts)
    per_group = n_heads // n_kv
    with torch.no_grad():
        for layer in layers:
            attn, mlp = get(layer, facts.attn), get(layer, facts.mlp)
            if p.heads_per_group:
                hs = head_scores(attn, facts, n_heads, n_kv, head_dim)
                groups = hs.reshape(1, -1) if per_group == 1 else hs.reshape(n_kv, per_group)
                local = lowest_per_group(groups, p.heads_per_group)  # [G, kept per group]
                keep = (local + torch.arange(groups.shape[0])[:, None] * groups.shape[1]).reshape(-1)
                prune_attention_(attn, facts, keep, n_kv, head_dim, with_kv=per_group == 1)
            if p.channels:
                keep = lowest_per_group(channel_scores(mlp, facts).reshape(n_exp, inter), p.channels)
                prune_mlp_(mlp, facts, keep if moe else keep[0])
    for param in model.parameters():
        param.grad = None
    new_heads = n_heads - p.heads_per_group * (n_kv if per_group > 1 else 1)
    cfg.head_dim = head_dim  # explicit: hidden_size // num_attention_heads no longer holds
    cfg.num_attention_heads = new_heads
    if per_group == 1:
        cfg.num_key_value_heads = new_heads
    setattr(cfg, "moe_intermediate_size" if moe else "intermediate_size", inter - p.channels)
    after_block = block_param_count(model, facts)
    return {
        "params_before": before_params,
        "params_after": param_count(model),
        "bytes_before": before_bytes,
        "bytes_after": param_bytes(model),
        "block_params_before": before_block,
        "block_params_after": after_block,
        "removed_share": round(1 - after_block / max(1, before_block), 6),
        "target_params": p.target_params,
        "heads_removed_per_group": p.heads_per_group,
        "channels_removed": p.channels,
        "num_attention_heads": new_heads,
        "intermediate_size": inter - p.channels,
    }


@register(LLMPrunerConfig)
class LLMPrunerMethod(WholeModelMethod):
    """Whole-model structured pruning in ``prepare_model``; the per-block pass does nothing."""

    label = "llm-pruner: gradients and importance"

    def transform(self, model: nn.Module, ids: torch.Tensor) -> dict[str, Any]:
        return llm_prune_(model, ids, self.config)  # type: ignore[arg-type]
