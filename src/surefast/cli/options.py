"""``-o KEY=VALUE`` options shared by the commands that take free-form settings."""

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
        except (ValueError, SyntaxError) as exc:
            raise SurefastError(
                f"--option {pair!r}: {value!r} is not a Python literal",
                "numbers as 16 or 0.5, switches as True or False, trees as ((0,), (1,), (0, 0))",
            ) from exc
    return out
