"""``dtype: auto``: bf16 or fp32, whichever runs the work at hand faster on this machine.

On a GPU the answer is known (bf16 where supported, else fp16). On a CPU it depends on the
chip: with bf16 matrix units (AMX, AVX512-BF16) bf16 is about twice as fast as fp32, while on
an AVX2-only CPU a 16-token forward of a 1.5B model took 2.9 s in bf16 and 1.6 s in fp32
(issue 18). So on a CPU we measure, once per machine: ``torch.nn.functional.linear`` with a
``[4h, h]`` weight (an MLP projection, the bulk of a decoder's FLOPs) at the model's width ``h``
(:data:`DEFAULT_HIDDEN` when unknown; at most :data:`MAX_HIDDEN`, where a linear is already
compute-bound and the bf16/fp32 ratio changes little) on the token counts the work runs
(:data:`WORK_TOKENS`): bf16 and fp32 interleaved, after a warm-up, :data:`REPEATS` timed calls
each (:data:`MIN_REPEATS` on a CPU slow enough to spend :data:`BUDGET_S`), the median per cell,
at torch's current thread count. A work's time per dtype is the sum of its cells' medians;
:func:`pick` chooses from those.

The choice and its times are cached in ``$SUREFAST_HOME/machine/dtype.json``, keyed by the CPU
(model, capability, matrix-unit flags), torch's version, the thread count, the work and the
bucket of ``h`` (the nearest power of two: a model of about the same width reuses the
measurement). A home that cannot be written only means the next process measures again; one
process measures a (work, bucket) at most once. A measurement taken while the machine is busy
(:func:`machine_busy`) is used but not cached. Delete the file to measure again (after an
upgrade the key changes by itself).

``SUREFAST_DTYPE_AUTO=bf16|fp32`` skips all of this (and is how tests avoid timing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from surefast.atomic import atomic_write_bytes
from surefast.errors import SurefastError
from surefast.machine import cpu_facts
from surefast.paths import surefast_home

_log = logging.getLogger(__name__)

Work = Literal["scoring", "decoding"]
ENV = "SUREFAST_DTYPE_AUTO"
# The rows of one forward's matmuls: decoding runs 1-token steps and 16-token tree verifications;
# scoring runs batches of item tokens (ScoringConfig.batch_tokens: 512 on the CPU by default; 256
# rows are already compute-bound, which is what decides bf16 against fp32, and keep it short).
WORK_TOKENS: dict[str, tuple[int, ...]] = {"decoding": (1, 16), "scoring": (256,)}
DEFAULT_HIDDEN = 1536  # Qwen2.5-1.5B, the demo's target
MAX_HIDDEN = 2048  # wider models are measured at this width (module docstring)
REPEATS = 5
MIN_REPEATS = 3  # what a cell gets once the budget is spent
# Timed calls of one measurement. The slowest case we know, scoring at h=1536 on the AVX2-only VM
# (estimated 0.16 s per fp32 call, 0.28 s per bf16 one), stops after 3 repeats: about 1.4 s in all.
BUDGET_S = 1.0
TIE = 1.10  # bf16 within 10% of the fastest wins: it halves the memory
CANDIDATES = ("bf16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SCHEMA = 1
BUSY = "measured on a busy machine, not cached"


@dataclass(frozen=True)
class DtypeChoice:
    """What ``dtype: auto`` chose for one work, and why."""

    work: str
    dtype: str  # "bf16", "fp16" or "fp32"
    source: str  # "measured", BUSY, "cached", "env" (SUREFAST_DTYPE_AUTO) or "device" (a GPU: no measurement)
    hidden: int | None = None  # the width measured at
    times_s: dict[str, dict[str, float]] = field(default_factory=dict)  # dtype -> str(tokens) -> median seconds

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def total_s(self) -> dict[str, float]:
        """Per dtype, the sum over the work's token counts of the median linear time."""
        return {name: sum(cells.values()) for name, cells in self.times_s.items()}

    def note(self) -> str:
        """One line for the CLI: the choice and the times behind it."""
        if not self.times_s:
            why = {"env": f"set by {ENV}", "device": "this device's native half precision"}.get(
                self.source, self.source
            )
            return f"dtype auto ({self.work}): {self.dtype}, {why}"
        tokens = " / ".join(next(iter(self.times_s.values())))
        times = ", ".join(
            f"{name} {' / '.join(f'{1000 * t:.3g}' for t in cells.values())} ms" for name, cells in self.times_s.items()
        )
        return (
            f"dtype auto ({self.work}): {self.dtype} ({times} for {tokens}-token linears at h={self.hidden}, "
            f"{self.source})"
        )


def pick(times: dict[str, float]) -> str:
    """The fastest dtype of ``times`` (name -> seconds), bf16 when it is within :data:`TIE` of the fastest."""
    known = {name: t for name, t in times.items() if not math.isnan(t)}
    if not known:
        raise ValueError(f"no times to pick from: {times!r}")
    best = min(known, key=lambda name: known[name])
    if "bf16" in known and known["bf16"] <= TIE * known[best]:
        return "bf16"
    return best


def hidden_bucket(hidden: int) -> int:
    """The cache's width bucket of a model of width ``hidden``: the nearest power of two (896 -> 1024)."""
    return 2 ** max(0, round(math.log2(max(1, hidden))))


@torch.inference_mode()
def measure(
    work: str,
    hidden: int,
    *,
    repeats: int = REPEATS,
    budget_s: float = BUDGET_S,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Median seconds of ``F.linear(x[m, h], w[4h, h])`` per dtype of :data:`CANDIDATES` and ``m``
    of the work's token counts. The dtypes alternate call by call, so a slow moment hits both.
    Each cell gets ``repeats`` calls, or :data:`MIN_REPEATS` once ``budget_s`` is spent (a slow CPU)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(4 * hidden, hidden, generator=gen)
    weights = {name: weight.to(DTYPES[name]) for name in CANDIDATES}
    for name in CANDIDATES:  # warm-up: page the weights in, load the kernels
        torch.nn.functional.linear(torch.ones(1, hidden, dtype=DTYPES[name]), weights[name])
    out: dict[str, dict[str, float]] = {name: {} for name in CANDIDATES}
    spent = 0.0
    for m in WORK_TOKENS[work]:
        x = torch.randn(m, hidden, generator=gen)
        xs = {name: x.to(DTYPES[name]) for name in CANDIDATES}
        samples: dict[str, list[float]] = {name: [] for name in CANDIDATES}
        for i in range(repeats):
            if i >= MIN_REPEATS and spent > budget_s:
                break
            for name in CANDIDATES:
                start = timer()
                torch.nn.functional.linear(xs[name], weights[name])
                took = timer() - start
                samples[name].append(took)
                spent += took
        for name in CANDIDATES:
            out[name][str(m)] = statistics.median(samples[name])
    return out


def cache_path() -> Path:
    return surefast_home() / "machine" / "dtype.json"


def machine_key(work: str, bucket: int) -> str:
    """What a cached choice holds for: this CPU, torch, its thread count, the work and the width bucket."""
    facts = cpu_facts()
    blob = {
        "cpu": {k: facts[k] for k in ("cpu_model", "cpu_capability", "cpu_flags")},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "work": work,
        "hidden": bucket,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable or garbled: measure again and replace it
        _log.warning("ignoring %s (%s)", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("schema") == SCHEMA else None
    return entries if isinstance(entries, dict) else {}


def _cached(entry: Any, work: str) -> DtypeChoice | None:
    if not isinstance(entry, dict) or entry.get("dtype") not in CANDIDATES:
        return None
    times = entry.get("times_s")
    return DtypeChoice(work, entry["dtype"], "cached", entry.get("hidden"), times if isinstance(times, dict) else {})


def _store(path: Path, key: str, choice: DtypeChoice) -> None:
    """Add ``choice`` to the cache file; any failure to write (a read-only home) is only logged."""
    facts = cpu_facts()
    entry = {
        **asdict(choice),
        "source": "measured",
        "cpu": {k: facts[k] for k in ("cpu_model", "cpu_capability", "cpu_flags")},
        "torch": torch.__version__,
        "threads": facts["threads"],
        "load_average": facts["load_average"],  # for the record: a busy machine's measurement is never cached
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {**_read(path), key: entry}
        data = json.dumps({"schema": SCHEMA, "entries": entries}, indent=1, sort_keys=True)
        atomic_write_bytes(path, data.encode())
    except OSError as exc:
        _log.info("dtype auto: not cached (%s)", exc)


def machine_busy() -> bool:
    """More runnable tasks than cores over the last minute: a timing now says little about this
    machine (two torch processes on two cores distort timings tenfold), so it is used, not cached."""
    if not hasattr(os, "getloadavg"):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return os.getloadavg()[0] > cores


_MEMO: dict[tuple[str, str], DtypeChoice] = {}  # (cache file, key): one measurement per process, even unwritable


def _env_choice(work: str) -> DtypeChoice | None:
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in DTYPES:
        raise SurefastError(f"{ENV}={value!r} is not a dtype", "set it to bf16 or fp32, or unset it to measure")
    return DtypeChoice(work, value, "env")


def auto_choice(work: Work, *, hidden: int | None = None, device: str | torch.device = "cpu") -> DtypeChoice:
    """The dtype for ``work`` on ``device`` with its reasons (module docstring); measures at most once per machine."""
    if work not in WORK_TOKENS:
        raise SurefastError(f"unknown work {work!r} for dtype auto", f"choose from {', '.join(WORK_TOKENS)}")
    env = _env_choice(work)
    if env is not None:
        return env
    kind = torch.device(device).type
    if kind == "cuda":
        return DtypeChoice(work, "bf16" if torch.cuda.is_bf16_supported() else "fp16", "device")
    if kind != "cpu":  # mps, xpu, ...: their native half precision; we have none to measure on
        return DtypeChoice(work, "bf16", "device")
    width = min(hidden or DEFAULT_HIDDEN, MAX_HIDDEN)
    key = machine_key(work, hidden_bucket(width))
    try:
        path: Path | None = cache_path()
    except OSError:  # a home that cannot even be created: no cache at all
        path = None
    memo = (str(path), key)
    if memo in _MEMO:
        return _MEMO[memo]
    found = _cached(_read(path).get(key), work) if path is not None else None
    if found is None:
        busy = machine_busy()  # before: our own measurement raises the load
        times = measure(work, width)
        source = BUSY if busy else "measured"
        found = DtypeChoice(work, pick({n: sum(c.values()) for n, c in times.items()}), source, width, times)
        if path is not None and not busy:
            _store(path, key, found)
    _MEMO[memo] = found
    return found


def choose_dtype(work: Work, *, hidden: int | None = None, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype ``dtype: auto`` means for ``work`` (``"scoring"`` or ``"decoding"``) here."""
    return auto_choice(work, hidden=hidden, device=device).torch_dtype


__all__ = ["DtypeChoice", "auto_choice", "choose_dtype", "hidden_bucket", "measure", "pick"]
