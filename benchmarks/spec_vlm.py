"""SAGE on vision-language models: acceptance length and speed against the draft's visual pruning ratio.

Real weights (a GPU machine with the hub, ``pip install 'surefast[hub]'``; the paper's smaller setting)::

    python benchmarks/spec_vlm.py --target llava-hf/llava-onevision-qwen2-7b-ov-hf \\
        --draft llava-hf/llava-onevision-qwen2-0.5b-ov-hf --dataset textvqa --items 50 \\
        --prune-ratios 0,0.5,0.8,0.9 --max-new-tokens 128 --dtype bf16 --device cuda
    python benchmarks/spec_vlm.py --target Qwen/Qwen2.5-VL-7B-Instruct --draft Qwen/Qwen2.5-VL-3B-Instruct \\
        --dataset mvbench --data /data/MVBench --items 50 --dtype bf16 --device cuda

Tiny random models here (``--tiny``): PLUMBING ONLY. The numbers say that every method and ratio
runs end to end and stays lossless; they say nothing about speed (random weights, CPU)::

    .venv/bin/python benchmarks/spec_vlm.py --tiny --items 2 --max-new-tokens 24 --out /tmp/spec_vlm-tiny.json

Per item the inputs are prepared once; the target alone (``ar``) and every (method, ratio) run
on them in a rotating order, after a warm-up that is not measured. Reported per (method, ratio):
median tokens per target forward (acceptance length, hardware-independent), median end-to-end
tokens/s and its ratio to ``ar`` on the same item, and the share of outputs equal to ``ar``'s.
Writes JSON to ``--out`` (default ``benchmarks/results/spec_vlm-<dataset>.json``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from surefast.speculate import POLICY_CONFIGS
from surefast.speculate.compare import decode
from surefast.speculate.vlm import PruneConfig, VisualInputs, prepare_inputs
from surefast.speculate.vlm.datasets import VLMItem, load_vlm_dataset

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def tiny_setup(arch: str, items: int) -> tuple[Any, Any, Any, list[VLMItem]]:
    """A tiny random target, a noisy copy as draft, synthetic images and videos (plumbing only)."""
    import numpy as np

    from surefast.models.tiny import tiny_model, tiny_tokenizer

    target = tiny_model(arch, 0)
    draft = copy.deepcopy(target)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05 * p.float().std().clamp(min=1e-3))
    rng = np.random.RandomState(0)
    out = []
    for i in range(items):
        if i % 2 == 0:
            img = (rng.rand(70 + 10 * i, 100, 3) * 255).astype(np.uint8)
            out.append(VLMItem(f"image-{i}", f"Describe image {i}.", [img]))
        else:
            frames = [(rng.rand(56, 56, 3) * 255).astype(np.uint8) for _ in range(4)]
            out.append(VLMItem(f"video-{i}", f"What happens in video {i}?", video=frames))
    return target, draft.eval(), tiny_tokenizer(), out


def real_setup(args: argparse.Namespace) -> tuple[Any, Any, Any, list[VLMItem]]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kw = {"dtype": DTYPES[args.dtype], "device_map": args.device}
    target = AutoModelForImageTextToText.from_pretrained(args.target, **kw).eval()
    draft = AutoModelForImageTextToText.from_pretrained(args.draft, **kw).eval()
    processor = AutoProcessor.from_pretrained(args.target)
    items = load_vlm_dataset(args.dataset, args.data, limit=args.items, video_dir=args.video_dir)
    return target, draft, processor, items


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    if args.tiny:
        target, draft, processor, items = tiny_setup(args.tiny_arch, args.items)
    else:
        target, draft, processor, items = real_setup(args)
    methods = args.methods.split(",") if args.methods else list(POLICY_CONFIGS)
    unknown = set(methods) - set(POLICY_CONFIGS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {list(POLICY_CONFIGS)}")
    ratios = [float(r) for r in args.prune_ratios.split(",")]
    eos = None if args.tiny else "auto"  # random models rarely say EOS; do not let one cut a run short
    configs = [("ar", 0.0)] + [(m, r) for m in methods for r in ratios]

    def gen(config: tuple[str, float], inp: VisualInputs, n: int) -> Any:
        method, ratio = config
        prune = PruneConfig(ratio, args.attention_share)
        out = decode(target, draft, inp, method, max_new_tokens=n, eos_token_id=eos, prune=prune)
        return out, out.prune

    prepared = []
    for item in items:
        prepared.append(
            prepare_inputs(
                processor, target, item.question, item.images or None, item.video, num_frames=args.num_frames
            )
        )
    for c in configs:  # warm-up, not measured
        gen(c, prepared[0], 4)
    rows = []
    for i, (item, inp) in enumerate(zip(items, prepared, strict=True)):
        order = configs[i % len(configs) :] + configs[: i % len(configs)]
        outs = {c: gen(c, inp, args.max_new_tokens) for c in order}
        ref = outs[("ar", 0.0)][0]
        for (method, ratio), (out, report) in outs.items():
            s = out.stats
            rows.append(
                {
                    "item": item.id,
                    "method": method,
                    "prune_ratio": ratio,
                    "n_visual": inp.n_visual,
                    "dropped": report.n_dropped if report else 0,
                    "prompt_tokens": inp.input_ids.shape[1],
                    "new_tokens": s.new_tokens,
                    "tokens_per_forward": s.tokens_per_forward,
                    "e2e_tokens_per_s": s.e2e_tokens_per_s,
                    "speedup_vs_ar": s.e2e_tokens_per_s / ref.stats.e2e_tokens_per_s,
                    "equal_to_ar": out.tokens == ref.tokens,
                }
            )
    summary = []
    print(f"{'method':12s} {'ratio':>5s} {'tok/fwd':>8s} {'tok/s':>8s} {'x ar':>6s} {'equal':>6s}")
    for method, ratio in configs:
        sel = [r for r in rows if r["method"] == method and r["prune_ratio"] == ratio]
        row = {
            "method": method,
            "prune_ratio": ratio,
            "items": len(sel),
            "tokens_per_forward": statistics.median(r["tokens_per_forward"] for r in sel),
            "e2e_tokens_per_s": statistics.median(r["e2e_tokens_per_s"] for r in sel),
            "speedup_vs_ar": statistics.median(r["speedup_vs_ar"] for r in sel),
            "equal_to_ar": sum(r["equal_to_ar"] for r in sel) / len(sel),
        }
        summary.append(row)
        print(
            f"{method:12s} {ratio:5.2f} {row['tokens_per_forward']:8.2f} {row['e2e_tokens_per_s']:8.1f} "
            f"{row['speedup_vs_ar']:6.2f} {row['equal_to_ar']:6.2f}"
        )
    label = "PLUMBING ONLY: tiny random models on a CPU; no speed claims" if args.tiny else "real weights"
    print(label)
    return {
        "label": label,
        "tiny": args.tiny,
        "target": args.target if not args.tiny else f"tiny:{args.tiny_arch}@0",
        "draft": args.draft if not args.tiny else "tiny noisy copy",
        "dataset": args.dataset if not args.tiny else "synthetic",
        "summary": summary,
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="llava-hf/llava-onevision-qwen2-7b-ov-hf")
    p.add_argument("--draft", default="llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
    p.add_argument("--dataset", default="textvqa", help="textvqa, gqa, chartqa, seedbench, mvbench, videodetailcaption")
    p.add_argument("--data", default=None, help="local folder of the dataset (default: the hub)")
    p.add_argument("--video-dir", default=None, help="videos of a hub split that lists names only")
    p.add_argument("--items", type=int, default=20)
    p.add_argument("--methods", default="", help="engine policies, comma-separated (default: all)")
    p.add_argument("--prune-ratios", default="0,0.5,0.8,0.9")
    p.add_argument("--attention-share", type=float, default=PruneConfig().attention_share)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random VLMs, synthetic inputs: plumbing only")
    p.add_argument("--tiny-arch", default="qwen2_5_vl", choices=["qwen2_5_vl", "llava_onevision"])
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/spec_vlm-<dataset>.json)")
    args = p.parse_args()
    if args.tiny:
        torch.set_num_threads(1)
    result = run(args)
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")
    else:
        name = "spec_vlm-tiny" if args.tiny else f"spec_vlm-{args.dataset}"
        print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
