"""``surefast speculate``: stream a speculative generation, then show what the decoder did.

By default the target alone (``ar``) runs on the same prompt afterwards, so the speed-up and
whether the output is identical (greedy) are printed next to the statistics.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from surefast.atomic import write_errors
from surefast.cli.options import cap_new_tokens, parse_options
from surefast.cli.progress import progress_bar
from surefast.cli.speculate_probe import print_forecast, print_machine_report
from surefast.errors import SurefastError
from surefast.models import load_model, parse_spec
from surefast.models.arch import model_max_length
from surefast.models.chat import encode_chat
from surefast.models.load import dtype_name
from surefast.speculate.api import HF_METHODS, TextStream, check_method
from surefast.speculate.compare import Comparison, Phase, compare
from surefast.speculate.divergence import Divergence
from surefast.speculate.drafts import DraftSpec, load_draft, parse_draft
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PlanConfig
from surefast.speculate.policies import POLICY_CONFIGS, policy_config
from surefast.speculate.stats import ConfigError, SpecStats
from surefast.speculate.verify import SamplingConfig
from surefast.speculate.vlm.generate import load_processor
from surefast.speculate.vlm.inputs import VisualInputs, load_image, prepare_inputs
from surefast.speculate.vlm.prune import PruneConfig

console = Console()
err = Console(stderr=True)

DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"
DEFAULT_DRAFT = "qwen2.5-coder-0.5b-instruct"
BARS = "▁▂▃▄▅▆▇█"
# Settings this command takes as flags, which users also try as -o KEY=VALUE.
FLAG_SETTINGS = ("temperature", "top_k", "top_p", "seed", "max_new_tokens", "prune_ratio", "dtype", "chat")


def check_option_names(method: str, overrides: dict[str, Any]) -> None:
    """Say what a ``-o`` name that ``method`` lacks really is: a flag, or another policy's setting.

    Names that are neither are left to :func:`~surefast.speculate.policies.policy_config`, which
    answers with "did you mean".
    """
    known = {f.name for f in fields(POLICY_CONFIGS[method])}
    for key in overrides:
        if key in known:
            continue
        if key.replace("-", "_") in FLAG_SETTINGS:
            flag = "--" + key.replace("_", "-")
            raise SurefastError(f"-o {key}: not a policy setting but a flag of surefast speculate", f"use {flag} VALUE")
        owners = [name for name, cls in POLICY_CONFIGS.items() if key in {f.name for f in fields(cls)}]
        if owners:
            who = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
            message = f"-o {key}: policy {method!r} has no option {key!r} (a setting of {who})"
            hint = f"use --policy {owners[0]}, or one of {method}'s options: {', '.join(sorted(known))}"
            raise SurefastError(message, hint)


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line bar chart of ``values`` in [0, 1] (NaN: a space), averaged down to ``width`` columns."""
    if not values:
        return ""
    per = max(1, math.ceil(len(values) / width))
    cols = []
    for i in range(0, len(values), per):
        chunk = [v for v in values[i : i + per] if not math.isnan(v)]
        cols.append(" " if not chunk else BARS[min(len(BARS) - 1, int(sum(chunk) / len(chunk) * len(BARS)))])
    return "".join(cols)


def stats_table(stats: SpecStats, baseline: SpecStats | None = None, identical: bool | None = None) -> Table:
    """The numbers of one generation (and, given the target alone's, the speed-up) as a two-column table."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    s = stats.summary()
    table.add_row("method", s["method"])
    table.add_row("new tokens", f"{s['new_tokens']} after a {s['prompt_tokens']}-token prompt")
    table.add_row(
        "speed",
        f"{s['tokens_per_s'] or 0:.2f} tok/s decoding, {s['e2e_tokens_per_s'] or 0:.2f} tok/s "
        f"with prefill ({s['total_s']:.2f} s)",
    )
    table.add_row(
        "tokens per target forward",
        f"{s['tokens_per_forward'] or 1:.2f} ({s['target_forwards']} target, {s['draft_forwards']} draft forwards)",
    )
    if stats.steps:
        decode = stats.draft_s + stats.verify_s + stats.overhead_s
        share = (lambda x: 100 * x / decode) if decode > 0 else (lambda x: 0.0)
        table.add_row(
            "time split",
            f"draft {share(stats.draft_s):.0f}%, verify {share(stats.verify_s):.0f}%, "
            f"overhead {share(stats.overhead_s):.0f}% (prefill {stats.prefill_s:.2f} s); "
            f"{100 * stats.time_split()['other_share']:.1f}% outside the models' forwards",
        )
        table.add_row(
            "tree per step",
            f"{s['mean_tree_size']:.1f} nodes, depth {s['mean_depth']:.1f}, width {s['mean_width']:.1f}",
        )
        accepted = stats.accepted_lengths
        table.add_row(
            "accepted per step",
            f"mean {sum(accepted) / len(accepted):.2f}, max {max(accepted)}  "
            f"[dim]{sparkline([a / max(1, max(accepted)) for a in accepted])}[/]",
        )
        entropy = stats.entropy_trace
        known = [h for h in entropy if not math.isnan(h)]
        if known:
            table.add_row("draft entropy", f"mean {sum(known) / len(known):.2f}  [dim]{sparkline(entropy)}[/]")
    if baseline is not None:
        ratio = (stats.e2e_tokens_per_s / baseline.e2e_tokens_per_s) if baseline.e2e_tokens_per_s > 0 else math.nan
        same = "" if identical is None else (", same output" if identical else ", [yellow]output differs[/]")
        table.add_row("target alone (ar)", f"{baseline.e2e_tokens_per_s:.2f} tok/s with prefill")
        table.add_row("speed-up", f"[bold green]{ratio:.2f}x[/]{same}")
    return table


def explain_divergence(div: Divergence, dtype: str) -> str:
    """One line on where a greedy output left the target's own, and why."""
    where = f"the outputs part at new token {div.position}"
    if div.is_tie:
        return (
            f"[yellow]{where}[/], where the target's two best logits are {div.top2_margin:.3f} apart: a {dtype} "
            "rounding tie between its tree pass and its one-token pass, not a lost token "
            "(such ties are far rarer with --dtype fp32)"
        )
    return (
        f"[red]{where}, where the target prefers its token by {div.top2_margin:.3f}: this should not happen "
        "under greedy decoding; please report it with --stats-json[/]"
    )


def speculate(
    prompt: Annotated[
        str | None, typer.Argument(help="the user message (chat template applied for instruct models)")
    ] = None,
    target: Annotated[str, typer.Option(help="target model spec")] = DEFAULT_TARGET,
    draft: Annotated[
        str, typer.Option(help="draft: a model spec (same tokenizer), self:int4, self:int8, self:layers=K or ngram")
    ] = DEFAULT_DRAFT,
    draft_compress: Annotated[
        str | None, typer.Option(help="int4 or int8: quantize (RTN) and pack the draft model as it loads")
    ] = None,
    policy: Annotated[
        str, typer.Option(help="sage, conformal, dynamic, static-tree, chain, hf-assisted, hf-lookup or ar")
    ] = "sage",
    ngram: Annotated[
        bool, typer.Option("--ngram/--no-ngram", help="n-gram lookups from the text so far join the draft's trees")
    ] = True,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt/--no-adapt",
            help="cap trees by the costs measured on this machine, and run the target alone when speculating does not pay",
        ),
    ] = True,
    plan: Annotated[
        bool, typer.Option("--plan", help="measure costs on a short probe, print each method's expected speed-up, stop")
    ] = False,
    machine_report: Annotated[
        bool, typer.Option("--machine-report", help="print this CPU and the target's forward-cost curve, then stop")
    ] = False,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="policy setting KEY=VALUE, repeatable (e.g. -o budget=16)"),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0: greedy")] = 0.0,
    top_k: Annotated[int, typer.Option(min=0, help="0: off")] = 0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="1: off")] = 1.0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    chat: Annotated[
        bool | None,
        typer.Option("--chat/--no-chat", help="chat template (default: if the tokenizer has one)", show_default=False),
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--compare/--no-compare", help="also run the target alone and print the speed-up")
    ] = True,
    image: Annotated[list[Path] | None, typer.Option(help="image file for a vision-language pair, repeatable")] = None,
    video: Annotated[Path | None, typer.Option(help="video file or folder of frames (vision-language pair)")] = None,
    prune_ratio: Annotated[
        float,
        typer.Option(min=0.0, max=0.99, help="share of visual tokens the draft drops (VLM; the target keeps all)"),
    ] = 0.0,
    dtype: Annotated[
        str, typer.Option(help="auto (the faster of bf16 and fp32 for decoding here, measured once), bf16, fp16, fp32")
    ] = "auto",
    stats_json: Annotated[Path | None, typer.Option(help="write the full statistics (every step) to this file")] = None,
) -> None:
    """Speculative decoding of TARGET with DRAFT: stream the answer, then print the statistics."""
    if prompt is None and not machine_report:
        raise SurefastError("give a prompt", 'e.g. surefast speculate "Write a function that reverses a string."')
    method = check_method(policy)
    overrides = parse_options(option or [])
    config = _policy_config(method, overrides)
    draft_spec = parse_draft(draft, draft_compress)
    try:
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    except ConfigError as exc:
        raise SurefastError(exc.message, "--temperature >= 0, --top-k >= 0, 0 < --top-p <= 1") from exc
    pictures = _read_media(image or [], video)
    if draft_spec.kind == "model":
        parse_spec(draft_spec.model)  # fail on a bad spec before any progress display
    if draft_spec.kind == "ngram" and method == "hf-assisted":
        raise SurefastError("hf-assisted needs a draft model", "use --policy hf-lookup for transformers' n-gram lookup")
    with progress_bar(err) as progress:
        t = load_model(parse_spec(target), dtype=dtype, progress=progress, work="decoding")
        if machine_report:
            print_machine_report(console, t, target)
            return
        assert prompt is not None  # checked above
        d = load_draft(draft_spec, t, dtype=t.dtype, progress=progress)  # the target's, "auto" resolved
    if t.dtype_choice is not None:
        err.print(f"[dim]{escape(t.dtype_choice.note())}[/]", soft_wrap=True)
    dtype = dtype_name(t.dtype)
    visual = bool(image or video)
    if visual and (draft_spec.kind == "ngram" or plan):
        raise SurefastError("--draft ngram and --plan are for text prompts", "give a draft model for images and video")
    engine = {} if visual or method in HF_METHODS else _engine_settings(draft_spec, ngram, adapt)
    if visual:
        prompt_in: Any = _visual_prompt(t, prompt, pictures, video, chat)
        ids = prompt_in.input_ids
    else:
        prompt_in = ids = encode_chat(t.tokenizer, prompt, use_template=chat)
    if plan:
        print_forecast(console, t.model, d, draft_spec, ids, engine.get("ngram"))
        return
    # Both models see the prompt and every new token but the last: all must fit the shorter context.
    lengths = [(target, model_max_length(t.model))] + ([(draft, model_max_length(d))] if d is not None else [])
    shorter, context = min(lengths, key=lambda x: x[1])
    max_new_tokens, note = cap_new_tokens(max_new_tokens, int(ids.shape[-1]), context, shorter)
    if note:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    extras = [
        k for k, on in (("n-gram branches", "ngram" in engine and d is not None), ("adaptive", "plan" in engine)) if on
    ]
    header = (
        f"[dim]{escape(target)} + draft {escape(draft_spec.label)}, {method}"
        f"{''.join(', ' + e for e in extras)}, {'greedy' if sampling.greedy else 'sampling'}[/]"
    )
    text = TextStream(t.tokenizer)
    result = compare(
        t.model,
        d,
        prompt_in,
        method,
        policy=config,
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        seed=seed,
        prune=PruneConfig(ratio=prune_ratio) if visual else None,
        warm_up=baseline,
        baseline=baseline,
        on_tokens=lambda chunk: _write(text.push(chunk)),
        phase=lambda stage: _show(stage, header),
        **engine,
    )
    prune = getattr(result.output, "prune", None)
    if prune is not None and prune.n_visual:
        err.print(f"[dim]draft kept {prune.n_visual - prune.n_dropped} of {prune.n_visual} visual tokens[/]")
    console.rule("[bold]statistics")
    ref = result.baseline.stats if result.baseline is not None else None
    console.print(stats_table(result.output.stats, ref, result.identical))
    if result.divergence is not None:
        console.print(explain_divergence(result.divergence, dtype))
    if stats_json is not None:
        payload = {
            **stats_payload(result),
            "target": target,
            "draft": draft_spec.label,
            "policy": method,
            "options": {k: repr(v) for k, v in overrides.items()},
        }
        with write_errors(stats_json.parent):
            stats_json.parent.mkdir(parents=True, exist_ok=True)
            stats_json.write_text(json.dumps(payload, indent=2))
        console.print(f"statistics written to {stats_json}", markup=False, highlight=False, soft_wrap=True)


def _engine_settings(spec: DraftSpec, ngram: bool, adapt: bool) -> dict[str, Any]:
    """The engine's ``ngram`` / ``plan`` settings from the flags (a pure n-gram draft always looks up)."""
    out: dict[str, Any] = {}
    if ngram or spec.kind == "ngram":
        out["ngram"] = NgramConfig()
    if adapt:
        out["plan"] = PlanConfig()
    return out


def stats_payload(result: Comparison) -> dict[str, Any]:
    """The ``--stats-json`` numbers of a comparison: every step of the method, the baseline's summary, the check."""
    div = result.divergence
    return {
        "stats": result.output.stats.to_dict(),
        "baseline": result.baseline.stats.summary() if result.baseline is not None else None,
        "identical_to_ar": result.identical,
        "divergence": None if div is None else {**asdict(div), "is_tie": div.is_tie},
    }


def _policy_config(method: str, overrides: dict[str, Any]) -> Any:
    """The engine policy's config with the ``-o`` settings (None for transformers' own methods, which take none)."""
    if method in HF_METHODS:
        if overrides:
            raise SurefastError(
                f"--option does not apply to {method!r}", "policy settings are for the engine's policies"
            )
        return None
    check_option_names(method, overrides)
    return policy_config(method, **overrides)


def _read_media(images: list[Path], video: Path | None) -> list[Any]:
    """The ``--image`` files, decoded (a bad file is refused before any model loads); ``--video`` must exist."""
    for path in [*images, *([video] if video else [])]:
        if not path.exists():
            raise SurefastError(
                f"{path} not found", "--image takes an image file, --video a video file or frame folder"
            )
    return [load_image(path) for path in images]


def _visual_prompt(t: Any, prompt: str, images: list[Any], video: Path | None, chat: bool | None) -> VisualInputs:
    """A vision-language pair's prompt, built by the target's processor. ``images``: already decoded."""
    return prepare_inputs(
        load_processor(t), t.model, prompt, images or None, str(video) if video else None, chat=chat is not False
    )


STATUS = {
    "warm-up": "warming up both models (first calls allocate memory and pick kernels; not timed)",
    "baseline": "running the target alone for comparison",
}


@contextmanager
def _show(stage: Phase, header: str) -> Iterator[None]:
    """What the terminal shows during a stage of :func:`compare`: the streamed answer, or a status line."""
    if stage != "run":
        with console.status(STATUS[stage]):
            yield
        return
    err.print(header)
    yield
    _write("\n")  # the answer's line ends before anything else is shown


def _write(text: str) -> None:
    """Model text to stdout as it comes, verbatim (Rich would read ``[i]`` as markup)."""
    sys.stdout.write(text)
    sys.stdout.flush()
