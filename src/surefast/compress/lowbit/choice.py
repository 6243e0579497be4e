"""Which kernel runs a packed layer: forced by name, or measured once per machine and shape class.

The same kernels differ by an order of magnitude between machines (torch's int8 weight-only
kernel was 4-11x slower than bf16 on an AVX2-only machine, an int4 kernel faster) and between a
one-token decode and a prefill, so nothing is fixed in advance. At the first input of a *shape
class* (:func:`choice_key`: format, grid, device, activation dtype, token count class, in/out
size bucket) every kernel that can run the layer is checked against the fp32 reference on the
first rows of that very input (:func:`~.kernels.error_bound`; one that misses, or raises, is
dropped) and timed on the whole input (a warm-up, then the median of :data:`REPEATS` runs). The
fastest wins. ``dequant-matmul`` and, unless a layer disallows it, ``dense`` (the de-quantized
weight kept: exactly the unpacked model's speed) are always candidates, so the choice is never
slower than either (but see "Memory" below). Choices are kept in memory and in ``$SUREFAST_HOME/lowbit/kernels.json``
under a machine key (CPU model and capability or GPU name, torch version, thread count).

Memory: ``dense`` holds a de-quantized weight beside the packed one, so a layer that kept it
for one class (say a long prefill, where fast bf16 matrix units beat every int4 kernel) would
hold more than the unpacked model. By default (a layer's ``allow_dense=None``) a layer decides
once, on a one-token decode (the first row of its first input): if a packed kernel beats
``dense`` there, the layer is *lean* and ``dense`` is never a candidate for any class (the
weight stays small; a long prefill may then run slower than bf16); if none does (e.g. int8
weight-only on a CPU whose int8 kernel is slow), the layer may use ``dense`` for every class
(never slower than the unpacked model, at its memory cost). ``allow_dense=True``/``False`` or
``SUREFAST_LOWBIT_DENSE=1``/``0`` fixes it either way.

``SUREFAST_LOWBIT_KERNEL=<name>`` (or a layer's ``kernel=``) forces one kernel everywhere, for
tests and benchmarks; ``int4-cpu,dense`` forces the first of a list that can run each layer. A
forced kernel that cannot run a layer is an error naming the reason.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from surefast.atomic import atomic_write_bytes
from surefast.compress.lowbit.kernels import KERNELS, Kernel, error_bound
from surefast.compress.quant.fake import fake_quant_tokens
from surefast.errors import SurefastError
from surefast.paths import surefast_home

if TYPE_CHECKING:
    from surefast.compress.lowbit.linear import PackedLinear, PackedSpec

ENV = "SUREFAST_LOWBIT_KERNEL"
DENSE_ENV = "SUREFAST_LOWBIT_DENSE"
AUTO = "auto"
REPEATS = 3  # timed runs per candidate, after one warm-up: enough to tell kernels 1.3x apart
CHECK_ROWS = 8  # rows of the first input each candidate is checked on against the fp32 reference
TOKEN_CLASSES = ((1, "1"), (8, "2-8"), (32, "9-32"), (128, "33-128"))  # else "129+"
CACHE_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """One choice: the kernel, each candidate's median milliseconds, and why others were dropped."""

    kernel: str
    ms: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


_MEMORY: dict[tuple[str, str], Measurement] = {}
_MEASURED = [0]  # measurements made by this process (for "includes choosing kernels" notes)


def measured_here() -> int:
    """How many shape classes this process has measured (0: every choice came from the cache)."""
    return _MEASURED[0]


def check_name(name: str, where: str = "kernel") -> str:
    """``"auto"``, a registered kernel name, or a comma-separated list of names (each layer runs
    the first one that can run it), spelled as registered (case and separators as a user types)."""
    parts = [part.strip() for part in name.split(",")] if isinstance(name, str) else [name]
    if len(parts) == 1 and isinstance(parts[0], str) and parts[0].lower() == AUTO:
        return AUTO
    try:
        return ",".join(KERNELS.canonical(part) for part in parts)
    except SurefastError as exc:
        raise SurefastError(f"{where}: {exc.message}", exc.hint) from None


@functools.lru_cache(maxsize=64)
def _from_env(raw: str) -> str:
    return check_name(raw, ENV) if raw else AUTO


def requested(kernel: str | None) -> str:
    """A layer's ``kernel`` argument, else ``$SUREFAST_LOWBIT_KERNEL``, else ``"auto"``."""
    return kernel if kernel is not None else _from_env(os.environ.get(ENV, "").strip())


@functools.lru_cache(maxsize=1024)
def forced(names: str, spec: PackedSpec, device: str, dtype: torch.dtype) -> Kernel:
    """The first kernel of ``names`` (comma-separated) that can run ``spec`` with ``dtype``
    activations on ``device``; none: an error saying why each cannot."""
    where = torch.device(device)
    reasons = []
    for name in names.split(","):
        kernel = KERNELS.get(name)
        reason = kernel.why_not(spec, where, dtype)
        if reason is None:
            return kernel
        reasons.append((name, reason))
    able = [k.name for k in KERNELS.values() if k.why_not(spec, where, dtype) is None]
    what = f"{spec.describe()} with {str(dtype).removeprefix('torch.')} activations on {device}"
    hint = f"unset {ENV} (or pass kernel='auto'), or force one of: {', '.join(able)}"
    if len(reasons) == 1:
        raise SurefastError(f"low-bit kernel {reasons[0][0]!r} cannot run {what}: {reasons[0][1]}", hint)
    why = "; ".join(f"{name}: {reason}" for name, reason in reasons)
    raise SurefastError(f"none of the low-bit kernels {names!r} can run {what} ({why})", hint)


def dense_default() -> bool | None:
    """``$SUREFAST_LOWBIT_DENSE``: ``1`` always allows the ``dense`` fallback, ``0`` never, unset: decide per layer."""
    raw = os.environ.get(DENSE_ENV, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SurefastError(f"{DENSE_ENV}={raw!r} is not 1, 0 or auto", f"unset {DENSE_ENV} to decide per layer")


def token_class(m: int) -> str:
    """``M`` tokens -> its class: a one-token decode, a speculative tree, a short or a long prefill."""
    return next((name for top, name in TOKEN_CLASSES if m <= top), "129+")


def size_bucket(n: int) -> int:
    """The power of two at or above ``n``: layers of similar size share one measurement."""
    return 1 << max(0, n - 1).bit_length()


def choice_key(spec: PackedSpec, dtype: torch.dtype, m: int, allow_dense: bool) -> str:
    groups = "ch" if spec.group_size >= spec.in_features else f"g{spec.group_size}"
    act = f"a{spec.act.bits}{'s' if spec.act.symmetric else 'a'}" if spec.act is not None else "a16"
    return "|".join(
        [
            spec.format,
            f"b{spec.bits}{'s' if spec.symmetric else 'a'}",
            groups,
            act,
            str(dtype).removeprefix("torch."),
            f"m{token_class(m)}",
            f"in{size_bucket(spec.in_features)}",
            f"out{size_bucket(spec.out_features)}",
            "dense" if allow_dense else "lean",
        ]
    )


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device) -> str:
    """What a measured choice is valid for: the processor, torch, and (CPU) the thread count."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda {torch.cuda.get_device_name(device)} sm{major}{minor} | torch {torch.__version__}"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"cpu {_cpu_model()} {capability} | torch {torch.__version__} | threads {torch.get_num_threads()}"


def cache_file() -> Path:
    return surefast_home() / "lowbit" / "kernels.json"


def _read_disk() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):  # none yet, unreadable or half-written by hand: measure again
        return {}
    return data.get("machines", {}) if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}


def lookup(machine: str, key: str) -> Measurement | None:
    """A remembered choice, from memory or from disk."""
    if (machine, key) in _MEMORY:
        return _MEMORY[(machine, key)]
    entry = _read_disk().get(machine, {}).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("kernel"), str):
        return None
    found = Measurement(entry["kernel"], dict(entry.get("ms", {})), dict(entry.get("rejected", {})))
    _MEMORY[(machine, key)] = found
    return found


def remember(machine: str, key: str, measurement: Measurement) -> None:
    """Keep a choice in memory and on disk (a read-only or full disk only loses the disk copy)."""
    _MEMORY[(machine, key)] = measurement
    machines = _read_disk()
    machines.setdefault(machine, {})[key] = asdict(measurement)
    try:
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"version": CACHE_VERSION, "machines": machines}, indent=1).encode())
    except OSError:
        pass  # the choice still holds for this process; the next one measures again


def clear_choices() -> None:
    """Forget the in-memory choices (the disk cache stays: delete ``cache_file()`` for that)."""
    _MEMORY.clear()


def candidates(layer: PackedLinear, device: torch.device, dtype: torch.dtype, allow_dense: bool) -> list[Kernel]:
    """The kernels the automatic choice measures for ``layer`` (``dense`` only when ``allow_dense``)."""
    return [
        k
        for k in KERNELS.values()
        if k.auto and (allow_dense or k.name != "dense") and k.why_not(layer.spec, device, dtype) is None
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-call allocation, lazy initialisation
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def reference(layer: PackedLinear, x: torch.Tensor) -> torch.Tensor:
    """The naive fp32 product ``x @ W_hat^T + b`` (activations on the layer's grid first): ``[M, N]``."""
    xf = x.float()
    if layer.spec.act is not None:
        act = layer.spec.act
        xf = fake_quant_tokens(xf, act.bits, act.symmetric, act.clip)
    y = xf @ layer.dequantize().t()
    return y if layer.bias is None else y + layer.bias.float()


def expanded_scales(layer: PackedLinear) -> torch.Tensor:
    """Each weight's scale, fp32 ``[N, K]``."""
    index = torch.arange(layer.in_features, device=layer.scales.device) // layer.spec.group_size
    return layer.scales[:, index]


Timer = Callable[[Callable[[], Any], torch.device, int], float]


@torch.no_grad()
def measure(
    layer: PackedLinear, x: torch.Tensor, kernels: list[Kernel], repeats: int = REPEATS, timer: Timer | None = None
) -> Measurement:
    """Check each of ``kernels`` on ``x [M, K]``'s first rows, time the correct ones on all of ``x``, pick the fastest.

    ``timer(fn, device, repeats) -> ms`` (default: a warm-up, then the median of ``repeats``
    runs); ``fn`` is ``functools.partial(layer.run_kernel, kernel, x)``.
    """
    timer = timer or _median_ms
    probe = x[:CHECK_ROWS]
    ref = reference(layer, probe)
    xr = probe.float()
    if layer.spec.act is not None:
        xr = fake_quant_tokens(xr, layer.spec.act.bits, layer.spec.act.symmetric, layer.spec.act.clip)
    bound = error_bound(xr, layer.dequantize(), expanded_scales(layer), ref, x.dtype)
    ms: dict[str, float] = {}
    rejected: dict[str, str] = {}
    for kernel in kernels:
        try:
            y = layer.run_kernel(kernel, probe).float()
            if y.shape != ref.shape or not bool(((y - ref).abs() <= bound).all()):
                worst = float(((y - ref).abs() / bound).max()) if y.shape == ref.shape else float("nan")
                rejected[kernel.name] = f"differs from the fp32 reference ({worst:.3g}x the rounding bound)"
                continue
            ms[kernel.name] = timer(functools.partial(layer.run_kernel, kernel, x), x.device, repeats)
        except Exception as exc:  # a kernel that raises on this shape or build is simply not chosen
            rejected[kernel.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if not ms:  # cannot happen while dequant-matmul is registered, but never leave a layer without one
        return Measurement("dequant-matmul", ms, rejected)
    return Measurement(min(ms, key=ms.__getitem__), ms, rejected)


def choose(layer: PackedLinear, x: torch.Tensor, allow_dense: bool) -> str:
    """The automatic choice for ``x [M, K]`` on ``layer``: remembered, or measured now;
    ``allow_dense``: whether ``dense`` (a de-quantized copy of the weight) is a candidate."""
    spec, device, dtype = layer.spec, x.device, x.dtype
    machine, key = machine_key(device), choice_key(spec, dtype, x.shape[0], allow_dense)
    found = lookup(machine, key)
    if found is not None and found.kernel in KERNELS:
        kernel = KERNELS.get(found.kernel)
        if (allow_dense or kernel.name != "dense") and kernel.why_not(spec, device, dtype) is None:
            return found.kernel
    if torch.compiler.is_compiling():
        return "dequant-matmul"  # no timing inside a trace; the traced graph is the caller's
    measured = measure(layer, x, candidates(layer, device, dtype, allow_dense))
    _MEASURED[0] += 1
    remember(machine, key, measured)
    return measured.kernel
