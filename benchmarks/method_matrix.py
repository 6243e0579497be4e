"""Every compression method on every real model here: does it run, how long, what perplexity.

The issues' "done when" asks that each quantization and pruning method run on the four real
models (llama: smollm2-135m-instruct; gemma3: gemma-3-270m; qwen2: qwen2.5-coder-0.5b- and
-1.5b-instruct) or state a real limit. This runs each method's default configuration with a
small calibration set (the point is that it runs; quant_quality.py and prune_quality.py measure
quality with more data), then the perplexity on held-out text, and records per cell: status
("ok" or the error, one line), compression seconds, perplexity and its ratio to dense, and
parameters before and after (the structured pruners shrink the model). Results are written
after every cell to benchmarks/results/method_matrix.json; a rerun skips finished cells
(``--force`` recomputes). Models run smallest first.

    .venv/bin/python benchmarks/method_matrix.py                       # everything (about an hour here)
    .venv/bin/python benchmarks/method_matrix.py --models gemma-3-270m --methods wanda-50,slicegpt-20
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from typing import Any

import torch
from _common import RESULTS, write_result
from quant_quality import perplexity

MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
CELLS: dict[str, tuple[str, dict[str, Any]]] = {
    "rtn-w4a16": ("rtn", dict(bits=4, group_size=128)),
    "gptq-w4a16": ("gptq", dict(bits=4, group_size=128)),
    "awq-w4a16": ("awq", dict(bits=4, group_size=128)),
    "smoothquant-w8a8": ("smoothquant", dict(bits=8, act_bits=8)),
    "quarot-w4a4": ("quarot", dict(bits=4, act_bits=4)),
    "spinquant-w4a4": ("spinquant", dict(bits=4, act_bits=4)),
    "magnitude-50": ("magnitude", dict(sparsity=0.5)),
    "wanda-50": ("wanda", dict(sparsity=0.5)),
    "sparsegpt-50": ("sparsegpt", dict(sparsity=0.5)),
    "sparsegpt-2:4": ("sparsegpt", dict(nm="2:4")),
    "llm-pruner-20": ("llm-pruner", dict(ratio=0.2)),
    "slicegpt-20": ("slicegpt", dict(ratio=0.2)),
}
# Diagnostics, run only when named in --methods (docs/compress.md: "Gemma-3-270M and rotations")
EXTRA: dict[str, tuple[str, dict[str, Any]]] = {
    "rtn-w8a16-pc": ("rtn", dict(bits=8, group_size=-1)),
    "quarot-rtn-w8a16": ("quarot", dict(bits=8, act_bits=16, weight_method="rtn")),
    "quarot-rotation-only": ("quarot", dict(quantize=False)),
    "rtn-w4a4": ("rtn", dict(bits=4, group_size=-1, act_bits=4)),
    "quarot-rtn-w4a4": ("quarot", dict(bits=4, act_bits=4, weight_method="rtn")),
    # gemma3's sandwich norms: how much of each pre-norm scale stays in the norm (default 1)
    **{
        f"quarot-{what}-keep{k:g}": ("quarot", dict(kw, norm_keep=k))
        for what, kw in (
            ("rotation-only", dict(quantize=False)),
            ("rtn-w8a16", dict(bits=8, act_bits=16, weight_method="rtn")),
            ("rtn-w4a4", dict(bits=4, act_bits=4, weight_method="rtn")),
        )
        for k in (0.0, 0.5)
    },
}
OUT = RESULTS / "method_matrix.json"


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(CELLS))
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--calib-len", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=4)
    ap.add_argument("--eval-len", type=int, default=256)
    ap.add_argument("--spin-steps", type=int, default=10, help="SpinQuant optimisation steps (default config: 20)")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()

    from surefast.compress import CalibrationConfig, compress_, heldout_text, make_config
    from surefast.compress.calibration_data import calibration_ids, tokenize_windows
    from surefast.models import load_model

    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    models: dict[str, dict[str, Any]] = data.get("models", {})
    settings = {
        "calib": f"stdlib {args.calib_samples}x{args.calib_len}",
        "dtype": args.dtype,
        "eval": f"heldout {args.eval_windows}x{args.eval_len}",
        "spinquant_steps": args.spin_steps,
    }

    def save() -> None:
        write_result("method_matrix", {"settings": settings, "cells": CELLS, "models": models})

    for name in args.models.split(","):
        entry = models.setdefault(name, {})
        base = load_model(name, dtype=args.dtype, device="cpu")
        tok = base.tokenizer
        calib = calibration_ids(CalibrationConfig(n_samples=args.calib_samples, seq_len=args.calib_len), tok)
        evalw = tokenize_windows(heldout_text(), tok, args.eval_windows, args.eval_len, seed=0)
        if "dense" not in entry or args.force:
            entry["dense"] = {
                "status": "ok",
                "arch": base.model.config.model_type,
                "params": params(base.model),
                "perplexity": round(perplexity(base.model, evalw), 4),
            }
            save()
        del base
        dense_ppl = entry["dense"]["perplexity"]
        for cell in args.methods.split(","):
            if cell in entry and not args.force:
                continue
            method, kw = {**CELLS, **EXTRA}[cell]
            if method == "spinquant":
                kw = {**kw, "steps": args.spin_steps}
            model = load_model(name, dtype=args.dtype, device="cpu").model
            before, start = params(model), time.perf_counter()
            try:
                compress_(model, make_config(method, **kw), calib, tokenizer=tok)
            except Exception as exc:  # a real limit is a result: record it and go on
                entry[cell] = {
                    "status": f"{type(exc).__name__}: {exc}".splitlines()[0],
                    "trace": traceback.format_exc(limit=-3),
                }
                print(f"{name:30s} {cell:18s} FAILED {entry[cell]['status']}", flush=True)
            else:
                seconds = time.perf_counter() - start
                ppl = perplexity(model, evalw)
                entry[cell] = {
                    "status": "ok",
                    "seconds": round(seconds, 1),
                    "perplexity": round(ppl, 3),
                    "ppl_vs_dense": round(ppl / dense_ppl, 3),
                    "params_before": before,
                    "params_after": params(model),
                }
                print(f"{name:30s} {cell:18s} ok {seconds:7.1f}s  ppl {ppl:9.3f} ({ppl / dense_ppl:.2f}x)", flush=True)
            del model
            save()


if __name__ == "__main__":
    main()
