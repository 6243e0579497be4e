"""``surefast speculate --machine-report`` and ``--plan``: what forwards cost here, and whether speculation pays.

The numbers come from :mod:`surefast.speculate.forecast`; this module only prints them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from surefast.models.dtype_choice import auto_choice
from surefast.models.load import config_hidden
from surefast.speculate.drafts import DraftSpec
from surefast.speculate.forecast import forecast, machine_report


def print_machine_report(console: Console, t: Any, name: str) -> None:
    """``--machine-report``: the CPU, and the target's forward time per token count in bf16 and fp32."""
    with console.status("timing forwards of 1, 4, 16 and 25 tokens after a 200-token cache (bf16, fp32)"):
        report = machine_report(t.model)
    m = report["machine"]
    console.print(
        f"[bold]{escape(m['cpu_model'])}[/]: torch capability {m['cpu_capability']}, "
        f"flags {', '.join(m['cpu_flags']) or 'none'}, {m['threads']} threads"
    )
    table = Table(title=f"{escape(name)}: one forward of k tokens after {report['context']} cached (ms)")
    table.add_column("dtype")
    for k in report["sizes"]:
        table.add_column(f"k={k}", justify="right")
    for dtype, curve in report["curves"].items():
        table.add_row(dtype, *(f"{1000 * curve['forward_s'][str(k)]:.0f}" for k in report["sizes"]))
    console.print(table)
    for dtype, curve in report["curves"].items():
        console.print(f"{dtype}: {curve['verdict']}", markup=False, highlight=False, soft_wrap=True)
    print_dtype_auto(console, config_hidden(t.model.config.to_dict()), str(t.model.device))


def print_dtype_auto(console: Console, hidden: int | None, device: str) -> None:
    """What ``--dtype auto`` picks here for each work, with the linear times it measured (or cached)."""
    with console.status("dtype auto: timing a linear layer in bf16 and fp32"):
        choices = [auto_choice(work, hidden=hidden, device=device) for work in ("decoding", "scoring")]
    for choice in choices:
        console.print(choice.note(), markup=False, highlight=False, soft_wrap=True)


def print_forecast(console: Console, target: Any, draft: Any, spec: DraftSpec, ids: Any, ngram: Any) -> None:
    """``--plan``: probe the draft (and n-gram lookups alone) and print each method's expected speed-up."""
    drafts = {spec.label: draft} if draft is not None else {}
    drafts["ngram"] = None
    with console.status("probing: target forward costs, then 32 tokens per draft and method"):
        costs, rows = forecast(target, drafts, ids, ngram=ngram)
    table = Table(title="expected speed-up over the target alone (cost model, this machine, this prompt)")
    for col in ("draft", "method", "tokens/step", "tree", "draft ms/step", "expected"):
        table.add_column(col, justify="left" if col in ("draft", "method") else "right")
    for r in rows:
        table.add_row(
            escape(r.draft),
            r.method,
            f"{r.tokens_per_step:.2f}",
            f"{r.mean_tree:.1f}",
            f"{1000 * r.draft_forward_s_per_step:.0f}",
            f"{r.expected_speedup:.2f}x",
        )
    console.print(table)
    curve = ", ".join(f"{n}: {1000 * v:.0f}" for n, v in zip(costs.sizes, costs.verify_s, strict=True))
    console.print(f"target forward ms by tokens: {curve}", markup=False, highlight=False)
    best = max(rows, key=lambda r: r.expected_speedup)
    if best.expected_speedup < 1.0:
        console.print(
            f"[yellow]warning: speculation is expected to lose on this machine (best {best.expected_speedup:.2f}x); "
            "with --adapt (the default) the decoder runs the target alone when drafting does not pay[/]"
        )
    else:
        console.print(f"best: --draft {escape(best.draft)} --policy {best.method} ({best.expected_speedup:.2f}x)")
