"""QuaRot: outlier-free 4-bit inference with rotations (W4A4, W6A6, W8A8).

Ashkboos, Mohtashami, Croci, Li, Cameron, Jaggi, Alistarh, Hoefler, Hensman, "QuaRot:
Outlier-Free 4-Bit Inference in Rotated LLMs" (NeurIPS 2024), Sec. 4 and Fig. 3-4:

1. fold every RMSNorm's scale into the linears reading it;
2. rotate the residual stream by a randomized Hadamard matrix ``Q = diag(+-1) H`` (Sec. 4.1,
   "stage 1a", :mod:`surefast.compress.quant.rotation`);
3. rotate each value head by a Hadamard matrix, undone in ``o_proj`` (stage 1b), and apply an
   online Hadamard to the inputs of ``o_proj`` and ``down_proj`` (stage 1c/1d; its transpose is
   fused into their weights), so every quantized linear sees rotated inputs;
4. quantize the weights with GPTQ or RTN (per output channel by default) and every linear's
   input per token, dynamically (stage 2); optionally the KV cache (``kv_bits``, see below).

Choices: the activation clip ratio defaults to 0.9 at 4 bits and 1.0 above (the paper's
recommended setting for A4); per-head KV quantization (asymmetric, one scale per token and
head, after an online Hadamard of q and k past RoPE) is simulated through a registered attention
function; with Gemma3's sandwich norms the residual stream stays unrotated and each pre-norm's
output is rotated online, the norm keeping its scale (``norm_keep``, :mod:`.rotation`).
Non-power-of-two sizes use the Paley constructions of :mod:`surefast.compress.quant.hadamard`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import CompressionConfig, Method, register
from surefast.compress.quant.fake import check_bits, install_act_quant_, install_input_transform_
from surefast.compress.quant.gptq import GPTQConfig, gptq_quantize
from surefast.compress.quant.hadamard import hadamard_matrix, random_hadamard
from surefast.compress.quant.rotation import (
    final_norm,
    fuse_online_hadamard_,
    head_dim,
    install_norm_rotation_,
    online_hadamard_targets,
    prepare_for_rotation_,
    rotate_heads_,
    rotate_residual_,
    rotates_residual,
)
from surefast.compress.quant.rtn import RTNConfig, rtn_quantize
from surefast.models.arch import decoder_layers, get


@dataclass(frozen=True)
class QuaRotConfig(CompressionConfig):
    method: ClassVar[str] = "quarot"
    bits: int = 4
    act_bits: int = 4  # 16 = weight-only
    group_size: int = -1  # weights per output channel, as in the paper
    weight_method: str = "gptq"  # "gptq" or "rtn"
    symmetric: bool = True
    act_clip: float | None = None  # None: 0.9 for act_bits <= 4, else 1.0
    damp: float = 0.01  # GPTQ damping
    clip_search: bool = False  # clipped weight ranges (the paper's w_clip; not measured here yet)
    kv_bits: int = 16  # 16 = KV cache not quantized
    seed: int = 0  # the random signs of the residual Hadamard
    norm_keep: float = 1.0  # sandwich norms only: the norm keeps |s|^norm_keep, readers get the rest
    quantize: bool = True  # False: rotations only (an exact transform; used by tests)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_bits(self.act_bits, "act_bits", off=16)  # here, not once the model has loaded (and GPTQ run)
        if self.weight_method not in ("gptq", "rtn"):
            from surefast.errors import SurefastError

            raise SurefastError(f"unknown weight_method {self.weight_method!r}", "choose 'gptq' or 'rtn'")

    @property
    def clip(self) -> float:
        return self.act_clip if self.act_clip is not None else (0.9 if self.act_bits <= 4 else 1.0)


def norm_keep(config: Any, arch: Any) -> float:
    """The exponent of the norm scale kept in the norm: 0 (all folded) where the residual is rotated."""
    return 0.0 if rotates_residual(arch) else float(config.norm_keep)


def rotate_model_(
    model: torch.nn.Module, arch: Any, r1: torch.Tensor, r2: Any, *, keep: float = 0.0, fuse: bool = True
) -> list[str]:
    """Stages 1a-1d with residual rotation ``r1 [H, H]`` and head rotation ``r2 [hd, hd]``
    (one for all layers, a list with one per layer, or None); returns the norms rotated online.
    ``keep``: see :func:`norm_keep`; ``fuse=False``: norms already fused."""
    if fuse:
        prepare_for_rotation_(model, arch, keep)
    online = rotate_residual_(model, arch, r1)
    for i, block in enumerate(decoder_layers(model)):
        if r2 is not None:
            rotate_heads_(block, arch, r2[i] if isinstance(r2, (list, tuple)) else r2)
        for lin in online_hadamard_targets(block, arch):
            fuse_online_hadamard_(lin)
            install_input_transform_(lin, {"hadamard": True})
    return online


def weight_quantize(weight: torch.Tensor, stats: Any, config: Any) -> torch.Tensor:
    """RTN or GPTQ of one rotated weight, per the config (shared with SpinQuant)."""
    if config.weight_method == "gptq" and stats is not None and stats.n_rows > 0:  # else RTN (unrouted expert)
        gcfg = GPTQConfig(
            bits=config.bits,
            group_size=config.group_size,
            symmetric=config.symmetric,
            damp=config.damp,
            act_order=False,
            clip_search=config.clip_search,
        )
        return gptq_quantize(weight, stats.hessian, gcfg)[0]
    rcfg = RTNConfig(
        bits=config.bits, group_size=config.group_size, symmetric=config.symmetric, clip_search=config.clip_search
    )
    return rtn_quantize(weight, rcfg)


@register(QuaRotConfig)
class QuaRot(Method):
    config: QuaRotConfig

    def __init__(self, config: QuaRotConfig) -> None:
        super().__init__(config)
        self.needs = frozenset({"hessian"}) if config.quantize and config.weight_method == "gptq" else frozenset()
        self.online_norms: list[str] = []

    def rotations(self, model: Any, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = model.get_input_embeddings().weight.shape[1]
        hd = head_dim(decoder_layers(model)[0], ctx.arch, model.config)
        return random_hadamard(hidden, self.config.seed), hadamard_matrix(hd, torch.float64)

    def prepare_model(self, model: torch.nn.Module, ctx: Any) -> None:
        r1, r2 = self.rotations(model, ctx)
        self.r1 = r1
        self.online_norms = rotate_model_(model, ctx.arch, r1, r2, keep=norm_keep(self.config, ctx.arch))

    def compress_layer(self, name: str, weight: torch.Tensor, stats: Any) -> torch.Tensor:
        return weight_quantize(weight, stats, self.config) if self.config.quantize else weight

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        cfg = self.config
        recipe: dict[str, Any] = {}
        if cfg.quantize:
            install_act_quant_(ctx.selected, cfg.act_bits, True, cfg.clip)
            if cfg.kv_bits < 16:
                from surefast.compress.quant.kvquant import install_kv_quant_

                install_kv_quant_(model, cfg.kv_bits)
                recipe["kv_bits"] = cfg.kv_bits
        if self.online_norms:
            recipe["norm_rotation"] = {"seed": cfg.seed, "size": int(self.r1.shape[0]), "norms": self.online_norms}
        return recipe

    @classmethod
    def reapply(cls, model: torch.nn.Module, recipe: dict[str, Any]) -> None:
        post = recipe.get("norm_rotation") or recipe.get("post_norm_rotation")  # the latter: older saves
        if post:
            q = (
                decode_matrix(post["matrix_b64"], post["size"])
                if "matrix_b64" in post
                else random_hadamard(post["size"], post["seed"])
            )
            for name in post["norms"]:
                install_norm_rotation_(get(model, name), q)
        if recipe.get("kv_bits", 16) < 16:
            from surefast.compress.quant.kvquant import install_kv_quant_

            install_kv_quant_(model, recipe["kv_bits"])


def encode_matrix(m: torch.Tensor) -> str:
    """A float32 matrix as base64 text, for the JSON recipe (learned rotations)."""
    import base64

    return base64.b64encode(m.detach().float().contiguous().numpy().tobytes()).decode()


def decode_matrix(text: str, n: int) -> torch.Tensor:
    import base64

    import numpy as np

    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()).reshape(n, n)


__all__ = ["QuaRotConfig", "final_norm", "norm_keep", "rotate_model_", "weight_quantize"]
