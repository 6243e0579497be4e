"""SpinQuant: QuaRot with learned rotations.

Liu, Zhao, Fedorov, Soran, Choudhary, Krishnamoorthi, Chandra, Tian, Blankevoort, "SpinQuant:
LLM Quantization with Learned Rotations" (ICLR 2025), Sec. 3-4: the residual rotation ``R1``
and the per-layer value-head rotations ``R2`` are learned on calibration data by minimising
the quantized network's next-token cross-entropy over the orthogonal group; the online
Hadamards before ``down_proj`` (``R4``) and ``o_proj`` stay fixed. The paper optimises with
Cayley SGD on the Stiefel manifold; we use the Cayley *parameterisation*
``R = R0 (I - A)^-1 (I + A)`` with ``A = X - X^T`` skew-symmetric, ``X`` trained by Adam from 0
(so training starts at QuaRot's randomized Hadamard ``R0``).

Our choices: rotations are learned with activations quantized (per token, straight-through
gradients) and weights in full precision, as the paper does for its GPTQ variant; the rotated
forward is simulated without touching the weights (norms fused first, then each quantized
input is rotated, quantized and rotated back: ``x -> Q(x R) R^T``), so a step costs one forward
and backward of the model plus ``O(T H^2)`` per layer. After learning, rotations are fused exactly
as in QuaRot and the weights quantized with GPTQ or RTN.

Learning rate: Adam moves every entry of ``X`` by about ``lr`` per step whatever its gradient,
and ``R`` changes by about ``2 lr sqrt(H)`` in operator norm, so the rate must shrink with the
width; the default 1e-4 is the largest rate that improved both the objective and a held-out
loss on SmolLM2 (docs/compress.md, "SpinQuant's learning rate", with the command). The paper
uses 800 samples x 2048 tokens and 100 steps on 8 A100s; on a CPU only small models are
practical (docs/compress.md, "CPU notes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from surefast.compress.api import register
from surefast.compress.quant.fake import fake_quant_tokens
from surefast.compress.quant.hadamard import HadamardTransform, hadamard_matrix, random_hadamard
from surefast.compress.quant.mappings import scale_groups
from surefast.compress.quant.quarot import QuaRot, QuaRotConfig, encode_matrix, norm_keep, rotate_model_
from surefast.compress.quant.rotation import head_dim, online_hadamard_targets, prepare_for_rotation_
from surefast.errors import SurefastError
from surefast.models.arch import decoder_layers


@dataclass(frozen=True)
class SpinQuantConfig(QuaRotConfig):
    method: ClassVar[str] = "spinquant"
    steps: int = 20
    lr: float = 1e-4  # Adam on the Cayley parameters (1e-3 made the loss worse, see the module docstring)
    batch_size: int = 1
    train_samples: int = 8  # calibration samples used for learning (the first ones)


def cayley(x: torch.Tensor) -> torch.Tensor:
    """Orthogonal ``(I - A)^-1 (I + A)`` for ``A = X - X^T`` (batched over leading dims).

    Each matrix of a batch is solved on its own: batched ``torch.linalg.solve`` on CPU with more
    than one thread can fail with "Pivots given to lu_solve must all be greater or equal to 1"
    (pytorch/pytorch#142815; it stopped SpinQuant on Gemma-3-270M's 18 x 256 x 256 head rotations).
    """
    a = x - x.transpose(-1, -2)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    if a.dim() == 2:
        return torch.linalg.solve(eye - a, eye + a)
    flat = a.reshape(-1, *a.shape[-2:])
    return torch.stack([torch.linalg.solve(eye - m, eye + m) for m in flat]).reshape(a.shape)


class _Rotated:
    """The hooks that simulate the rotated, activation-quantized model during learning."""

    def __init__(self, model: torch.nn.Module, arch: Any, bits: int, clip: float) -> None:
        self.bits, self.clip = bits, clip
        self.r1: Any = None  # [H, H], set before every step
        self.r2: Any = None  # [L, hd, hd]
        self.handles = []
        for i, block in enumerate(decoder_layers(model)):
            for group in scale_groups(block, arch, inner=False):
                self.handles.append(group.producer.register_forward_hook(self._norm_hook))
            o, *downs = online_hadamard_targets(block, arch)
            self.handles.append(o.register_forward_pre_hook(self._o_hook(i, HadamardTransform(o.in_features))))
            for d in downs:
                self.handles.append(d.register_forward_pre_hook(self._down_hook(HadamardTransform(d.in_features))))

    def q(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant_tokens(x, self.bits, True, self.clip) if self.bits < 16 else x

    def _norm_hook(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        r1 = self.r1
        return (self.q(out.float() @ r1) @ r1.T).to(out.dtype)

    def _o_hook(self, i: int, had: HadamardTransform) -> Any:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            x = args[0].float()
            r2 = self.r2[i]
            shape = x.shape
            x = (x.reshape(*shape[:-1], -1, r2.shape[0]) @ r2).reshape(shape)  # per head: v R2
            x = had.inverse(self.q(had(x)))
            x = (x.reshape(*shape[:-1], -1, r2.shape[0]) @ r2.T).reshape(shape)
            return (x.to(args[0].dtype),)

        return hook

    def _down_hook(self, had: HadamardTransform) -> Any:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            return (had.inverse(self.q(had(args[0].float()))).to(args[0].dtype),)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def learn_rotations(
    model: Any, arch: Any, ids: torch.Tensor, config: SpinQuantConfig, progress: Any = None
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Pure core (given a norm-fused model): learned ``R1 [H, H]``, ``R2 [L, hd, hd]`` and the loss curve."""
    layers = decoder_layers(model)
    hidden = model.get_input_embeddings().weight.shape[1]
    hd = head_dim(layers[0], arch, model.config)
    r1_0 = random_hadamard(hidden, config.seed, torch.float32)
    r2_0 = hadamard_matrix(hd, torch.float32).expand(len(layers), hd, hd)
    x1 = torch.zeros(hidden, hidden, requires_grad=True)
    x2 = torch.zeros(len(layers), hd, hd, requires_grad=True)
    opt = torch.optim.Adam([x1, x2], lr=config.lr)
    sim = _Rotated(model, arch, config.act_bits, config.clip)
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    train = ids[: max(config.train_samples, 1)]
    losses = []
    try:
        for step in range(config.steps):
            start = (step * config.batch_size) % len(train)
            batch = train[start : start + config.batch_size].to(device)
            sim.r1, sim.r2 = r1_0 @ cayley(x1), r2_0 @ cayley(x2)
            loss = model(batch, labels=batch, use_cache=False).loss
            if torch.isfinite(loss):
                loss.backward()
            if not (
                torch.isfinite(loss) and all(x.grad is not None and bool(x.grad.isfinite().all()) for x in (x1, x2))
            ):
                what = "loss" if not torch.isfinite(loss) else "gradient"
                raise SurefastError(
                    f"SpinQuant: the {what} is not finite at step {step + 1}",
                    "the activation-quantized model overflows; try a lower lr or more act_bits, "
                    "or use quarot, awq, gptq or smoothquant for this model",
                )
            opt.step()
            opt.zero_grad()
            losses.append(round(loss.item(), 5))
            if progress:
                progress(f"spinquant step {step + 1}/{config.steps}: loss {losses[-1]:.4f}")
        with torch.no_grad():
            r1 = r1_0.double() @ cayley(x1.detach().double())
            r2 = r2_0.double() @ cayley(x2.detach().double())
    finally:
        sim.remove()
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)
    return r1, r2, losses


@register(SpinQuantConfig)
class SpinQuant(QuaRot):
    config: SpinQuantConfig

    def prepare_model(self, model: torch.nn.Module, ctx: Any) -> None:
        prepare_for_rotation_(model, ctx.arch, norm_keep(self.config, ctx.arch))
        with torch.enable_grad():
            r1, r2, self.losses = learn_rotations(model, ctx.arch, ctx.ids(), self.config, ctx.progress)
        self.r1 = r1
        with torch.no_grad():
            self.online_norms = rotate_model_(model, ctx.arch, r1, list(r2), fuse=False)

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        recipe = super().finalize_model(model, ctx)
        recipe["spinquant_loss"] = self.losses
        if "norm_rotation" in recipe:
            recipe["norm_rotation"]["matrix_b64"] = encode_matrix(self.r1)
        return recipe


__all__ = ["SpinQuantConfig", "cayley", "learn_rotations"]
