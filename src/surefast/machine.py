"""Facts about this machine that decide CPU speed: the CPU model, torch's capability, matrix-unit flags, threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

MATRIX_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_facts() -> dict[str, Any]:
    """The CPU model, torch's CPU capability, the matrix-unit flags it has, torch's threads, the load average."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": [f for f in MATRIX_FLAGS if f in flags],
        "bf16_matrix_units": bool({"amx_bf16", "avx512_bf16"} & flags),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
