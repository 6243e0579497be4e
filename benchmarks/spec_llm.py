"""Speculative decoding side by side: ar, chain, static-tree, dynamic, sage and HF assisted generation.

    .venv/bin/python benchmarks/spec_llm.py                               # the issue's run: 20 HumanEval + 20 GSM8K, 128 tokens
    .venv/bin/python benchmarks/spec_llm.py --prompts 5 --tag reduced     # 5 + 5 prompts (what fits a CPU session)
    .venv/bin/python benchmarks/spec_llm.py --tune --budgets 4,8,16,32    # SAGE node budget for this machine
    .venv/bin/python benchmarks/spec_llm.py --target tiny:qwen2@0 --draft tiny:qwen2@1 --dtype fp32 --prompts 1 --max-new-tokens 16  # smoke

Target qwen2.5-coder-1.5b-instruct, draft qwen2.5-coder-0.5b-instruct, bf16, greedy, chat
template. Every method runs every prompt in one process, in an order that rotates per prompt,
``--repeats`` times (tokens/s: median of the repeats), after a warm-up that is not measured.
Speeds are end-to-end (prefill included: the fair figure for HF assisted generation, which has
no separate prefill); ``tokens per target forward`` (the mean acceptance length) does not
depend on the machine's load. Every output is compared with ``ar``'s: in bf16 a batched tree
forward can round differently from a one-token forward, so an output may diverge at a near-tie;
each divergence is listed with its position and the target's top-2 logit margin there (a large
margin would be a bug).

``upper_bound``: from the measured costs (one draft forward, the target's forward time for n
tokens), the best speed-up any tree policy could reach if every drafted token were accepted,
the speed-up each policy's measured acceptance implies, and the draft cost at which SAGE's
measured acceptance would give the 2x target. Writes ``benchmarks/results/spec_llm[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, write_result

from surefast.models.chat import encode_chat
from surefast.speculate import POLICY_CONFIGS, policy_config
from surefast.speculate.api import METHODS, load_pair
from surefast.speculate.compare import decode, judge, warm
from surefast.speculate.tune import interp, tune_budget, verify_time_curve

TARGETS = {"sage_vs_ar": 2.0, "sage_vs_hf_assisted": 1.25, "sage_acceptance_vs_static_tree": 1.1}


def load_prompts(task: str, n: int) -> list[str]:
    if task == "humaneval":
        with gzip.open(SHARED_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
            rows = [json.loads(line) for line in f][:n]
        return [f"Complete the following Python function.\n```python\n{r['prompt']}```" for r in rows]
    if task == "gsm8k":
        with bz2.open(SHARED_DATA / "gsm8k" / "test.jsonl.bz2", "rt") as f:
            rows = [json.loads(line) for line in f][:n]
        return [f"{r['question']}\nAnswer step by step." for r in rows]
    raise SystemExit(f"unknown task {task!r} (humaneval, gsm8k)")


def method_configs(methods: list[str], budget: int) -> dict[str, Any]:
    """The policy config of each engine method (``--budget`` applied to sage and dynamic); None for ar / hf-assisted."""
    return {
        m: (policy_config(m, budget=budget) if budget and m in ("sage", "dynamic") else policy_config(m))
        if m in POLICY_CONFIGS
        else None
        for m in methods
    }


def measure(
    args: argparse.Namespace, target: Any, draft: Any, tasks: dict[str, list[torch.Tensor]], configs: dict[str, Any]
) -> list[dict]:
    """One row per (task, prompt, method): median speed over repeats, acceptance, equality with ``ar``.

    The harness of ``surefast speculate`` (:mod:`surefast.speculate.compare`) in pieces: every
    method interleaves with the others on each prompt, so each is warmed up once, run through
    :func:`decode` and judged against ``ar``'s first run afterwards.
    """
    methods = args.methods.split(",")

    def gen(method: str, ids: torch.Tensor, n: int) -> Any:
        return decode(target.model, draft.model, ids, method, policy=configs[method], max_new_tokens=n)

    first = next(iter(tasks.values()))[0]
    for m in methods:  # allocations and kernels, not measured
        warm(target.model, draft.model, first, m, policy=configs[m])
    rows, k = [], 0
    for task, prompts in tasks.items():
        for i, ids in enumerate(prompts):
            runs: dict[str, list[Any]] = {m: [] for m in methods}
            for _ in range(args.repeats):
                k += 1
                for m in methods[k % len(methods) :] + methods[: k % len(methods)]:
                    runs[m].append(gen(m, ids, args.max_new_tokens))
            ref = runs["ar"][0] if "ar" in runs else None
            for m in methods:
                out = runs[m][0]
                row = out.stats.summary()
                row.update(
                    task=task,
                    prompt=i,
                    e2e_tokens_per_s=statistics.median(o.stats.e2e_tokens_per_s for o in runs[m]),
                    repeats_e2e_tokens_per_s=[o.stats.e2e_tokens_per_s for o in runs[m]],
                )
                if ref is not None:
                    check = judge(target.model, ids, out, ref)
                    row["identical_to_ar"] = check.identical
                    div = check.divergence
                    if div is not None and div.position < len(ref.tokens):
                        row["divergence"] = {"position": div.position, "top2_margin": div.top2_margin}
                if m in ("sage", "dynamic", "static-tree"):
                    row["accepted"] = out.stats.accepted_lengths
                    row["entropy_trace"] = [None if h != h else h for h in out.stats.entropy_trace]
                rows.append(row)
                print(
                    f"{task} {i:2d} {m:12s} {row['e2e_tokens_per_s']:6.2f} tok/s  {row['tokens_per_forward']:5.2f} "
                    f"tok/fwd  identical={row.get('identical_to_ar')}",
                    flush=True,
                )
    return rows


def aggregate(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method: mean acceptance length, median tokens/s, median per-prompt speed-ups, equality with ``ar``."""
    speed = {(r["task"], r["prompt"], r["method"]): r["e2e_tokens_per_s"] for r in rows}
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue

        def ratio(base: str, mine: list[dict] = mine) -> float | None:
            vals = [
                r["e2e_tokens_per_s"] / speed[(r["task"], r["prompt"], base)]
                for r in mine
                if (r["task"], r["prompt"], base) in speed
            ]
            return statistics.median(vals) if vals else None

        steps = sum(r["steps"] for r in mine)
        out[m] = {
            "mean_acceptance_length": statistics.fmean(r["tokens_per_forward"] for r in mine),
            "tokens_per_s": statistics.median(r["e2e_tokens_per_s"] for r in mine),
            "speedup_vs_ar": ratio("ar"),
            "speedup_vs_hf_assisted": ratio("hf-assisted"),
            "identical_to_ar": statistics.fmean(bool(r.get("identical_to_ar", True)) for r in mine),
            "divergences": [
                {"task": r["task"], "prompt": r["prompt"], **r["divergence"]} for r in mine if "divergence" in r
            ],
            "mean_tree_size": (sum(r["mean_tree_size"] * r["steps"] for r in mine if r["steps"]) / steps)
            if steps
            else 0,
            "draft_s_per_step": sum(r["draft_s"] for r in mine) / steps if steps else 0.0,
            "verify_s_per_step": sum(r["verify_s"] for r in mine) / steps if steps else 0.0,
            "n_outputs": len(mine),
        }
    return out


def upper_bound(target: Any, draft: Any, context: int, policies: dict[str, dict], sizes: list[int]) -> dict[str, Any]:
    """Speed-up limits from measured costs: c_d (draft forward of w tokens), v(n) (target forward of n tokens).

    A tree of depth D needs D draft forwards (one per level; the last level is not fed, but the
    first forward also feeds the root) and one target forward of n + 1 tokens; ``ar`` pays v(1)
    per token. Perfect acceptance of a chain of depth k gives k + 1 tokens per step:
    ``(k + 1) v(1) / (k c_d(1) + v(k + 1))``; a policy with measured tokens per forward tau and
    mean tree n: ``tau v(1) / (draft_s_per_step + v(n + 1))``.
    """
    verify = verify_time_curve(target.model, context, sizes)
    draft_curve = verify_time_curve(draft.model, context, [1, 4, 8])
    v1, cd = verify[0], draft_curve[0]
    chains = {k: (k + 1) * v1 / (k * cd + interp(k + 1, sizes, verify)) for k in range(1, 17)}
    best_k = max(chains, key=chains.__getitem__)
    implied = {
        m: p["mean_acceptance_length"] * v1 / (p["draft_s_per_step"] + interp(p["mean_tree_size"] + 1, sizes, verify))
        for m, p in policies.items()
        if m in POLICY_CONFIGS and p["draft_s_per_step"] > 0
    }
    result: dict[str, Any] = {
        "context_tokens": context,
        "verify_sizes": sizes,
        "verify_s": verify,
        "draft_forward_s": cd,
        "draft_forward_s_by_width": dict(zip([1, 4, 8], draft_curve, strict=True)),
        "draft_to_target_cost": cd / v1,
        "perfect_chain_speedup_by_depth": chains,
        "perfect_chain_best_depth": best_k,
        "perfect_chain_best_speedup": chains[best_k],
        "implied_speedup_from_measured_acceptance": implied,
    }
    sage = policies.get("sage")
    if sage:  # the draft cost per forward at which SAGE's measured acceptance would reach 2x
        depth = max(1.0, sage["draft_s_per_step"] / cd)  # draft forwards per step, as measured
        room = sage["mean_acceptance_length"] * v1 / TARGETS["sage_vs_ar"] - interp(
            sage["mean_tree_size"] + 1, sizes, verify
        )
        result["draft_forward_s_needed_for_2x"] = room / depth if room > 0 else None
        result["draft_to_target_cost_needed_for_2x"] = room / depth / v1 if room > 0 else None
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    target, draft = load_pair(args.target, args.draft, dtype=args.dtype, device="cpu")
    tasks = {
        t: [encode_chat(target.tokenizer, p) for p in load_prompts(t, args.prompts)] for t in args.tasks.split(",")
    }
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    configs = method_configs(methods, args.budget)
    rows = measure(args, target, draft, tasks, configs)
    policies = aggregate(rows, methods)
    per_task = {t: aggregate([r for r in rows if r["task"] == t], methods) for t in tasks}
    lengths = [int(ids.numel()) for p in tasks.values() for ids in p]
    bound = upper_bound(
        target,
        draft,
        int(statistics.median(lengths)) + args.max_new_tokens // 2,
        policies,
        [1, 2, 4, 8, 16, 24, 32, 48, 64],
    )
    checks = {}
    if "sage" in policies:
        s = policies["sage"]
        checks["sage_vs_ar"] = s["speedup_vs_ar"]
        checks["sage_vs_hf_assisted"] = s["speedup_vs_hf_assisted"]
        if "static-tree" in policies:
            checks["sage_acceptance_vs_static_tree"] = (
                s["mean_acceptance_length"] / policies["static-tree"]["mean_acceptance_length"]
            )
    return {
        "policies": policies,
        "per_task": per_task,
        "upper_bound": bound,
        "targets": TARGETS,
        "measured_against_targets": checks,
        "policy_configs": {m: dataclasses.asdict(c) for m, c in configs.items() if c is not None},
        "rows": rows,
    }


def tune(args: argparse.Namespace) -> dict[str, Any]:
    target, draft = load_pair(args.target, args.draft, dtype=args.dtype, device="cpu")
    encoded = [encode_chat(target.tokenizer, p) for t in args.tasks.split(",") for p in load_prompts(t, args.prompts)]
    report = tune_budget(
        target.model,
        draft.model,
        encoded,
        budgets=[int(b) for b in args.budgets.split(",")],
        sizes=[int(s) for s in args.sizes.split(",")],
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
    )
    for n, t in zip(report.sizes, report.verify_s, strict=True):
        print(f"verify {n:3d} tokens: {t * 1000:8.1f} ms")
    for i, b in enumerate(report.budgets):
        print(
            f"budget {b:3d}: {report.tokens_per_step[i]:.2f} tok/step, tree {report.mean_tree[i]:.1f}, "
            f"draft {report.draft_s[i]:.3f} s/step -> {report.expected_tokens_per_s[i]:.2f} tok/s"
        )
    print(f"best budget: {report.best_budget}")
    return {"tune": report.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--tasks", default="humaneval,gsm8k")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per task")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=int, default=0, help="node budget of sage and dynamic (0: their defaults)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per (prompt, method); tokens/s is their median")
    parser.add_argument("--tune", action="store_true", help="measure the verify-time curve and pick SAGE's budget")
    parser.add_argument("--budgets", default="4,8,16,32")
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()
    payload = tune(args) if args.tune else run(args)
    payload["config"] = vars(args)
    name = "spec_llm" + ("-tune" if args.tune else "") + (f"-{args.tag}" if args.tag else "")
    path = write_result(name, payload)
    for m, p in payload.get("policies", {}).items():
        print(
            f"{m:12s} acceptance {p['mean_acceptance_length']:5.2f}  {p['tokens_per_s']:6.2f} tok/s  "
            f"x ar {p['speedup_vs_ar'] or float('nan'):.2f}  x hf {p['speedup_vs_hf_assisted'] or float('nan'):.2f}  "
            f"identical {p['identical_to_ar']:.2f}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
