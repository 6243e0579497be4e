"""SliceGPT: delete rows and columns by rotating the residual stream onto its principal directions.

Ashkboos et al., "SliceGPT: Compress Large Language Models by Deleting Rows and Columns" (ICLR 2024).
Computational invariance (paper section 3.2): once each RMSNorm's gain is folded into the linears
that read its output, ``RMSNorm(x Q) = RMSNorm(x) Q`` for any orthogonal ``Q``, so rotating the
embeddings, every weight that writes to the residual stream (``o_proj``, ``down_proj``) by ``Q``
and every weight that reads from it (q/k/v, gate/up, router, ``lm_head``) by ``Q^T`` leaves the
model's function unchanged. With ``Q`` the eigenvectors of the residual stream's covariance
(PCA on calibration data, paper eq. 6) sorted by eigenvalue, the last directions carry the least
signal; keeping the first ``D'`` columns ``Q_s [D, D']`` shrinks the embedding dimension
(paper section 3.3): every residual-stream matrix loses rows or columns.

**Our choice: one rotation for the whole network.** The paper computes a ``Q_l`` per block and
inserts a shortcut matrix ``Q_l^T Q_{l+1}`` on every residual connection. Standard Hugging Face
modules have no place for such a matrix, so a per-block ``Q`` would not save or load as a normal
checkpoint. With a single ``Q`` the shortcuts are identities and vanish: the sliced model is an
ordinary model of the same architecture with ``hidden_size = D'``. ``Q`` is the PCA of the
pooled, RMS-normalised residual stream read by every norm (two per block plus the final one;
normalising first gives every position and depth equal weight). The price: one subspace must
serve every depth, so at the same ratio more signal is lost than with per-block ``Q_l`` and
perplexity is worse than the paper's. At ``ratio = 0`` the model is exactly equivalent.

Other details: HF RMSNorm divides by the RMS over ``D'`` channels, not ``D``; the kept
components carry (almost) all of ``||x||``, so the norms' new gain is the constant
``sqrt(D / D')``. Tied embeddings are untied (the output side needs the final norm's gain
folded in). ``D'`` is lowered to a multiple of ``multiple_of`` (default 1; 8 or 64 suit GPU
kernels) that the config accepts: Llama's config requires ``hidden_size`` to be a multiple of
``num_attention_heads`` (SmolLM2-135M: 9 heads, so 20% of 576 gives 459, not 460).
Architectures with norms on a sub-layer's *output* before the residual add (Gemma 2/3 "sandwich"
norms) are not invariant under a rotation of the residual stream and are refused.
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
    config_accepts,
    ensure_fused_experts_,
    experts_of,
    param_bytes,
    param_count,
    set_linear_weight_,
)
from surefast.errors import SurefastError
from surefast.models.arch import ArchFacts, arch_facts, decoder_body, decoder_layers, final_norm, get, text_config

BATCH = 4


@dataclass(frozen=True)
class SliceGPTConfig(CompressionConfig):
    """``ratio``: share of the embedding dimension removed; ``multiple_of``: round the new
    dimension down to it; ``n_samples``: calibration sequences used for the PCA (0 = all)."""

    method: ClassVar[str] = "slicegpt"
    ratio: float = 0.2
    multiple_of: int = 1
    n_samples: int = 0

    def __post_init__(self) -> None:
        # numbers first: "x" < 1 would be a TypeError, not a one-line SurefastError
        if not isinstance(self.ratio, numbers.Real) or not 0.0 <= self.ratio < 1.0:
            raise SurefastError(f"slicegpt ratio must be in [0, 1), got {self.ratio!r}", "the default is 0.2")
        if not isinstance(self.multiple_of, numbers.Real) or self.multiple_of < 1:
            raise SurefastError(f"slicegpt multiple_of must be >= 1, got {self.multiple_of!r}", "the default is 1")


def new_dim(hidden: int, ratio: float, multiple_of: int = 1, accepts: Callable[[int], bool] | None = None) -> int:
    """``D' = floor(D * (1 - ratio))``, lowered to the nearest multiple of ``multiple_of`` that the
    config ``accepts`` (``D`` itself at ratio 0)."""
    dim = int(hidden * (1 - ratio) + 1e-6)
    if dim >= hidden:
        return hidden
    while dim > 1 and (dim % multiple_of or (accepts is not None and not accepts(dim))):
        dim -= 1
    return max(dim, 1)


def check_sliceable(facts: ArchFacts) -> None:
    if facts.post_norms or facts.embed_scale:
        raise SurefastError(
            f"slicegpt cannot slice {facts.model_type}: its norms on sub-layer outputs "
            f"({', '.join(facts.post_norms) or 'scaled embeddings'}) do not commute with a rotation "
            "of the residual stream",
            "use llm-pruner or an unstructured method for this model",
        )


def principal_directions(cov: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of ``cov [D, D]`` as columns, largest eigenvalue first (fp64). ``[D, D]``."""
    vals, vecs = torch.linalg.eigh(cov.double())
    return vecs[:, torch.argsort(vals, descending=True)]


def residual_covariance(model: Any, ids: torch.Tensor, facts: ArchFacts) -> torch.Tensor:
    """``sum_t x_t^T x_t`` over every token of ``ids [N, S]`` and every residual read
    (the inputs of each block's two norms and the final norm), with ``x_t`` RMS-normalised. fp64 ``[D, D]``."""
    layers = decoder_layers(model)
    norms = [get(layer, name) for layer in layers for name in (facts.attn_norm, facts.mlp_norm)]
    norms.append(final_norm(model))
    hidden = text_config(model).hidden_size
    cov = torch.zeros(hidden, hidden, dtype=torch.float64)

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().reshape(-1, hidden).float().cpu()  # [T, D]
        x = x / x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
        cov.add_(x.T @ x)  # fp32 product per batch (entries ~1), summed in fp64

    handles = [n.register_forward_pre_hook(hook) for n in norms]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in ids.split(BATCH):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return cov


def _gain(norm: Any, facts: ArchFacts) -> torch.Tensor:
    return norm.weight.detach().double() + facts.norm_offset  # [D]


def _set_norm_(norm: Any, facts: ArchFacts, dim: int, value: float) -> None:
    w = torch.full((dim,), value - facts.norm_offset, dtype=norm.weight.dtype, device=norm.weight.device)
    norm.weight = nn.Parameter(w, requires_grad=False)


def _read(lin: nn.Linear, gain: torch.Tensor, Q: torch.Tensor) -> None:
    """A linear reading the residual: ``W diag(g) Q`` ``[out, D']``."""
    set_linear_weight_(
        lin, (lin.weight.detach().double() * gain[None, :].to(lin.weight.device)) @ Q.to(lin.weight.device)
    )


def _write(lin: nn.Linear, Q: torch.Tensor) -> None:
    """A linear writing the residual: ``Q^T W`` ``[D', in]``, bias ``b Q``."""
    Q = Q.to(lin.weight.device)
    bias = None if lin.bias is None else lin.bias.detach().double() @ Q
    set_linear_weight_(lin, Q.T @ lin.weight.detach().double(), bias)


def rotate_and_slice_(model: Any, Q: torch.Tensor) -> None:
    """Apply ``Q [D, D']`` (orthonormal columns) to every residual-stream matrix of ``model``,
    fold the norms and set ``hidden_size = D'``. Exact when ``D' = D``."""
    facts = arch_facts(model)
    cfg = text_config(model)
    hidden, dim = Q.shape
    Q = Q.double()
    scale = (hidden / dim) ** 0.5
    layers = decoder_layers(model)
    decoder = decoder_body(model)
    emb = model.get_input_embeddings()
    emb.weight = nn.Parameter(
        (emb.weight.detach().double() @ Q.to(emb.weight.device)).to(emb.weight.dtype), requires_grad=False
    )
    emb.embedding_dim = dim
    for layer in layers:
        attn, mlp = get(layer, facts.attn), get(layer, facts.mlp)
        attn_norm, mlp_norm = get(layer, facts.attn_norm), get(layer, facts.mlp_norm)
        g = _gain(attn_norm, facts)
        for name in (facts.q, facts.k, facts.v):
            _read(get(attn, name), g, Q)
        _write(get(attn, facts.o), Q)
        g = _gain(mlp_norm, facts)
        experts = experts_of(mlp)
        if experts is not None:
            router = get(mlp, "gate")
            router.weight = nn.Parameter(
                ((router.weight.detach().double() * g) @ Q).to(router.weight.dtype), requires_grad=False
            )
            gu, down = experts.gate_up_proj.detach(), experts.down_proj.detach()  # [E, 2I, D], [E, D, I]
            experts.gate_up_proj = nn.Parameter(((gu.double() * g) @ Q).to(gu.dtype), requires_grad=False)
            experts.down_proj = nn.Parameter((Q.T @ down.double()).to(down.dtype).contiguous(), requires_grad=False)
        else:
            for name in (facts.gate, facts.up):
                _read(get(mlp, name), g, Q)
            _write(get(mlp, facts.down), Q)
        _set_norm_(attn_norm, facts, dim, scale)
        _set_norm_(mlp_norm, facts, dim, scale)
    final = get(decoder, facts.final_norm)
    head = model.get_output_embeddings()
    g = _gain(final, facts)
    if head.weight is emb.weight or getattr(model.config, "tie_word_embeddings", False):
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    _read(head, g, Q)
    _set_norm_(final, facts, dim, scale)
    _untie_(model)
    for module in model.modules():  # cached widths (routers reshape with them)
        for attr in ("hidden_size", "hidden_dim"):
            if getattr(module, attr, None) == hidden and not isinstance(getattr(module, attr), nn.Module):
                setattr(module, attr, dim)
    cfg.head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    cfg.hidden_size = dim


def _untie_(model: Any) -> None:
    for config in {id(c): c for c in (model.config, text_config(model))}.values():
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False
    if hasattr(model, "all_tied_weights_keys"):  # transformers 5 caches the tying map at init
        model.all_tied_weights_keys = {}


def slice_(model: Any, ids: torch.Tensor, config: SliceGPTConfig) -> dict[str, Any]:
    """PCA on ``ids [N, S]``, then rotate and slice ``model`` in place; returns statistics."""
    facts = arch_facts(model)
    check_sliceable(facts)
    ensure_fused_experts_(model)
    hidden = text_config(model).hidden_size
    dim = new_dim(hidden, config.ratio, config.multiple_of, lambda d: config_accepts(text_config(model), hidden_size=d))
    before, before_bytes = param_count(model), param_bytes(model)
    cov = residual_covariance(model, ids[: config.n_samples or None], facts)
    vecs = principal_directions(cov)
    vals = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0)
    with torch.no_grad():
        rotate_and_slice_(model, vecs[:, :dim])
    return {
        "hidden_before": hidden,
        "hidden_after": dim,
        "params_before": before,
        "params_after": param_count(model),
        "bytes_before": before_bytes,
        "bytes_after": param_bytes(model),
        "kept_variance": round(float(vals[:dim].sum() / vals.sum().clamp_min(1e-30)), 6),
    }


@register(SliceGPTConfig)
class SliceGPTMethod(WholeModelMethod):
    """Whole-model rotation and slicing in ``prepare_model``; the per-block pass does nothing."""

    label = "slicegpt: PCA of the residual stream"

    def transform(self, model: nn.Module, ids: torch.Tensor) -> dict[str, Any]:
        return slice_(model, ids, self.config)  # type: ignore[arg-type]
