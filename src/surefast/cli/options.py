"""Settings shared by several commands: ``-o KEY=VALUE`` options and the ``--max-new-tokens`` cap."""

from __future__ import annotations

import ast
from typing import Any

from surefast.errors import SurefastError


def parse_options(pairs: list[str], example: str = "budget=16") -> dict[str, Any]:
    """``["budget=16", "paths=((0,),(1,))"]`` -> ``{"budget": 16, "paths": ((0,), (1,))}`` (Python literals)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SurefastError(f"--option {pair!r} is not KEY=VALUE", f"for example: --option {example}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        # TypeError: an unhashable dict key ({[1]: 2}); RecursionError / MemoryError: absurd nesting.
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
            raise SurefastError(
                f"--option {pair!r}: {value!r} is not a Python literal",
                "numbers as 16 or 0.5, switches as True or False, trees as ((0,), (1,), (0, 0))",
            ) from exc
    return out


def cap_new_tokens(requested: int, prompt_tokens: int, context: int, model: str) -> tuple[int, str | None]:
    """``--max-new-tokens`` capped so that prompt + new tokens fit the model's ``context`` positions.

    Returns (the limit, a one-line note when it was lowered). Nothing stops a decoder at the
    context length (the cache just grows: a billion new tokens run until memory is gone), and
    tokens past the positions a model was trained on are noise anyway. A prompt that already
    fills the context is refused.
    """
    room = context - prompt_tokens
    if room < 1:
        raise SurefastError(
            f"the prompt is {prompt_tokens} tokens; {model} holds {context} positions, so no new token fits",
            "shorten the prompt",
        )
    if requested <= room:
        return requested, None
    note = (
        f"--max-new-tokens {requested} capped to {room}: the {prompt_tokens}-token prompt and the new tokens "
        f"must fit {model}'s {context}-position context"
    )
    return room, note
