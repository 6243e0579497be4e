"""Packed low-bit models against bf16 and llama.cpp: bytes, load memory, decode and prefill speed, perplexity.

Per model x format (bf16; int8 weight-only per channel; int4 g128; int4 g64; W8A8), in one run:

* ``weight_bytes``: every stored tensor of the loaded model (packed codes, scales, zero points,
  embeddings, norms: what the folder holds), and ``resident_bytes``: what the model holds in
  memory after decoding (the kernels' own layouts included: torch's int4 CPU kernel keeps the
  nibbles in its tile order, and the layer then drops its stored copy; a ``dense`` fallback
  would hold a bf16 weight);
* ``load_rss_mb``: peak resident memory of a fresh process that imports torch and loads the
  folder (``baseline_rss_mb``: the same process before loading), and ``first_forward_rss_mb``
  after one forward of the prompt (a memory-mapped bf16 checkpoint is paged in only then);
* ``decode_ms``: one-token decode with a KV cache, median over 64 tokens after 4 warm-up tokens
  (two rounds of 32, interleaved across formats), at 2 threads and at 1; ``decode_gbs``: the
  weight bytes read per token (``resident_bytes`` less an untied input embedding) over that time,
  and its share of the memory bandwidth measured in the same run (a 1 GiB tensor copy);
* ``prefill_tok_s``: a 128-token prefill (median of 3, interleaved);
* ``perplexity`` on the held-out text of ``quant_quality.py`` (8 windows x 256), beside the
  fake-quant model's with the same codes (``fake_quant_perplexity``);
* ``kernels``: which kernel the automatic choice ran, per token class, counted over layers.

``--formats bf16,int4-g128,int4-g128-head8`` adds int4 g128 with the output head also rounded
to int8 and packed (``surefast compress --pack-head int8``): its ``fake_quant_perplexity`` is the
model before that rounding, so ``perplexity_minus_fake_quant`` is what the head costs.

Quantization is RTN (the codes are what matters here; GPTQ's codes pack the same way), W8A8 is
SmoothQuant. The llama.cpp anchor (``llama-cpp-python``, the ``bench`` extra) runs the Q4_0 and
Q8_0 GGUF files surefast exported from the int4 g128 and int8 models (the same codes; only the
scales are rounded to fp16) on the same machine and threads; without it the JSON says why.

    python benchmarks/lowbit.py                      # all three models, about 30 minutes on 2 cores
    python benchmarks/lowbit.py --models smollm2-135m-instruct --quick

Run it alone on the machine (no test suite or other benchmark beside it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, cpu_facts, write_result
from quant_quality import perplexity

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
FORMATS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "bf16": None,
    "int8": ("rtn", {"bits": 8, "group_size": -1}),
    "int4-g128": ("rtn", {"bits": 4, "group_size": 128}),
    "int4-g64": ("rtn", {"bits": 4, "group_size": 64}),
    "w8a8": ("smoothquant", {}),
    # not in the default run: int4 g128 with lm_head also rounded to int8 (pack_(head="int8"): beyond the
    # compressed model), to measure what the head costs a decode; --formats bf16,int4-g128,int4-g128-head8
    "int4-g128-head8": ("rtn", {"bits": 4, "group_size": 128}),
}
DEFAULT_FORMATS = ("bf16", "int8", "int4-g128", "int4-g64", "w8a8")
HEADS = {"int4-g128-head8": "int8"}  # formats that also pack lm_head
GGUF = {"int4-g128": "Q4_0", "int8": "Q8_0"}  # the llama.cpp anchors: exported from these models' codes
PROMPT = "def fibonacci(n):\n    " * 4  # any fixed text: the timing does not depend on what is decoded


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's resident high-water mark (``VmHWM``; ``ru_maxrss`` would carry the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bandwidth_gbs(gib: float = 1.0, repeats: int = 5) -> float:
    """Copy bandwidth (bytes read + written per second) of a ``gib`` GiB fp32 tensor."""
    src = torch.ones(int(gib * 2**30 // 4))
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


# --- building the folders ----------------------------------------------------------------------


def build(name: str, fmt: str, folder: Path, windows: torch.Tensor, calib: Any) -> dict[str, Any]:
    """Compress ``name`` with ``fmt``'s method, measure the fake-quant perplexity, pack and save it; export GGUF."""
    from surefast.compress import compress_, make_config, save_compressed
    from surefast.compress.lowbit.export import export_model
    from surefast.compress.lowbit.pack import pack_
    from surefast.models import load_model

    method, options = FORMATS[fmt]  # type: ignore[misc]
    loaded = load_model(name, device="cpu")
    start = time.perf_counter()
    result = compress_(loaded.model, make_config(method, **options), calib, tokenizer=loaded.tokenizer)
    info: dict[str, Any] = {"method": method, "options": options, "compress_s": round(time.perf_counter() - start, 1)}
    info["fake_quant_perplexity"] = round(perplexity(loaded.model, windows), 4)  # before packing: de-quantized bf16
    report = pack_(loaded.model, head=HEADS.get(fmt))
    info["formats"] = report.count()
    save_compressed(loaded.model, loaded.tokenizer, result, folder)
    if fmt in GGUF:
        info["gguf"] = str(export_model(loaded.model, loaded.tokenizer, f"gguf-{GGUF[fmt].lower()}", folder))
    (folder / "bench_build.json").write_text(json.dumps(info, indent=1))
    return info


# --- measuring ---------------------------------------------------------------------------------


def load_child(folder: str) -> None:
    """A fresh process: baseline RSS, load the folder, peak RSS, then after a first forward (printed as JSON)."""
    import transformers  # noqa: F401  (imported before the baseline, as load_model would)

    import surefast.compress.saved  # noqa: F401  (the packed folder's loader)
    from surefast.models import load_model

    gc.collect()
    baseline = rss_mb()
    start = time.perf_counter()
    loaded = load_model(folder, device="cpu")
    seconds = time.perf_counter() - start
    at_load = peak_rss_mb()
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():  # a memory-mapped bf16 model pages its weights in only now
        loaded.model(ids, use_cache=True)
    got = {
        "baseline_rss_mb": baseline,
        "load_rss_mb": at_load,
        "first_forward_rss_mb": peak_rss_mb(),
        "load_s": seconds,
    }
    print(json.dumps({k: round(v, 2) for k, v in got.items()}))


def measure_load(folder: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--load-child", str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


@torch.no_grad()
def prefill_s(model: Any, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(ids, use_cache=True)
    return time.perf_counter() - start


def read_bytes(model: Any) -> tuple[int, int, int]:
    """(stored bytes, bytes held in memory now, bytes a decode reads per token).

    Stored: what a packed folder holds. Held: :func:`~surefast.compress.lowbit.deploy.resident_bytes`
    (kernel layouts included; codes a layer dropped because its int4 kernel layout holds them, not).
    Read per token: held, less an untied input embedding (a decode reads one row of it)."""
    from surefast.compress.lowbit.deploy import resident_bytes
    from surefast.compress.lowbit.pack import model_bytes

    stored, _ = model_bytes(model)
    held = resident_bytes(model)
    emb, head = model.get_input_embeddings().weight, getattr(model.get_output_embeddings(), "weight", None)
    untied = head is None or emb.data_ptr() != head.data_ptr()  # a packed head has no float weight
    return stored, held, held - (emb.numel() * emb.element_size() if untied else 0)


def kernels_chosen(model: Any) -> dict[str, dict[str, int]]:
    from surefast.compress.lowbit import PackedLinear

    out: dict[str, dict[str, int]] = {}
    for m in model.modules():
        if isinstance(m, PackedLinear):
            for where, kernel in m.chosen_kernels().items():
                klass = where.rsplit(" ", 1)[1]
                out.setdefault(klass, {}).setdefault(kernel, 0)
                out[klass][kernel] += 1
    return out


class LlamaCpp:
    """llama.cpp on a GGUF file, at a thread count: decode and prefill timings like ours."""

    def __init__(self, path: str, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)

    def decode_ms(self, prompt: list[int], tokens: int, warmup: int) -> list[float]:
        self.llm.reset()
        self.llm.eval(prompt)
        times = []
        for i in range(warmup + tokens):
            nxt = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
            start = time.perf_counter()
            self.llm.eval([nxt])
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        return times

    def prefill_s(self, ids: list[int]) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        return time.perf_counter() - start


def llama_cpp_info() -> str:
    import llama_cpp

    return f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}"


def llama_cpp_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return (
            f"llama-cpp-python is not installed ({exc}); pip install 'surefast[bench]' builds it from source "
            "(CMake and a C++ compiler, about 25 minutes on 2 cores)"
        )
    return None


def run_model(name: str, args: argparse.Namespace, cache: Path, bandwidth: float) -> dict[str, Any]:
    from surefast.compress import CalibrationConfig, heldout_text
    from surefast.compress.calibration_data import tokenize_windows
    from surefast.compress.lowbit.deploy import decode_ms
    from surefast.compress.lowbit.pack import packed_report
    from surefast.models import load_model
    from surefast.models.load import resolve_folder
    from surefast.models.spec import parse_spec

    base = load_model(name, device="cpu")
    tok = base.tokenizer
    windows = tokenize_windows(heldout_text(), tok, args.eval_windows, args.eval_len, seed=0)
    calib = CalibrationConfig(n_samples=args.calib_samples, seq_len=args.calib_len)
    folders: dict[str, Path] = {}
    entry: dict[str, Any] = {"formats": {}}
    for fmt in args.formats:
        if fmt == "bf16":
            folders[fmt] = resolve_folder(parse_spec(name))  # type: ignore[assignment]
            entry["formats"][fmt] = {}
            continue
        folder = cache / f"{name}-{fmt}"
        built = folder / "bench_build.json"
        info = json.loads(built.read_text()) if built.is_file() else build(name, fmt, folder, windows, calib)
        folders[fmt] = folder
        entry["formats"][fmt] = dict(info)
        gc.collect()
    del base
    gc.collect()

    for fmt, folder in folders.items():
        entry["formats"][fmt].update(measure_load(folder))
    models = {fmt: load_model(str(folder), device="cpu").model for fmt, folder in folders.items()}
    anchors: dict[str, dict[int, LlamaCpp]] = {}
    missing = llama_cpp_missing()
    entry["llama_cpp"] = {"skipped": missing} if missing else {"system_info": llama_cpp_info()}
    prompt = tok(PROMPT, return_tensors="pt")["input_ids"]
    long = windows[0][None, :128]
    if not missing:
        for fmt, gguf_type in GGUF.items():
            path = entry["formats"].get(fmt, {}).get("gguf")
            if path:
                anchors[gguf_type] = {t: LlamaCpp(path, t) for t in args.threads}

    for threads in args.threads:
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # interleaved: a busy moment hits every method alike
            for fmt, model in models.items():
                times.setdefault(fmt, []).extend(decode_ms(model, prompt, args.tokens // args.rounds, args.warmup))
            for kind, by_threads in anchors.items():
                times.setdefault(kind, []).extend(
                    by_threads[threads].decode_ms(prompt[0].tolist(), args.tokens // args.rounds, args.warmup)
                )
        prefill: dict[str, list[float]] = {}
        for _ in range(3):
            for fmt, model in models.items():
                prefill.setdefault(fmt, []).append(prefill_s(model, long))
            for kind, by_threads in anchors.items():
                prefill.setdefault(kind, []).append(by_threads[threads].prefill_s(long[0].tolist()))
        for fmt, model in models.items():
            stored, held, read = read_bytes(model)
            ms = statistics.median(times[fmt])
            row = entry["formats"][fmt]
            row.update({"weight_bytes": stored, "resident_bytes": held, "read_bytes_per_token": read})
            report = packed_report(model)
            if report.layers:  # the packed linears alone, against their bf16 size (no embeddings or norms)
                row["packed_layers_vs_bf16"] = round(report.weight_bytes / report.dense_bytes, 3)
            row[f"decode_ms_t{threads}"] = round(ms, 2)
            row[f"decode_gbs_t{threads}"] = round(read / ms / 1e6, 2)
            row[f"bandwidth_share_t{threads}"] = round(read / ms / 1e6 / bandwidth, 3)
            row[f"prefill_tok_s_t{threads}"] = round(long.shape[1] / statistics.median(prefill[fmt]), 1)
            row[f"kernels_t{threads}"] = kernels_chosen(model)
        for kind in anchors:
            row = entry["llama_cpp"].setdefault(kind, {"from": next(f for f, t in GGUF.items() if t == kind)})
            row[f"decode_ms_t{threads}"] = round(statistics.median(times[kind]), 2)
            row[f"prefill_tok_s_t{threads}"] = round(long.shape[1] / statistics.median(prefill[kind]), 1)
    torch.set_num_threads(args.threads[0])

    for fmt, model in models.items():
        row = entry["formats"][fmt]
        row["perplexity"] = round(perplexity(model, windows), 4)
    bf16 = entry["formats"].get("bf16", {})
    for fmt, row in entry["formats"].items():
        if fmt == "bf16" or not bf16:
            continue
        for threads in args.threads:
            row[f"decode_speedup_vs_bf16_t{threads}"] = round(
                bf16[f"decode_ms_t{threads}"] / row[f"decode_ms_t{threads}"], 2
            )
        row["weight_bytes_vs_bf16"] = round(row["weight_bytes"] / bf16["weight_bytes"], 3)
        row["resident_bytes_vs_bf16"] = round(row["resident_bytes"] / bf16["resident_bytes"], 3)
        if "fake_quant_perplexity" in row:
            row["perplexity_minus_fake_quant"] = round(row["perplexity"] - row["fake_quant_perplexity"], 4)
    for row in entry["llama_cpp"].values():
        if isinstance(row, dict) and row.get("from") in entry["formats"]:
            ours = entry["formats"][row["from"]]
            for threads in args.threads:
                row[f"ours_vs_llama_cpp_decode_t{threads}"] = round(
                    ours[f"decode_ms_t{threads}"] / row[f"decode_ms_t{threads}"], 2
                )
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--formats", default=",".join(DEFAULT_FORMATS))
    ap.add_argument("--threads", default="2,1", help="thread counts to decode and prefill at (the first: the rest)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--eval-len", type=int, default=256)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="16 tokens, 2 eval windows: a smoke run")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "surefast-bench" / "lowbit")
    ap.add_argument("--out", default="lowbit")
    ap.add_argument("--load-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_child:
        return load_child(args.load_child)
    args.formats = args.formats.split(",")
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.quick:
        args.tokens, args.eval_windows = 16, 2
    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    path = RESULTS / f"{args.out}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("models", {})
    bandwidth = bandwidth_gbs()
    data["memory_bandwidth_gbs"] = round(bandwidth, 2)
    data["settings"] = {k: v for k, v in vars(args).items() if k not in ("load_child", "cache")}
    data["cpu"] = cpu_facts()
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        data["models"][name] = run_model(name, args, args.cache, bandwidth)
        print(json.dumps(data["models"][name], indent=1), flush=True)
        write_result(args.out, data)  # after every model: an interrupted run keeps what finished
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
