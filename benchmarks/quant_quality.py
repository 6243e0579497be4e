"""Quantization quality and cost: held-out perplexity and wall time per method, per model.

    .venv/bin/python benchmarks/quant_quality.py                       # both models, all presets
    .venv/bin/python benchmarks/quant_quality.py --models smollm2-135m-instruct --presets dense,gptq-w4a16
    .venv/bin/python benchmarks/quant_quality.py --peer-python /tmp/lcvenv/bin/python   # + llm-compressor GPTQ

The llm-compressor venv: ``python3 -m venv /tmp/lcvenv && /tmp/lcvenv/bin/pip install torch==2.13.0 llmcompressor``
(torch first, so that no CUDA build is pulled). Its GPTQ is compared with our ``gptq-w4a16-actorder``
(or ``-g64-actorder`` on SmolLM2), which uses the same recipe.

Every preset starts from a fresh load of the model (bf16 by default), compresses it with the
same calibration ids (the offline stdlib default, ``--calib-samples x --calib-len``), and is scored
on the same held-out windows (docstrings of stdlib modules disjoint from calibration,
``surefast.compress.heldout_text``). Results are merged into the JSON after every entry, so a
long run can be split into several invocations (entries already present are skipped unless
``--force``). The llm-compressor peer runs in its own virtual environment (it pins an older
transformers), on the same calibration ids, and reports perplexity on the same windows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quant_quality.json"
MODELS = ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct")
PRESETS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "dense": None,
    "rtn-w4a16": ("rtn", dict(bits=4, group_size=128)),
    "rtn-w4a16-clip": ("rtn", dict(bits=4, group_size=128, clip_search=True)),
    "gptq-w4a16": ("gptq", dict(bits=4, group_size=128)),  # our defaults: act-order and clip search on
    # the reference code's defaults, then each of our two defaults alone
    "gptq-w4a16-plain": ("gptq", dict(bits=4, group_size=128, act_order=False, clip_search=False)),
    "gptq-w4a16-clip": ("gptq", dict(bits=4, group_size=128, act_order=False, clip_search=True)),
    # act-order with groups in quantization order, scales from the error-updated weights (needs g_idx on real kernels)
    "gptq-w4a16-dynamic": ("gptq", dict(bits=4, group_size=128, static_groups=False)),
    # llm-compressor's default recipe (act-order, static groups, full ranges): the like-for-like of its run
    "gptq-w4a16-actorder": ("gptq", dict(bits=4, group_size=128, clip_search=False)),
    # llm-compressor refuses groups that do not divide a layer (SmolLM2's 576): the side-by-side uses 64 there
    "gptq-w4a16-g64-actorder": ("gptq", dict(bits=4, group_size=64, clip_search=False)),
    "awq-w4a16": ("awq", dict(bits=4, group_size=128)),
    "smoothquant-w8a8": ("smoothquant", dict(bits=8, act_bits=8)),
    "rtn-w8a8": ("rtn", dict(bits=8, group_size=-1, act_bits=8)),
    "rtn-w4a4": ("rtn", dict(bits=4, group_size=-1, act_bits=4)),
    "quarot-rtn-w4a4": ("quarot", dict(bits=4, act_bits=4, weight_method="rtn")),
    "quarot-w4a4": ("quarot", dict(bits=4, act_bits=4, weight_method="gptq")),
    "spinquant-w4a4": ("spinquant", dict(bits=4, act_bits=4, weight_method="gptq", steps=20)),
    "quarot-w6a6": ("quarot", dict(bits=6, act_bits=6, weight_method="gptq")),
    "quarot-w8a8": ("quarot", dict(bits=8, act_bits=8, weight_method="rtn")),
}


@torch.no_grad()
def perplexity(model: Any, windows: torch.Tensor) -> float:
    """exp(mean next-token NLL) over all windows ``[N, S]``, one window per forward."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for row in windows:
        ids = row[None].to(device)
        logits = model(ids, use_cache=False).logits[0, :-1].float()  # [S-1, V]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(total / count)


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def save_results(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def peer_group(config: Any) -> int:
    """128, or 64 where 128 does not divide a linear's input size (llm-compressor refuses that)."""
    sizes = (config.hidden_size, config.intermediate_size)
    return 128 if all(n % 128 == 0 for n in sizes) else 64


def run_peer(
    python: str, folder: Path, calib: torch.Tensor, evalw: torch.Tensor, dtype: str, threads: int, group: int
) -> dict[str, Any]:
    """llm-compressor's GPTQ W4A16 in its own environment; returns its perplexity and time."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"calib": calib, "eval": evalw}, Path(tmp) / "ids.pt")
        cmd = [
            python,
            __file__,
            "--peer-child",
            str(folder),
            str(Path(tmp) / "ids.pt"),
            "--dtype",
            dtype,
            "--threads",
            str(threads),
            "--peer-group-size",
            str(group),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_child(folder: str, ids_path: str, dtype: str, group: int) -> None:
    """Runs inside the llm-compressor venv: GPTQModifier, int4 symmetric groups (W4A16), our calibration ids."""
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    ids = torch.load(ids_path)
    calib, evalw = ids["calib"], ids["eval"]
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()
    dense_ppl = perplexity(model, evalw)  # its own transformers version: the ratio compares like with like
    ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group}
    recipe = GPTQModifier(config_groups={"g": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"])
    start = time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(calib), max_seq_length=calib.shape[1])
    seconds = time.perf_counter() - start
    ppl = perplexity(model, evalw)
    print(
        json.dumps(
            {
                "perplexity": ppl,
                "seconds": seconds,
                "llmcompressor": llmcompressor.__version__,
                "dense_perplexity_in_its_env": dense_ppl,
                "transformers": transformers.__version__,
                "recipe": f"GPTQModifier(int4 symmetric, group {group}, actorder static (default), ignore lm_head)",
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--eval-len", type=int, default=256)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--force", action="store_true", help="recompute entries already in the JSON")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--peer-python", help="python of a venv with llmcompressor: adds its GPTQ W4A16")
    ap.add_argument(
        "--peer-group-size",
        type=int,
        default=0,
        help="group size of the llm-compressor run (0: 128, or 64 where 128 does not divide a layer)",
    )
    ap.add_argument("--peer-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peer_child:
        return peer_child(*args.peer_child, args.dtype, args.peer_group_size)

    import transformers

    import surefast
    from surefast.compress import CalibrationConfig, compress_, heldout_text, make_config
    from surefast.compress.calibration_data import calibration_ids, tokenize_windows
    from surefast.models import load_model

    torch.manual_seed(0)
    data = load_results(args.out)
    data.setdefault("commands", []).append(" ".join([Path(sys.executable).name, *sys.argv]))
    data.update(
        {
            "settings": {
                "calib": f"stdlib {args.calib_samples}x{args.calib_len}",
                "eval": f"heldout {args.eval_windows}x{args.eval_len}",
                "dtype": args.dtype,
            },
            "versions": {
                "surefast": surefast.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
        }
    )
    for name in args.models.split(","):
        entry = data["models"].setdefault(name, {})
        loaded = load_model(name, dtype=args.dtype, device="cpu")
        tok = loaded.tokenizer
        calib = calibration_ids(CalibrationConfig(n_samples=args.calib_samples, seq_len=args.calib_len), tok)
        evalw = tokenize_windows(heldout_text(), tok, args.eval_windows, args.eval_len, seed=0)
        for preset in args.presets.split(","):
            if preset in entry and not args.force:
                continue
            model = loaded.model if preset == "dense" else load_model(name, dtype=args.dtype, device="cpu").model
            start = time.perf_counter()
            extra: dict[str, Any] = {}
            if PRESETS[preset] is not None:
                method, kw = PRESETS[preset]
                result = compress_(model, make_config(method, **kw), calib, tokenizer=tok)
                extra = {"fingerprint": result.fingerprint, "config": result.config.to_dict()}
                if "spinquant_loss" in result.recipe:
                    extra["spinquant_loss"] = result.recipe["spinquant_loss"]
            seconds = time.perf_counter() - start
            t0 = time.perf_counter()
            ppl = perplexity(model, evalw)
            entry[preset] = {
                "perplexity": round(ppl, 4),
                "seconds": round(seconds, 2),
                "eval_seconds": round(time.perf_counter() - t0, 2),
                **extra,
            }
            if "dense" in entry:
                entry[preset]["ppl_vs_dense"] = round(ppl / entry["dense"]["perplexity"], 4)
            print(f"{name:32s} {preset:18s} ppl {ppl:9.3f}  compress {seconds:7.1f}s", flush=True)
            save_results(args.out, data)
            del model
        if args.peer_python and ("llmcompressor-gptq-w4a16" not in entry or args.force):
            group = args.peer_group_size or peer_group(loaded.model.config)
            peer = run_peer(args.peer_python, loaded.path, calib, evalw, args.dtype, args.threads, group)
            peer["group_size"] = group
            if "perplexity" in peer and "dense" in entry:
                peer["ppl_vs_dense"] = round(peer["perplexity"] / entry["dense"]["perplexity"], 4)
            entry["llmcompressor-gptq-w4a16"] = peer
            print(f"{name:32s} llmcompressor-gptq {json.dumps(peer)[:300]}", flush=True)
            save_results(args.out, data)
    return None


if __name__ == "__main__":
    main()
