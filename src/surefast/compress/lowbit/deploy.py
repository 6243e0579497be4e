"""What a model costs to serve: resident weight bytes and one-token decode speed, packed where it can be.

A study job calls :func:`measure_deployment` once per (model, compression) after scoring, so the
report can put "deployment readiness" beside accuracy, coverage and set size: for a compression
whose codes pack (RTN, GPTQ, AWQ, SmoothQuant, QuaRot, SpinQuant), the model is packed
(:func:`~.pack.pack_`) and measured as a packed model; the dense model is measured as it is (the
bf16 baseline); a compression that does not pack (pruning) is measured as it runs, de-quantized
or sparse in bf16, and says so.

Decode speed is the median of ``tokens`` one-token greedy forwards with a KV cache after
``warmup`` ones (the kernel choice of a packed model happens in the warm-up), at the thread count
of the process: a figure of this machine, recorded with its CPU and threads.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from surefast.compress.lowbit.linear import PackedLinear
from surefast.compress.lowbit.pack import pack_, packable, packed_report
from surefast.errors import SurefastError

PROMPT = "Write a function that returns the n-th Fibonacci number."


def resident_bytes(model: nn.Module) -> int:
    """Bytes the model's tensors hold in memory now, each storage once: parameters, buffers and
    each packed layer's :meth:`~.linear.PackedLinear.resident_bytes` (kernel layouts included,
    codes it dropped not)."""
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    inside = {id(t) for m in packed for t in m._buffers.values() if t is not None}
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in [*model.parameters(), *model.buffers()]
        if id(t) not in inside
    }
    return sum(storages.values()) + sum(m.resident_bytes() for m in packed)


@torch.no_grad()
def decode_ms(model: nn.Module, prompt: torch.Tensor, tokens: int, warmup: int) -> list[float]:
    """Per-token milliseconds of ``tokens`` greedy one-token forwards ``[1, 1]`` with a KV cache, after ``warmup``."""
    from surefast.models.arch import cache_kwarg

    hf: Any = model
    keyword = cache_kwarg(hf)  # "cache" where transformers has it: no deprecation warning per token
    out = hf(prompt, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)  # nxt [1, 1]
    times = []
    for i in range(warmup + tokens):
        start = time.perf_counter()
        out = hf(nxt, **{keyword: past}, use_cache=True)
        elapsed = time.perf_counter() - start
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        if i >= warmup:
            times.append(elapsed * 1e3)
    return times


def measure_deployment(
    model: nn.Module, tokenizer: Any, config: Any = None, *, tokens: int = 32, warmup: int = 4
) -> dict[str, Any]:
    """Pack ``model`` in place when ``config`` (its compression; None: dense) packs, then measure it.

    Returns plain JSON: ``packed`` (whether it runs packed), ``formats`` (layers per format),
    ``weight_bytes`` (:func:`resident_bytes` after the decode), ``decode_ms`` and
    ``decode_tok_s`` (median), ``threads``, and ``note`` (why it is not packed, if it is not).
    """
    note = None
    if config is not None:
        refusal = packable(config)
        if refusal is None:
            try:
                pack_(model)
            except SurefastError as exc:  # e.g. a layer edited after quantization: measured unpacked
                note = f"not packed: {exc.message}"
        else:
            note = f"not packed: {refusal[0]}"
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)  # [1, T]
    ms = statistics.median(decode_ms(model, ids, tokens, warmup))
    report = packed_report(model)
    return {
        "packed": bool(report.layers),
        "formats": report.count(),
        "weight_bytes": resident_bytes(model),
        "decode_ms": round(ms, 3),
        "decode_tok_s": round(1e3 / ms, 2),
        "threads": torch.get_num_threads(),
        "note": note,
    }
