"""Shared pieces of the VLM tests: tiny VLM pairs, synthetic images / videos, the target's own greedy output."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch

from surefast.models.tiny import tiny_model, tiny_tokenizer
from surefast.speculate.vlm import VisualInputs, prepare_inputs

VLM_ARCHS = ("llava_onevision", "qwen2_5_vl")
MEDIA = ("image", "video")


def image(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


def video(frames: int = 4, size: int = 56, seed: int = 1) -> list[np.ndarray]:
    return [image(size, size, seed + i) for i in range(frames)]


def media(kind: str) -> dict[str, Any]:
    return {"images": [image(70, 100)]} if kind == "image" else {"video": video()}


QUESTION = "Describe it: \x10q7@ zk"  # odd bytes give the random models varied prompts


@functools.cache
def target(arch: str) -> Any:
    return tiny_model(arch, 0)


@functools.cache
def draft(arch: str, kind: str = "perturbed") -> Any:
    """A draft that agrees with the target often but not always (noisy copy), or an unrelated one."""
    if kind == "unrelated":
        return tiny_model(arch, 1)
    gen = torch.Generator().manual_seed(1)
    out = copy.deepcopy(target(arch))
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05 * p.float().std().clamp(min=1e-3))
    return out.eval()


@functools.cache
def inputs(arch: str, kind: str) -> VisualInputs:
    return prepare_inputs(tiny_tokenizer(), target(arch), QUESTION, **media(kind))


@functools.cache
def reference(arch: str, kind: str, n: int) -> tuple[int, ...]:
    """The target's own greedy ``generate`` on the same inputs (no EOS stop)."""
    inp = inputs(arch, kind)
    with torch.no_grad():
        out = target(arch).generate(
            **inp.generate_kwargs(), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return tuple(out[0, inp.input_ids.shape[1] :].tolist())
