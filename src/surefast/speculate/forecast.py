"""Say before running whether speculation pays here: ``surefast speculate --plan`` and ``--machine-report``.

:func:`machine_report`: this CPU and the target's cost curve, the time of one forward of ``k``
tokens after a 200-token cache, in each candidate dtype. Its ratio ``v(16) / v(1)`` says which
kind of machine this is: under 2, verifying a 16-node tree costs little more than one token
(fast bf16 matrix units), so wide trees pay; above 4 verification is about linear in the tree
size (AVX2-only CPUs in bf16), so only short chains, free drafts or the target alone pay.

:func:`forecast`: for each (draft, method), a short greedy probe on the user's prompt measures
the tokens emitted per step ``tau``, the mean tree ``n``, the draft's forward time per step ``d``
and the step's other time ``o``; with the target's ``v(n)`` measured at the prompt's length, the
cost model's expected speed-up over the target alone is ``tau v(1) / (d + v(n + 1) + o)``
(:mod:`.planner`). The probe is short, so acceptance on the rest of an answer may differ.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch

from surefast.machine import cpu_facts
from surefast.speculate.engine import SpeculativeDecoder
from surefast.speculate.model import as_causal_lm
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PROBE_SIZES, Costs, forward_times

REPORT_SIZES = (1, 4, 16, 25)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def verdict(curve: dict[int, float]) -> str:
    """What the cost curve says about tree verification on this machine."""
    ratio = curve[16] / curve[1]
    if ratio < 2:
        return f"a 16-token forward costs {ratio:.1f}x a one-token one: verifying trees is nearly free, wide trees pay"
    if ratio < 4:
        return f"a 16-token forward costs {ratio:.1f}x a one-token one: moderate trees pay"
    return (
        f"a 16-token forward costs {ratio:.1f}x a one-token one: verification is about linear in the tree size here, "
        "so only short chains and free (n-gram) drafts pay; the planner falls back to the target alone otherwise"
    )


@torch.inference_mode()
def machine_report(
    model: Any, context: int = 200, sizes: tuple[int, ...] = REPORT_SIZES, dtypes: tuple[str, ...] = ("bf16", "fp32")
) -> dict[str, Any]:
    """CPU facts and the forward-time curve of ``model`` (a HF causal LM) per dtype (module docstring)."""
    sizes = tuple(sorted({*sizes, 1, 16}))
    out: dict[str, Any] = {"machine": cpu_facts(), "context": context, "sizes": list(sizes), "curves": {}}
    current = next(model.parameters()).dtype
    for name in dtypes:
        dtype = DTYPES[name]
        m = model if dtype == current else copy.deepcopy(model).to(dtype)
        times = forward_times(as_causal_lm(m), context, sizes)
        curve = dict(zip(sizes, times, strict=True))
        out["curves"][name] = {"forward_s": {str(k): v for k, v in curve.items()}, "verdict": verdict(curve)}
        del m
    return out


@dataclass
class Forecast:
    """One (draft, method) probe and the speed-up the cost model expects from it."""

    draft: str
    method: str
    tokens_per_step: float
    mean_tree: float
    draft_forward_s_per_step: float
    other_s_per_step: float
    expected_speedup: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _probe(
    target: Any, draft: Any, label: str, method: str, ids: torch.Tensor, costs: Costs, tokens: int, ngram: Any
) -> Forecast:
    SpeculativeDecoder(target, draft, method, ngram=ngram).generate(ids, 4, eos_token_id=None)  # warm-up
    out = SpeculativeDecoder(target, draft, method, ngram=ngram).generate(ids, tokens, eos_token_id=None)
    steps = out.stats.steps
    n = max(len(steps), 1)
    tau = sum(s.emitted for s in steps) / n
    tree = sum(s.tree_size for s in steps) / n
    draft_s = sum(s.draft_forward_s for s in steps) / n
    other = sum(s.bookkeeping_s for s in steps) / n
    expected = tau * costs.verify(1) / (draft_s + costs.verify(tree + 1) + other)
    return Forecast(label, method, tau, tree, draft_s, other, expected)


@torch.inference_mode()
def forecast(
    target: Any,
    drafts: dict[str, Any],
    ids: torch.Tensor,
    methods: tuple[str, ...] = ("chain", "sage", "conformal"),
    tokens: int = 32,
    ngram: NgramConfig | None = None,
) -> tuple[Costs, list[Forecast]]:
    """Probe each draft (label -> model; None: n-gram only) with each method; the costs and the forecasts."""
    lm = as_causal_lm(target)
    costs = Costs(list(PROBE_SIZES), forward_times(lm, int(ids.numel()), PROBE_SIZES), 0.0, int(ids.numel()))
    rows = []
    for label, draft in drafts.items():
        for method in methods:
            use = ngram if draft is not None else (ngram or NgramConfig())
            rows.append(_probe(target, draft, label, method, ids, costs, tokens, use))
    return costs, rows
