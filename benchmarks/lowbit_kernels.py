"""Every low-bit kernel on Qwen2.5-Coder-1.5B's layer shapes, side by side: what the automatic choice picks from.

For each shape (``out x in`` of the 1.5B's q/o, k/v, gate/up and down projections) and format
(int4 g128, int8 per channel, W8A8), at 1, 16 and 128 tokens, the median milliseconds of every
kernel that can run it (``dequant-matmul``, ``dense`` i.e. bf16, ``int4-cpu``, ``int8-cpu``,
``int-mm``, and the ``torch.compile``d de-quantize + matmul, which the automatic choice leaves out)
and of a plain bf16 and fp32 ``F.linear``, on random weights rounded by the real quantizer.
Writes ``benchmarks/results/lowbit_kernels.json``; ``--no-compile`` skips ``compiled`` (it
compiles once per shape and token count: minutes on 2 cores).

    python benchmarks/lowbit_kernels.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

SHAPES = {
    "q_proj/o_proj": (1536, 1536),
    "k_proj/v_proj": (256, 1536),
    "gate/up_proj": (8960, 1536),
    "down_proj": (1536, 8960),
}
FORMATS = {"int4-g128": ("int4", 4, 128), "int8": ("int8", 8, -1), "w8a8": ("w8a8", 8, -1)}
TOKENS = (1, 16, 128)


def median_ms(fn: Any, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="lowbit_kernels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from surefast.compress.lowbit import KERNELS, PackedLinear
    from surefast.compress.quant.fake import codes_of, fake_quant_weight

    g = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {}
    for shape_name, (out, inn) in SHAPES.items():
        w = torch.randn(out, inn, generator=g) * 0.02
        for fmt_name, (fmt, bits, group) in FORMATS.items():
            deq = fake_quant_weight(w, bits, group, True)
            layer = PackedLinear.from_quantized(codes_of(deq), None, format=fmt)  # type: ignore[arg-type]
            wb, wf = deq.bfloat16(), deq.float()
            for m in TOKENS:
                x = torch.randn(m, inn, generator=g).bfloat16()
                xf = x.float()
                row: dict[str, Any] = {
                    "bf16 F.linear": median_ms(partial(F.linear, x, wb), args.repeats),
                    "fp32 F.linear": median_ms(partial(F.linear, xf, wf), args.repeats),
                }
                for kernel in KERNELS.values():
                    if kernel.why_not(layer.spec, x.device, x.dtype) is not None:
                        continue
                    if kernel.name == "compiled" and args.no_compile:
                        continue
                    try:
                        row[kernel.name] = median_ms(partial(layer.run_kernel, kernel, x), args.repeats)
                    except Exception as exc:  # a compiler missing or failing: say so in the JSON
                        row[kernel.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    layer.release({"int4-cpu"})  # one layout at a time
                key = f"{shape_name} [{out}x{inn}] {fmt_name} m={m}"
                results[key] = row
                print(key, row, flush=True)
    path = write_result(args.out, {"ms": results, "threads": args.threads, "repeats": args.repeats})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
