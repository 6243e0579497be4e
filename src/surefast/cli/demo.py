"""``surefast demo`` (the main job for a newcomer) and ``surefast generate``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from surefast.cli.options import cap_new_tokens
from surefast.cli.progress import progress_bar, write_verbatim
from surefast.models import DEFAULT_MODEL, load_model, parse_spec
from surefast.models.arch import model_max_length
from surefast.models.chat import encode_chat, greedy_answer

console = Console()
err = Console(stderr=True)

DEMO_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a Python function that returns the square of a number.",
)


def generate(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    model: Annotated[str, typer.Option(help="model spec")] = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 64,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32")] = "bf16",
) -> None:
    """Answer one prompt greedily with any model spec."""
    parsed = parse_spec(model)  # fail on a bad spec before any progress display
    with progress_bar() as progress:
        loaded = load_model(parsed, dtype=dtype, progress=progress)
    limit = new_token_limit(loaded, model, prompt, max_new_tokens)
    t0 = time.perf_counter()
    text, n = greedy_answer(loaded.model, loaded.tokenizer, prompt, limit)
    dt = time.perf_counter() - t0
    write_verbatim(text)
    err.print(f"[dim]{escape(speed_line(loaded.model, n, dt))}[/]", highlight=False)


def speed_line(model: Any, tokens: int, seconds: float) -> str:
    """``48 tokens, 20.1 tokens/s; weights 735 MB (packed: int4 x168)``: what a run cost, on stderr."""
    from surefast.compress.lowbit.choice import measured_here
    from surefast.compress.lowbit.deploy import resident_bytes
    from surefast.compress.lowbit.pack import packed_report

    report = packed_report(model)
    kind = ", ".join(f"{k} x{n}" for k, n in report.count().items())
    what = f"packed: {kind}" if kind else str(model.dtype).removeprefix("torch.")
    line = f"{tokens} tokens, {tokens / max(seconds, 1e-9):.1f} tokens/s; weights {resident_bytes(model) / 1e6:,.0f} MB ({what})"
    if measured_here():
        line += f"; includes choosing low-bit kernels for this machine ({measured_here()} shapes measured, kept for next time)"
    return line


def demo(
    model: Annotated[str, typer.Option(help="model spec")] = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
) -> None:
    """Pull the default model (first run only), load it, and answer a few prompts."""
    console.rule("[bold]surefast demo")
    start = time.perf_counter()
    parsed = parse_spec(model)  # fail on a bad spec before any progress display
    with progress_bar() as progress:
        loaded = load_model(parsed, progress=progress)
    kind = escape(str(loaded.model.config.model_type))  # the spec and the config are user data, not markup
    console.print(
        f"loaded [bold]{escape(model)}[/] ({kind}, {loaded.model.dtype}, "
        f"fingerprint {loaded.fingerprint}) in {time.perf_counter() - start:.1f} s"
    )
    for prompt in DEMO_PROMPTS:
        t0 = time.perf_counter()
        limit = new_token_limit(loaded, model, prompt, max_new_tokens)
        text, n = greedy_answer(loaded.model, loaded.tokenizer, prompt, limit)
        dt = time.perf_counter() - t0
        console.print()
        console.print(f"> {prompt}", style="bold cyan", markup=False, highlight=False)
        write_verbatim(text)
        console.print(f"[dim]{n} tokens, {n / dt:.1f} tokens/s[/]", highlight=False)


def new_token_limit(loaded: Any, spec: str, prompt: str, max_new_tokens: int) -> int:
    """``--max-new-tokens`` capped at the model's context, with a one-line note when it was lowered."""
    prompt_tokens = encode_chat(loaded.tokenizer, prompt).shape[1]
    limit, note = cap_new_tokens(max_new_tokens, prompt_tokens, model_max_length(loaded.model), spec)
    if note:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return limit
