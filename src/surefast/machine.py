"""Facts about this machine that decide CPU speed: the CPU model, torch's capability, matrix-unit flags, threads."""

from __future__ import annotations

import os
import time
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


class OtherLoad:
    """How much CPU other processes used while a piece of work ran: this machine's busy CPU time
    (``/proc/stat``) minus this process's own (``os.times``), over the wall time. A job recording it
    says what else ran beside it without anyone having to remember; None where ``/proc`` is absent.

    ``share`` is in cores: 0.0 alone, 1.0 when another process kept one core busy the whole time."""

    def __init__(self) -> None:
        self._start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(v) for v in fields]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # all but idle and iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()

    def share(self) -> float | None:
        """Cores' worth of CPU that other processes used since this object was made."""
        end = self._now()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return None
        other = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return max(0.0, other / (end[2] - self._start[2]))
