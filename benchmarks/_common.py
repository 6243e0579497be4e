"""Shared helpers for benchmark scripts: machine facts, JSON output, shared data location."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the command line, versions and machine facts."""
    from surefast.bench.store import machine_facts

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {
        **payload,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine_facts(), **cpu_facts()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(body, indent=2, default=float) + "\n")
    return path


def cpu_facts() -> dict[str, Any]:
    """:func:`surefast.machine.cpu_facts`, with the load average under its benchmark name (taken at the end)."""
    from surefast.machine import cpu_facts as facts

    out = facts()
    out["load_average_at_end"] = out.pop("load_average")
    return out


def matmul_flops(dtype: str = "bf16", n: int = 2048, repeats: int = 5) -> float:
    """This CPU's matmul throughput in FLOP/s in ``dtype`` (bf16 or fp32): median of ``repeats`` n x n x n products."""
    import statistics

    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    a = torch.randn(n, n, dtype=torch_dtype)
    b = torch.randn(n, n, dtype=torch_dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def non_embedding_params(model: Any) -> int:
    """Parameters that cost FLOPs per token (embeddings are a lookup; lm_head counted separately)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - emb.numel() - (head.numel() if head.data_ptr() != emb.data_ptr() else 0)
