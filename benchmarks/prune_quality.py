"""Pruning quality and speed: perplexity, compression wall time and decode tokens/s per method.

For each model (bf16, CPU): the dense model, then every method in ``--methods`` applied to a
fresh copy through ``surefast.compress.compress_`` with the same calibration set (stdlib
docstrings, ``--n-samples`` x ``--seq-len``). Perplexity on held-out text (docstrings of other
stdlib modules, never in the calibration set): ``exp(mean NLL)`` over ``--ppl-tokens`` tokens in
windows of ``--ppl-window``. Decode speed (structured methods, and dense as the reference):
greedy generation of ``--decode-tokens`` tokens, dense and pruned timed alternately in the same
run, median of ``--repeats``, warm-up excluded. Unstructured sparsity keeps dense matrices (zeros
are still multiplied), so its decode speed is the dense one and is not measured.

    .venv/bin/python benchmarks/prune_quality.py                       # both models, all methods
    .venv/bin/python benchmarks/prune_quality.py --models smollm2-135m-instruct --methods wanda-50 slicegpt-20

Rows are merged into an existing JSON (``--fresh`` starts over), so a long sweep can run in parts.

Writes ``benchmarks/results/prune_quality.json``:
``{"models": {NAME: {METHOD: {"perplexity", "seconds", "decode_tokens_per_s", ...}}}}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from typing import Any

import torch
from _common import RESULTS, write_result

MODELS = ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct")
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "magnitude-50": ("magnitude", {"sparsity": 0.5}),
    "wanda-50": ("wanda", {"sparsity": 0.5}),
    "sparsegpt-50": ("sparsegpt", {"sparsity": 0.5}),
    "wanda-2:4": ("wanda", {"nm": "2:4"}),
    "sparsegpt-2:4": ("sparsegpt", {"nm": "2:4"}),
    "llm-pruner-20": ("llm-pruner", {"ratio": 0.2}),
    "slicegpt-20": ("slicegpt", {"ratio": 0.2}),
}
STRUCTURED = ("llm-pruner", "slicegpt")
PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring and tests."


def heldout_ids(tokenizer: Any, n_tokens: int) -> torch.Tensor:
    from surefast.compress import heldout_text

    ids = tokenizer(heldout_text(), return_tensors="pt").input_ids[0]
    return ids[:n_tokens]


@torch.no_grad()
def perplexity(model: Any, ids: torch.Tensor, window: int) -> float:
    nll, count = 0.0, 0
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window][None]  # [1, S]
        if chunk.shape[1] < 2:
            break
        logits = model(chunk, use_cache=False).logits.float()  # [1, S, V]
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
        nll += float(loss)
        count += chunk.shape[1] - 1
    return math.exp(nll / count)


@torch.no_grad()
def decode_seconds(model: Any, tokenizer: Any, n_tokens: int) -> float:
    messages = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    prefill = model(ids, use_cache=True)  # not timed: decode speed only
    past, token = prefill.past_key_values, prefill.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(n_tokens):  # greedy decode, one token per forward (the pruned model may stop early otherwise)
        out = model(token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


def decode_side_by_side(dense: Any, pruned: Any, tokenizer: Any, n_tokens: int, repeats: int) -> tuple[float, float]:
    """Tokens/s of dense and pruned, timed alternately (warm-up excluded), medians."""
    decode_seconds(dense, tokenizer, 4)
    decode_seconds(pruned, tokenizer, 4)
    d, p = [], []
    for _ in range(repeats):
        d.append(decode_seconds(dense, tokenizer, n_tokens))
        p.append(decode_seconds(pruned, tokenizer, n_tokens))
    return n_tokens / statistics.median(d), n_tokens / statistics.median(p)


def run_model(name: str, methods: list[str], args: argparse.Namespace, save: Any) -> dict[str, Any]:
    from surefast.compress import CalibrationConfig, compress_, make_config
    from surefast.models import load_model

    torch.manual_seed(0)
    loaded = load_model(name, dtype="bfloat16")
    dense, tok = loaded.model.eval(), loaded.tokenizer
    ids = heldout_ids(tok, args.ppl_tokens)
    params = sum(p.numel() for p in dense.parameters())
    out: dict[str, Any] = {
        "dense": {
            "perplexity": perplexity(dense, ids, args.ppl_window),
            "seconds": 0.0,
            "decode_tokens_per_s": None,
            "params": params,
        }
    }
    print(name, "dense", out["dense"], flush=True)
    calib = CalibrationConfig(n_samples=args.n_samples, seq_len=args.seq_len)
    dense_tps: list[float] = []
    for key in methods:
        method, kw = METHODS[key]
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        result = compress_(model, make_config(method, **kw), calib, tokenizer=tok, base_fingerprint=loaded.fingerprint)
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {
            "perplexity": perplexity(model, ids, args.ppl_window),
            "seconds": round(seconds, 2),
            "decode_tokens_per_s": None,
            "params": sum(p.numel() for p in model.parameters()),
        }
        sparsities = [v["sparsity"] for v in result.layers.values() if "sparsity" in v]
        if sparsities:
            row["mean_layer_sparsity"] = round(sum(sparsities) / len(sparsities), 6)
        if method in STRUCTURED:
            d_tps, p_tps = decode_side_by_side(dense, model, tok, args.decode_tokens, args.repeats)
            row["decode_tokens_per_s"], row["dense_decode_tokens_per_s"] = round(p_tps, 2), round(d_tps, 2)
            row["decode_speedup"] = round(p_tps / d_tps, 3)
            row["structure"] = result.recipe.get("stats", {})
            dense_tps.append(d_tps)
        out[key] = row
        print(name, key, {k: v for k, v in row.items() if k != "structure"}, flush=True)
        del model
        if dense_tps:
            out["dense"]["decode_tokens_per_s"] = round(statistics.median(dense_tps), 2)
        save(out)  # after every method, so an interrupted sweep keeps what it measured
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--ppl-window", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--tag", default="", help="suffix for the method keys of a side run, e.g. @32x256")
    parser.add_argument("--out", default="prune_quality", help="results file name (benchmarks/results/OUT.json)")
    parser.add_argument(
        "--fresh", action="store_true", help="start a new JSON instead of updating the models/methods run"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh:
        (RESULTS / f"{args.out}.json").unlink(missing_ok=True)
    for name in args.models:
        run_model(name, args.methods, args, lambda rows, name=name: save(name, rows, args))


def save(name: str, rows: dict[str, Any], args: argparse.Namespace) -> None:
    """Merge this model's rows so far into the JSON (re-read each time: parts may run side by side)."""
    path = RESULTS / f"{args.out}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    models, settings = old.get("models", {}), old.get("settings", {})
    if args.tag:  # a side run (e.g. another calibration size): its rows get a suffix, dense is kept
        rows = {f"{key}{args.tag}": {**row, "settings": vars(args)} for key, row in rows.items() if key != "dense"}
    else:  # each model keeps the settings of its latest untagged run
        settings[name] = {k: v for k, v in vars(args).items() if k not in ("models", "fresh", "out")}
    models[name] = {**models.get(name, {}), **rows}
    write_result(args.out, {"models": models, "settings": settings, "dtype": "bfloat16"})


if __name__ == "__main__":
    main()
