"""Speculative decoding side by side: every draft kind and method of ours, and the peers, on one CPU.

    .venv/bin/python benchmarks/spec_llm.py                                   # the issue's run: 20 HumanEval + 20 GSM8K + 10 open
    .venv/bin/python benchmarks/spec_llm.py --prompts 2 --open 1 --tag reduced   # what fits a CPU session
    .venv/bin/python benchmarks/spec_llm.py --tune --budgets 4,8,16,32        # SAGE node budget for this machine
    .venv/bin/python benchmarks/spec_llm.py --target tiny:qwen2@0 --draft tiny:qwen2@1 --dtype fp32 --prompts 1 \
        --open 0 --max-new-tokens 16 --configs ar,sage@0.5b,sage@ngram,hf-lookup   # smoke

Target qwen2.5-coder-1.5b-instruct, draft qwen2.5-coder-0.5b-instruct, bf16, greedy, chat
template. A *configuration* is ``METHOD[@DRAFT][+ngram][+adapt]``: ``METHOD`` any of
:data:`~surefast.speculate.api.METHODS`; ``DRAFT`` one of ``0.5b`` (the ``--draft`` model),
``0.5b-int4`` (it, RTN int4 and packed), ``self:int4``, ``self:layers=K`` or ``ngram`` (no
draft model); ``+ngram`` adds n-gram branches, ``+adapt`` the cost-model planner. A
``deploy:`` prefix runs the configuration on the target packed to int4 (RTN): its output is
lossless with respect to that packed target (checked against the packed target alone), not the
bf16 one, and its speed is compared with the bf16 ``ar``.

Every configuration runs every prompt in one process, in an order that rotates per prompt,
``--repeats`` times (tokens/s: median of the repeats), after a warm-up that is not measured.
Speeds are end-to-end (prefill included: the fair figure for HF assisted generation, which has
no separate prefill); ``tokens per target forward`` does not depend on the machine's load.
Every output is compared with ``ar``'s (bf16 ties are listed with the target's top-2 margin).

Per configuration the JSON adds the time split of the decode steps (draft forwards, target
forwards, everything else: ``other_share``) and the cost-model bound ``tau v(1) / (d + v(n + 1)
+ o)`` from its measured acceptance ``tau``, mean tree ``n``, draft forward time ``d`` and other
time ``o`` per step, with ``v`` the target's forward time measured in the same run; the measured
speed-up over ``ar`` divided by that bound is ``of_bound``.
Writes ``benchmarks/results/spec_llm[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, write_result

from surefast.models import load_model
from surefast.models.chat import encode_chat
from surefast.speculate import POLICY_CONFIGS, policy_config
from surefast.speculate.api import check_method, load_pair
from surefast.speculate.compare import decode, judge, warm
from surefast.speculate.drafts import first_layers, packed_copy
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PlanConfig
from surefast.speculate.tune import interp, tune_budget, verify_time_curve

# On a CPU whose 16-token forward costs under 2x a one-token forward (issue 17).
TARGETS = {"best_vs_ar": 2.5, "best_vs_hf_assisted_same_draft": 1.3, "best_vs_hf_lookup": 1.3, "best_of_bound": 0.85}
DEFAULT_CONFIGS = (
    "ar,hf-assisted@0.5b,hf-assisted@0.5b-int4,hf-lookup,"
    "sage@0.5b,sage@0.5b-int4,sage@0.5b-int4+ngram,sage@0.5b-int4+ngram+adapt,conformal@0.5b-int4+ngram,"
    "conformal@0.5b-int4+ngram+adapt,"
    "conformal@0.5b-int4,dynamic@0.5b-int4,static-tree@0.5b-int4,chain@0.5b-int4,"
    "sage@ngram,conformal@ngram,sage@self:int4+ngram+adapt,sage@self:layers=8+ngram+adapt,"
    "deploy:ar,deploy:conformal@0.5b-int4+ngram+adapt"
)
# Open-ended prompts (no data set needed): explanations and short essays, where n-grams rarely help.
OPEN_PROMPTS = (
    "Explain why the sky is blue to a ten-year-old.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the trade-offs between renting and buying a home?",
    "Describe how a bill becomes a law in the United States.",
    "Give me five tips for learning a new language as an adult.",
    "Compare the climates of Norway and Spain.",
    "Write a polite email declining a job offer.",
    "What is the difference between weather and climate?",
    "Summarize the plot of a heist movie you invent.",
    "Explain how vaccines train the immune system.",
)


def load_prompts(task: str, n: int) -> list[str]:
    if task == "humaneval":
        with gzip.open(SHARED_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
            rows = [json.loads(line) for line in f][:n]
        return [f"Complete the following Python function.\n```python\n{r['prompt']}```" for r in rows]
    if task == "gsm8k":
        with bz2.open(SHARED_DATA / "gsm8k" / "test.jsonl.bz2", "rt") as f:
            rows = [json.loads(line) for line in f][:n]
        return [f"{r['question']}\nAnswer step by step." for r in rows]
    if task == "open":
        return list(OPEN_PROMPTS[:n])
    raise SystemExit(f"unknown task {task!r} (humaneval, gsm8k, open)")


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: ``[deploy:]METHOD[@DRAFT][+ngram][+adapt]`` (module docstring)."""

    label: str
    method: str
    draft: str | None
    ngram: bool
    adapt: bool
    deploy: bool

    @staticmethod
    def parse(text: str) -> Config:
        label = text.strip()
        rest = label.removeprefix("deploy:")
        parts = rest.split("+")
        method, _, draft = parts[0].partition("@")
        flags = set(parts[1:])
        if flags - {"ngram", "adapt"}:
            raise SystemExit(f"{label}: unknown flags {sorted(flags - {'ngram', 'adapt'})} (ngram, adapt)")
        method = check_method(method)
        if method in POLICY_CONFIGS and not draft:
            raise SystemExit(f"{label}: an engine method needs @DRAFT")
        return Config(label, method, draft or None, "ngram" in flags, "adapt" in flags, label != rest)

    @property
    def engine(self) -> bool:
        return self.method in POLICY_CONFIGS


def load_drafts(configs: list[Config], target: Any, draft: Any) -> dict[str, Any]:
    """Each draft the configurations name, built once: label -> HF model (None: no draft model)."""
    out: dict[str, Any] = {}
    for c in configs:
        name = c.draft
        if name is None or name in out:
            continue
        if name == "0.5b":
            out[name] = draft.model
        elif name == "0.5b-int4":
            out[name] = packed_copy(draft.model, "int4")
        elif name in ("self:int4", "self:int8"):
            out[name] = packed_copy(target.model, name.removeprefix("self:"))
        elif name.startswith("self:layers="):
            out[name] = first_layers(target.model, int(name.removeprefix("self:layers=")))
        elif name == "ngram":
            out[name] = None
        else:
            raise SystemExit(f"unknown draft {name!r} (0.5b, 0.5b-int4, self:int4, self:int8, self:layers=K, ngram)")
    return out


def measure(
    args: argparse.Namespace,
    targets: dict[bool, Any],
    drafts: dict[str, Any],
    tasks: dict[str, list[torch.Tensor]],
    configs: list[Config],
) -> list[dict]:
    """One row per (task, prompt, configuration): median speed over repeats, acceptance, the check.

    The pieces of ``surefast speculate``'s harness (:mod:`surefast.speculate.compare`): every
    configuration interleaves with the others on each prompt, warmed up once, run through
    :func:`decode` and judged against the target alone's first run (``deploy:`` rows against
    the packed target alone's).
    """

    def gen(c: Config, ids: torch.Tensor, n: int) -> Any:
        policy = (
            policy_config(c.method, budget=args.budget) if args.budget and c.method in ("sage", "dynamic") else None
        )
        return decode(
            targets[c.deploy],
            drafts.get(c.draft) if c.draft else None,
            ids,
            c.method,
            policy=policy,
            max_new_tokens=n,
            ngram=NgramConfig() if c.engine and (c.ngram or c.draft == "ngram") else None,
            plan=PlanConfig() if c.engine and c.adapt else None,
        )

    first = next(iter(tasks.values()))[0]
    for c in configs:  # allocations and kernels, not measured
        gen(c, first, 4)
    for deploy in {c.deploy for c in configs}:
        warm(targets[deploy], None, first, "ar")
    rows, k = [], 0
    for task, prompts in tasks.items():
        for i, ids in enumerate(prompts):
            runs: dict[str, list[Any]] = {c.label: [] for c in configs}
            for _ in range(args.repeats):
                k += 1
                for c in configs[k % len(configs) :] + configs[: k % len(configs)]:
                    runs[c.label].append(gen(c, ids, args.max_new_tokens))
            for c in configs:
                out = runs[c.label][0]
                row = out.stats.summary()
                row.update(
                    config=c.label,
                    task=task,
                    prompt=i,
                    e2e_tokens_per_s=statistics.median(o.stats.e2e_tokens_per_s for o in runs[c.label]),
                    repeats_e2e_tokens_per_s=[o.stats.e2e_tokens_per_s for o in runs[c.label]],
                )
                ref_label = "deploy:ar" if c.deploy else "ar"
                if ref_label in runs:
                    check = judge(targets[c.deploy], ids, out, runs[ref_label][0])
                    row["identical_to_ar"] = check.identical
                    div = check.divergence
                    if div is not None and div.position < len(runs[ref_label][0].tokens):
                        row["divergence"] = {"position": div.position, "top2_margin": div.top2_margin}
                if c.engine:
                    row["accepted"] = out.stats.accepted_lengths
                rows.append(row)
                print(
                    f"{task} {i:2d} {c.label:38s} {row['e2e_tokens_per_s']:6.2f} tok/s  "
                    f"{row['tokens_per_forward'] or 1:5.2f} tok/fwd  identical={row.get('identical_to_ar')}",
                    flush=True,
                )
    return rows


def aggregate(rows: list[dict], configs: list[Config]) -> dict[str, dict]:
    """Per configuration: acceptance, median tokens/s, median per-prompt speed-ups, equality, time split."""
    speed = {(r["task"], r["prompt"], r["config"]): r["e2e_tokens_per_s"] for r in rows}
    out = {}
    for c in configs:
        mine = [r for r in rows if r["config"] == c.label]
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
        split = {k: sum(r["time_split"][k] for r in mine) for k in ("draft_forward_s", "target_forward_s", "other_s")}
        total = sum(split.values())
        out[c.label] = {
            "method": c.method,
            "draft": c.draft,
            "ngram": c.ngram or c.draft == "ngram",
            "adapt": c.adapt,
            "deploy": c.deploy,
            "mean_acceptance_length": statistics.fmean(r["tokens_per_forward"] or 1.0 for r in mine),
            "tokens_per_s": statistics.median(r["e2e_tokens_per_s"] for r in mine),
            "speedup_vs_ar": ratio("ar"),
            "speedup_vs_hf_assisted": ratio("hf-assisted@0.5b"),
            "speedup_vs_hf_assisted_same_draft": ratio(f"hf-assisted@{c.draft}") if c.draft else None,
            "speedup_vs_hf_lookup": ratio("hf-lookup"),
            "identical_to_ar": statistics.fmean(bool(r.get("identical_to_ar", True)) for r in mine),
            "divergences": [
                {"task": r["task"], "prompt": r["prompt"], **r["divergence"]} for r in mine if "divergence" in r
            ],
            "mean_tree_size": (sum(r["mean_tree_size"] * r["steps"] for r in mine if r["steps"]) / steps)
            if steps
            else 0,
            "tokens_per_step": sum(r["new_tokens"] - 1 for r in mine) / steps if steps else 1.0,
            "draft_forward_s_per_step": split["draft_forward_s"] / steps if steps else 0.0,
            "other_s_per_step": split["other_s"] / steps if steps else 0.0,
            "time_split": {**split, "other_share": split["other_s"] / total if total else 0.0},
            "ngram_accepted_share": sum(r["ngram_accepted"] for r in mine) / max(1, sum(r["new_tokens"] for r in mine)),
            "target_alone_step_share": (
                sum(r["plan"].get("target_alone_steps", 0) for r in mine) / steps if steps and c.adapt else None
            ),
            "n_outputs": len(mine),
        }
    return out


def cost_model(target: Any, draft: Any, context: int, policies: dict[str, dict], sizes: list[int]) -> dict[str, Any]:
    """The measured costs and, per engine configuration, the speed-up its measured acceptance allows.

    ``v(n)``: the bf16 target's forward of n tokens after ``context`` cached ones; ``c_d``: one
    forward of the 0.5B draft. Bound of a configuration: ``tau v(1) / (d + v(n + 1) + o)`` with
    its tokens per step ``tau``, mean tree ``n``, draft forward time ``d`` and other time ``o``
    per step (module docstring); ``of_bound``: its measured speed-up over ``ar`` divided by that.
    """
    verify = verify_time_curve(target.model, context, sizes)
    draft_curve = verify_time_curve(draft.model, context, [1, 4, 8])
    v1, cd = verify[0], draft_curve[0]
    chains = {k: (k + 1) * v1 / (k * cd + interp(k + 1, sizes, verify)) for k in range(1, 17)}
    best_k = max(chains, key=chains.__getitem__)
    bounds = {}
    for label, p in policies.items():
        if p["method"] not in POLICY_CONFIGS or p["deploy"]:
            continue
        step = p["draft_forward_s_per_step"] + interp(p["mean_tree_size"] + 1, sizes, verify) + p["other_s_per_step"]
        bound = p["tokens_per_step"] * v1 / step
        bounds[label] = {"bound": bound, "of_bound": (p["speedup_vs_ar"] or 0.0) / bound}
    return {
        "context_tokens": context,
        "verify_sizes": sizes,
        "verify_s": verify,
        "verify_16_over_1": interp(16, sizes, verify) / v1,
        "draft_forward_s": cd,
        "draft_forward_s_by_width": dict(zip([1, 4, 8], draft_curve, strict=True)),
        "draft_to_target_cost": cd / v1,
        "perfect_chain_speedup_by_depth": chains,
        "perfect_chain_best_depth": best_k,
        "perfect_chain_best_speedup": chains[best_k],
        "bound_from_measured_acceptance": bounds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    configs = [Config.parse(c) for c in args.configs.split(",") if c.strip()]
    target, draft = load_pair(args.target, args.draft, dtype=args.dtype, device="cpu")
    targets = {False: target.model}
    if any(c.deploy for c in configs):  # the deploy target: packed int4 (RTN), loaded separately
        targets[True] = packed_copy(
            load_model(args.target, dtype=args.dtype, device="cpu").model, "int4", in_place=True
        )
    drafts = load_drafts(configs, target, draft)
    counts = {"humaneval": args.prompts, "gsm8k": args.prompts, "open": args.open}
    tasks = {
        t: [encode_chat(target.tokenizer, p) for p in load_prompts(t, counts[t])]
        for t in args.tasks.split(",")
        if counts[t] > 0
    }
    rows = measure(args, targets, drafts, tasks, configs)
    policies = aggregate(rows, configs)
    per_task = {t: aggregate([r for r in rows if r["task"] == t], configs) for t in tasks}
    lengths = [int(ids.numel()) for p in tasks.values() for ids in p]
    model = cost_model(
        target,
        draft,
        int(statistics.median(lengths)) + args.max_new_tokens // 2,
        policies,
        [1, 2, 4, 8, 16, 24, 32, 48, 64],
    )
    ours = {k: p for k, p in policies.items() if p["method"] in POLICY_CONFIGS and not p["deploy"]}
    checks: dict[str, Any] = {}
    if ours:
        best = max(ours, key=lambda k: ours[k]["speedup_vs_ar"] or 0.0)
        b = ours[best]
        checks = {
            "best_configuration": best,
            "best_vs_ar": b["speedup_vs_ar"],
            "best_vs_hf_assisted_same_draft": b["speedup_vs_hf_assisted_same_draft"],
            "best_vs_hf_lookup": b["speedup_vs_hf_lookup"],
            "best_of_bound": model["bound_from_measured_acceptance"].get(best, {}).get("of_bound"),
            "identical_to_ar": b["identical_to_ar"],
            "max_other_share": max(p["time_split"]["other_share"] for p in ours.values()),
        }
    deploy = {k: p for k, p in policies.items() if p["deploy"]}
    return {
        "policies": policies,
        "per_task": per_task,
        "upper_bound": model,
        "deploy": {
            "note": "lossless with respect to the int4-packed target (RTN), not the bf16 one; speed against the bf16 ar",
            "rows": deploy,
        },
        "targets": TARGETS,
        "measured_against_targets": checks,
        "configurations": [dataclasses.asdict(c) for c in configs],
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
    parser.add_argument("--tasks", default="humaneval,gsm8k,open")
    parser.add_argument("--prompts", type=int, default=20, help="HumanEval and GSM8K prompts each")
    parser.add_argument("--open", type=int, default=10, help="open-ended prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--configs", default=DEFAULT_CONFIGS, help="[deploy:]METHOD[@DRAFT][+ngram][+adapt], comma-separated"
    )
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
            f"{m:38s} acceptance {p['mean_acceptance_length']:5.2f}  {p['tokens_per_s']:6.2f} tok/s  "
            f"x ar {p['speedup_vs_ar'] or float('nan'):.2f}  x hf {p['speedup_vs_hf_assisted'] or float('nan'):.2f}  "
            f"identical {p['identical_to_ar']:.2f}  other {p['time_split']['other_share']:.3f}"
        )
    if payload.get("measured_against_targets"):
        print(json.dumps(payload["measured_against_targets"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
