"""Measure (not a test): items/s of cached scoring vs the plain reference on SmolLM2-135M, bf16.

    .venv/bin/python tests/scoring/measure_speed.py [--items 100] [--ref-items 20] [--repeats 3]

About 100 items of ~80 tokens after a ~600-token shared prefix (instruction + demos), the shape
of a 5-shot MMLU prompt. The reference runs one full forward per item (on a subset: its cost per
item does not depend on how many there are); the fast path runs all items, with and without the
prefix KV cache. Prints JSON; numbers are quoted in docs/scoring.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch

from surefast.data.items import IDK, LETTERS, NOTA, MCItem
from surefast.models import load_model
from surefast.scoring import ScoringConfig, score_items, score_items_reference
from surefast.scoring.batching import encode_prefix, encode_text

WORDS = "cell membrane protein enzyme energy river mountain market price law court theory proof number function signal memory network planet orbit force mass charge field wave light"


class BenchPrompt:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def render(self, item: MCItem, context: str | None = None) -> str:
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.options, strict=True))
        return f"Question: {item.question}\n{options}\nAnswer:"


def make_item(rng: random.Random, uid: str, question_words: int) -> MCItem:
    def phrase(n: int) -> str:
        return " ".join(rng.choice(WORDS.split()) for _ in range(n))

    options = (phrase(4), phrase(4), phrase(4), phrase(4), IDK, NOTA)
    return MCItem("bench", uid, "", phrase(question_words) + "?", options, rng.randrange(6))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--ref-items", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu", dtype="bf16")
    model, tok = loaded.model, loaded.tokenizer
    rng = random.Random(0)
    demos = [make_item(rng, f"demo-{i}", 48) for i in range(6)]
    head = "The following are multiple choice questions (with answers) about general science.\n"
    prompt = BenchPrompt(head)
    prompt.prefix = head + "".join(prompt.render(d) + f" {LETTERS[d.label]}\n" for d in demos)
    items = [make_item(rng, f"item-{i}", 30) for i in range(args.items)]
    prefix_len = len(encode_prefix(tok, prompt.prefix))
    rest = statistics.mean(len(encode_text(tok, prompt.render(i))) for i in items)

    def run(fn, its):
        t = time.perf_counter()
        out = fn(its)
        return time.perf_counter() - t, out

    fast = lambda its: score_items(model, tok, prompt, its)  # noqa: E731
    batched = lambda its: score_items(model, tok, prompt, its, config=ScoringConfig(use_prefix_cache=False))  # noqa: E731
    ref = lambda its: score_items_reference(model, tok, prompt, its)  # noqa: E731
    run(fast, items[:8])  # warm-up
    run(ref, items[:2])
    t_fast, t_batched, t_ref = [], [], []
    for _ in range(args.repeats):  # interleaved: the machine's load drifts
        seconds, full_out = run(fast, items)
        t_fast.append(seconds)
        t_batched.append(run(batched, items)[0])
        t_ref.append(run(ref, items[: args.ref_items])[0])
    _, fast_out = run(fast, items[: args.ref_items])
    _, ref_out = run(ref, items[: args.ref_items])
    fast_ips = args.items / statistics.median(t_fast)
    batched_ips = args.items / statistics.median(t_batched)
    ref_ips = args.ref_items / statistics.median(t_ref)
    report = {
        "model": args.model,
        "dtype": "bf16",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "prefix_tokens": prefix_len,
        "mean_item_tokens": round(rest, 1),
        "items": args.items,
        "reference_items": args.ref_items,
        "repeats": args.repeats,
        "items_per_s": {
            "prefix_cached": round(fast_ips, 2),
            "batched_no_prefix_cache": round(batched_ips, 2),
            "reference": round(ref_ips, 2),
        },
        "speedup_vs_reference": {
            "prefix_cached": round(fast_ips / ref_ips, 2),
            "batched_no_prefix_cache": round(batched_ips / ref_ips, 2),
        },
        "seconds": {"prefix_cached": t_fast, "batched_no_prefix_cache": t_batched, "reference": t_ref},
        "tokens_per_item": {
            "prefix_cached": round(full_out.tokens_scored / args.items, 1),
            "reference": round(ref_out.tokens_scored / args.ref_items, 1),
        },
        "argmax_agreement_vs_reference": float((fast_out.predictions == ref_out.predictions).mean()),
        "max_abs_diff_vs_reference": float(abs(fast_out.logits - ref_out.logits).max()),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
