"""How well a dense draft predicts a compressed target: SAGE's acceptance, measured in a study job.

Compression changes the target; the draft stays the dense model it was. A study job that has a
compressed target in memory generates a few fixed prompts with SAGE (greedy, so the output is the
target's own greedy output and only the acceptance varies) and records what the target accepted:
draft tokens accepted per step, tokens per target forward, and the share of steps that accepted
nothing. Hardware-independent: counts, not seconds (the seconds are recorded beside them).

Plan key (``surefast.bench.plan``)::

    acceptance: {draft: qwen2.5-coder-0.5b-instruct, prompts: 4, max_new_tokens: 64}

A job whose model does not share the draft's tokenizer is skipped with the reason recorded.
The prompts are built in (the product needs no data folder): two code, one arithmetic, one prose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from surefast.errors import SurefastError

PROMPTS = (
    "Write a Python function `is_prime(n)` that returns True when n is a prime number.",
    "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring.",
    "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with a 50 dollar bill. "
    "How much change does he get? Explain step by step.",
    "Explain in a short paragraph why the sky is blue.",
)


@dataclass(frozen=True)
class AcceptanceConfig:
    """The dense draft (a model spec), how many built-in prompts, and the tokens per prompt."""

    draft: str
    prompts: int = 4
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.draft, str) or not self.draft.strip():
            raise SurefastError(f"acceptance: draft: expected a model spec, got {self.draft!r}")
        for key, low, high in (("prompts", 1, len(PROMPTS)), ("max_new_tokens", 1, 4096)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SurefastError(f"acceptance: {key}: expected a whole number from {low} to {high}, got {value!r}")


def acceptance_config(value: Any, where: str) -> AcceptanceConfig | None:
    """A plan's ``acceptance:`` mapping, checked (None: not measured)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SurefastError(
            f"{where}: expected a mapping such as {{draft: qwen2.5-coder-0.5b-instruct}}, got {value!r}"
        )
    known = ("draft", "prompts", "max_new_tokens")
    for key in value:
        if key not in known:
            raise SurefastError(f"{where}: unknown key {key!r}", f"keys: {', '.join(known)}")
    if "draft" not in value:
        raise SurefastError(
            f"{where}: no draft given", "add draft: MODEL (the dense draft every target is paired with)"
        )
    try:
        return AcceptanceConfig(**value)
    except SurefastError as exc:
        raise SurefastError(f"{where}: {exc.message.removeprefix('acceptance: ')}", exc.hint) from None


def summarize(steps: list[tuple[int, int]]) -> dict[str, float]:
    """Totals over prompts from each decode step's (accepted, emitted): one step is one target forward.

    ``mean_accepted``: draft tokens accepted per step; ``tokens_per_forward``: tokens emitted per
    target decode forward (1.0: the draft never helped); ``zero_share``: steps that accepted none."""
    n = len(steps)
    nan = float("nan")
    return {
        "steps": n,
        "tokens": sum(e for _, e in steps),
        "mean_accepted": sum(a for a, _ in steps) / n if n else nan,
        "tokens_per_forward": sum(e for _, e in steps) / n if n else nan,
        "zero_share": sum(1 for a, _ in steps if a == 0) / n if n else nan,
    }


def measure_acceptance(target: Any, draft: Any, config: AcceptanceConfig) -> dict[str, Any]:
    """SAGE (greedy) with ``draft`` (a LoadedModel) on ``target`` (a LoadedModel) over the built-in prompts."""
    import torch

    from surefast.models.chat import encode_chat
    from surefast.speculate import speculative_generate
    from surefast.speculate.drafts import check_tokenizers

    check_tokenizers(target.tokenizer, draft.tokenizer, config.draft)
    steps: list[tuple[int, int]] = []
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in PROMPTS[: config.prompts]:
            ids = encode_chat(target.tokenizer, prompt)
            out = speculative_generate(
                target.model, draft.model, ids, method="sage", max_new_tokens=config.max_new_tokens
            )
            steps += [(s.accepted, s.emitted) for s in out.stats.steps]
    return {
        **summarize(steps),
        "draft": config.draft,
        "prompts": config.prompts,
        "max_new_tokens": config.max_new_tokens,
        "seconds": time.perf_counter() - start,
    }


__all__ = ["PROMPTS", "AcceptanceConfig", "acceptance_config", "measure_acceptance", "summarize"]
