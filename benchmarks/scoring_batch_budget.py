"""Scoring throughput against the token budget per forward (``ScoringConfig.batch_tokens``).

The same MMLU items (seed 0, 5-shot shared-instruction chat prompt) scored with each budget, in
one process, budgets interleaved (the order reverses on every repeat), warm-up excluded. On a CPU
a forward's activations (``[tokens, intermediate]`` per MLP) should stay in the last-level cache;
this sweep is what the CPU default (``CPU_BATCH_TOKENS``) rests on, so rerun it on a new kind of
machine.

    .venv/bin/python benchmarks/scoring_batch_budget.py
    .venv/bin/python benchmarks/scoring_batch_budget.py --budgets 256,512,1024 --n 48 --tag amx
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _common import SHARED_DATA, write_result

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def sweep(name: str, n: int, budgets: list[int], repeats: int, dtype: str) -> dict[str, Any]:
    from surefast.data import TaskConfig, load_task
    from surefast.models import load_model
    from surefast.prompts import PromptConfig, build_prompt
    from surefast.scoring import ScoringConfig, score_items

    loaded = load_model(name, dtype=dtype, device="cpu", work="scoring")
    data = load_task("mmlu", TaskConfig(n=n, seed=0, n_demos=5, source=str(SHARED_DATA)))
    prompt = build_prompt("mmlu", data.demos, loaded.tokenizer, PromptConfig(strategy="shared", n_shots=5))
    score_items(loaded.model, loaded.tokenizer, prompt, data.items[:4])  # warm-up, not timed
    seconds = {b: 0.0 for b in budgets}
    for rep in range(repeats):
        for budget in budgets if rep % 2 == 0 else budgets[::-1]:
            start = time.perf_counter()
            config = ScoringConfig(batch_tokens=budget)
            score_items(loaded.model, loaded.tokenizer, prompt, data.items, config=config)
            seconds[budget] += time.perf_counter() - start
    rates = {str(b): n * repeats / s for b, s in seconds.items()}
    best = max(rates, key=lambda b: rates[b])
    return {
        "n_items": n,
        "repeats": repeats,
        "dtype": {torch.bfloat16: "bf16", torch.float32: "fp32"}[loaded.dtype],
        "items_per_s": rates,
        "best_budget": int(best),
        "relative_to_best": {b: r / rates[best] for b, r in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--budgets", default="128,256,512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="auto (what scoring uses here), bf16 or fp32")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    results = {name: sweep(name, args.n, budgets, args.repeats, args.dtype) for name in args.models.split(",")}
    path = write_result("scoring_batch_budget" + (f"-{args.tag}" if args.tag else ""), {"models": results})
    for name, r in results.items():
        rates = ", ".join(f"{b}: {v:.2f}" for b, v in r["items_per_s"].items())
        print(f"{name} ({r['dtype']}): items/s by budget {rates}; best {r['best_budget']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
