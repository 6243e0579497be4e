"""Do checkpoints quantized by another tool load as model specs here? (compressed-tensors, on CPU)

    .venv/bin/python benchmarks/foreign_checkpoints.py --peer-python /tmp/lcvenv/bin/python

1. In llm-compressor's own virtual environment (see quant_quality.py for how to make it): RTN
   W4A16 (``QuantizationModifier``, int4 symmetric groups of 64, ``lm_head`` left alone) on
   smollm2-135m-instruct, saved with ``save_compressed=True``: a compressed-tensors checkpoint
   with packed int4 weights.
2. Here: ``surefast.models.load_model(folder)``, as any local model spec, then perplexity on the
   held-out windows of quant_quality.py. Loading needs the ``compressed-tensors`` package in this
   environment (``pip install compressed-tensors``; it is not a surefast dependency).

Writes ``benchmarks/results/foreign_checkpoints.json``: whether it loaded, the parameter dtypes
transformers gave it, and the perplexity next to our own RTN W4A16 at the same group size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch
from _common import write_result
from quant_quality import perplexity

MODEL = "smollm2-135m-instruct"


def peer_child(src: str, out: str) -> None:
    """Runs inside the llm-compressor venv."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}
    recipe = QuantizationModifier(config_groups={"g": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"])
    oneshot(model=model, recipe=recipe)
    model.save_pretrained(out, save_compressed=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", required=True, help="python of a venv with llmcompressor")
    ap.add_argument("--peer-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_child:
        return peer_child(*args.peer_child)

    from surefast.compress import compress_, heldout_text, make_config
    from surefast.compress.calibration_data import tokenize_windows
    from surefast.models import load_model

    base = load_model(MODEL, dtype="bf16", device="cpu")
    evalw = tokenize_windows(heldout_text(), base.tokenizer, 8, 256, seed=0)
    result: dict = {"model": MODEL, "tool": "llm-compressor QuantizationModifier int4 g64 (compressed-tensors)"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        cmd = [
            args.peer_python,
            __file__,
            "--peer-python",
            args.peer_python,
            "--peer-child",
            str(base.path),
            str(folder),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            result["error"] = "the llm-compressor run failed: " + (proc.stderr or proc.stdout)[-1500:]
        else:
            result["files"] = sorted(p.name for p in folder.iterdir())
            try:
                lm = load_model(str(folder), dtype="bf16", device="cpu")
            except Exception as exc:  # the point of the check: record what happens
                result["loaded"] = False
                result["error"] = f"{type(exc).__name__}: {exc}"[:1500]
                result["trace"] = traceback.format_exc(limit=-3)
            else:
                result["loaded"] = True
                result["dtypes"] = sorted({str(p.dtype) for p in lm.model.parameters()})
                result["perplexity"] = round(perplexity(lm.model, evalw), 4)
    result["dense_perplexity"] = round(perplexity(base.model, evalw), 4)
    ours = load_model(MODEL, dtype="bf16", device="cpu").model
    compress_(ours, make_config("rtn", bits=4, group_size=64))
    result["surefast_rtn_w4a16_g64_perplexity"] = round(perplexity(ours, evalw), 4)
    print(json.dumps(result, indent=1)[:3000])
    write_result("foreign_checkpoints", result)
    return None


if __name__ == "__main__":
    sys.exit(main())
