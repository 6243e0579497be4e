"""SpinQuant: learned rotations stay orthogonal, lower the quantized loss, and fuse exactly."""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_
from surefast.compress.quant.rotation import fuse_norms_, untie_lm_head_
from surefast.compress.quant.spinquant import SpinQuantConfig, cayley, learn_rotations
from surefast.models.arch import arch_facts


def test_cayley_is_orthogonal() -> None:
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    r = cayley(x)
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(8, dtype=torch.float64).expand(3, 8, 8), atol=1e-10)
    assert torch.allclose(cayley(torch.zeros(4, 4)), torch.eye(4))


def test_cayley_batch_with_threads() -> None:
    """pytorch/pytorch#142815: batched CPU solves with 2 threads fail at 151 x 151 and up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(2, 151, 151, generator=torch.Generator().manual_seed(0)) * 0.01
        r = cayley(x)
        identity = cayley(torch.zeros(2, 151, 151))  # the reproducer: identity systems
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(r[1], cayley(x[1]), atol=1e-6)
    assert torch.allclose(identity, torch.eye(151).expand(2, 151, 151))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_learned_rotations_fuse_exactly(tiny, calib_ids, probe_ids, arch) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    ref = model(probe_ids).logits
    result = compress_(model, SpinQuantConfig(quantize=False, steps=3, lr=0.05), calib_ids)
    assert len(result.recipe["spinquant_loss"]) == 3
    assert (model(probe_ids).logits - ref).abs().max() < 1e-3


def test_learning_lowers_the_quantized_loss(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    untie_lm_head_(model)
    fuse_norms_(model, arch_facts(model))
    cfg = SpinQuantConfig(act_bits=3, steps=25, lr=1e-3, train_samples=1)  # one fixed batch
    r1, r2, losses = learn_rotations(model, arch_facts(model), calib_ids, cfg)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.1  # quantization noise makes single steps noisy
    assert torch.allclose(r1 @ r1.T, torch.eye(r1.shape[0], dtype=r1.dtype), atol=1e-8)
    assert r2.shape == (2, 16, 16)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_an_overflowing_model_stops_with_a_clear_error(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    from surefast.errors import SurefastError

    model = tiny("gemma3")
    untie_lm_head_(model)
    fuse_norms_(model, arch_facts(model))
    block = model.model.layers[0]
    block.register_forward_hook(
        lambda mod, args, out: (out[0] * float("inf"), *out[1:]) if isinstance(out, tuple) else out * float("inf")
    )
    with pytest.raises(SurefastError, match="not finite at step 1"):
        learn_rotations(model, arch_facts(model), calib_ids, SpinQuantConfig(steps=2))
