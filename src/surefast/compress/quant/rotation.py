"""Computational invariance: fuse norms, rotate the residual stream and the attention heads.

The transforms QuaRot and SpinQuant share (Ashkboos et al., "SliceGPT", ICLR 2024, Sec. 3.1-3.2
and "QuaRot", NeurIPS 2024, Sec. 4): with every RMSNorm's scale folded into the linears that read
it, ``rmsnorm(x Q) = rmsnorm(x) Q`` for any orthogonal ``Q``, so the residual stream can be
rotated: embeddings ``E Q``, readers ``W Q``, writers ``Q^T W`` (row-vector convention
``y = x W^T``), ``lm_head`` ``W Q``. The model computes the same function, and activations
lose their outlier channels. Per attention head, ``v`` and ``o`` can be rotated too (``R2``).

Architecture notes: Gemma's norms scale by ``1 + w`` (the offset is folded in). Tied embeddings
are untied (the head and the embeddings get different transforms).

Sandwich norms (Gemma3: a *post* norm on each sub-layer's output before the residual add) do not
commute with a rotation, so there the residual stream is left as it is and each pre-norm's
output is rotated online instead (``y Q``, a ``d x d`` product per token, as many as the post
norms would otherwise need; exact, and recorded for reloading); the readers get ``W Q``. Such a
norm need not be fused, and by default it is not: ``fuse_norms_(keep=a)`` leaves ``|s|^a`` in
the norm and folds ``s / |s|^a`` into the readers (QuaRot's ``norm_keep``, default 1). Folding
everything (``a = 0``, what a rotated residual stream requires) breaks a model whose pre-norm
scales span orders of magnitude (Gemma-3-270M's reach into the hundreds): each rotated weight
row then mixes columns of very different scales, and rounding keeps only the large ones. The
measurements behind the default are in docs/compress.md ("Gemma-3-270M and rotations").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from surefast.compress.arch import UnfusedExperts
from surefast.compress.quant.mappings import scale_groups
from surefast.models.arch import ArchFacts, decoder_layers, decoder_prefix, final_norm, get

NORM_HOOK_ATTR = "_surefast_norm_rotation"


def _set(param: Any, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


def untie_lm_head_(model: Any) -> None:
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr():
        head.weight = nn.Parameter(embed.weight.detach().clone())
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = False


def _fold_norm_(norm: Any, consumers: list[Any], offset: float, keep: float = 0.0) -> None:
    """Norm scale ``s`` -> the norm keeps ``|s|^keep``, the consumers' columns get ``s / |s|^keep``."""
    scale = norm.weight.data.double() + offset  # [H]
    kept = scale.abs().clamp_min(1e-12) ** keep if keep else torch.ones_like(scale)  # [H]
    for c in consumers:
        _set(c.weight, c.weight.data.double() * (scale / kept)[None, :])
    _set(norm.weight, kept - offset)  # keep = 0: the norm now only normalises


def rotates_residual(arch: ArchFacts) -> bool:
    """False for sandwich norms: there the pre-norm outputs are rotated online instead."""
    return not arch.post_norms


def fuse_norms_(model: Any, arch: ArchFacts, keep: float = 0.0) -> None:
    """Fold every pre-norm's scale (all but ``|s|^keep``) into its readers, and the final norm's
    into ``lm_head`` when the residual stream is to be rotated."""
    for block in decoder_layers(model):
        for group in scale_groups(block, arch, inner=False):
            _fold_norm_(group.producer, group.consumers, arch.norm_offset, keep)
    if rotates_residual(arch):
        _fold_norm_(final_norm(model), [model.get_output_embeddings()], arch.norm_offset)


def prepare_for_rotation_(model: Any, arch: ArchFacts, keep: float) -> None:
    """What QuaRot and SpinQuant do before any rotation: untie the head where the residual stream
    will be rotated (head and embeddings then get different transforms), then fuse the norms."""
    if rotates_residual(arch):
        untie_lm_head_(model)
    fuse_norms_(model, arch, keep)


def writers(block: Any, arch: ArchFacts) -> list[Any]:
    """The linears whose outputs are added to the residual stream."""
    mlp = get(block, arch.mlp)
    experts = getattr(mlp, "experts", None)
    downs = list(experts.down) if isinstance(experts, UnfusedExperts) else [get(mlp, arch.down)]
    return [get(block, f"{arch.attn}.{arch.o}"), *downs]


class NormRotation:
    """Forward hook on a norm: its output ``y -> y Q`` (sandwich-norm architectures)."""

    def __init__(self, q: torch.Tensor) -> None:
        self.q = q.float()

    def __call__(self, module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return (out.float() @ self.q.to(out.device)).to(out.dtype)


def install_norm_rotation_(norm: Any, q: torch.Tensor) -> None:
    old = getattr(norm, NORM_HOOK_ATTR, None)
    if old is not None:
        old.remove()
    setattr(norm, NORM_HOOK_ATTR, norm.register_forward_hook(NormRotation(q)))


def rotate_residual_(model: Any, arch: ArchFacts, q: torch.Tensor) -> list[str]:
    """Rotate the residual stream by orthogonal ``q [H, H]`` (every reader ``W q``); returns the
    norms whose output is rotated online instead (sandwich norms: the pre-norms, see above)."""
    q = q.double()
    rotate = rotates_residual(arch)
    online = []
    prefix = decoder_prefix(model)
    for i, block in enumerate(decoder_layers(model)):
        for group in scale_groups(block, arch, inner=False):
            for c in group.consumers:
                _set(c.weight, c.weight.data.double() @ q)
            if not rotate:
                install_norm_rotation_(group.producer, q)
                online.append(f"{prefix}.{i}.{group.producer_name}")
        if rotate:
            for w in writers(block, arch):
                _set(w.weight, q.T @ w.weight.data.double())
                if w.bias is not None:
                    _set(w.bias, w.bias.data.double() @ q)
    if rotate:
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        _set(embed.weight, embed.weight.data.double() @ q)
        _set(head.weight, head.weight.data.double() @ q)
    return online


def head_dim(block: Any, arch: ArchFacts, config: Any) -> int:
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    hd = getattr(text, "head_dim", None)
    return int(hd or text.hidden_size // text.num_attention_heads)


def rotate_heads_(block: Any, arch: ArchFacts, r2: torch.Tensor) -> None:
    """Rotate every value head by orthogonal ``r2 [hd, hd]`` (``v_h R2``) and undo it in ``o``."""
    r2 = r2.double()
    hd = r2.shape[0]
    v, o = get(block, f"{arch.attn}.{arch.v}"), get(block, f"{arch.attn}.{arch.o}")
    wv = v.weight.data.double().reshape(-1, hd, v.in_features)  # [kv_heads, hd, H]
    _set(v.weight, torch.einsum("de,kdh->keh", r2, wv).reshape(v.weight.shape))  # R2^T W_v per head
    if v.bias is not None:
        _set(v.bias, (v.bias.data.double().reshape(-1, hd) @ r2).reshape(-1))
    wo = o.weight.data.double().reshape(o.out_features, -1, hd)  # [H, heads, hd]
    _set(o.weight, (wo @ r2).reshape(o.weight.shape))


def fuse_online_hadamard_(linear: Any) -> None:
    """``W <- W H``: pairs with an online ``x -> x H`` before ``linear`` (installed separately)."""
    from surefast.compress.quant.hadamard import HadamardTransform

    _set(linear.weight, HadamardTransform(linear.in_features)(linear.weight.data.double()))  # rows: w -> w H


def online_hadamard_targets(block: Any, arch: ArchFacts) -> list[Any]:
    """QuaRot's online Hadamards: the inputs of o_proj and of every down projection."""
    return writers(block, arch)
