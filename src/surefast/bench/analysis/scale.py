"""One compression method across the sizes of one model family (e.g. Qwen2.5-Coder 0.5B vs 1.5B).

The question (Tong et al. 2026): do small models absorb compression worse than large ones?
For each compression and metric we line up the deltas by model size; ``smaller_hurts_more``
says whether the magnitude of the harmful change shrinks as size grows (accuracy falling or
set size growing). It is a comparison of point estimates with their intervals reported beside
them; with two sizes it is a statement about this pair, not a scaling law.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from surefast.bench.analysis.cells import ALL_TASKS
from surefast.bench.analysis.deltas import Delta


@dataclass(frozen=True)
class ScaleRow:
    compression: str
    metric: str
    by_size: list[tuple[str, float, Delta]]  # (model, size, delta), smallest first
    smaller_hurts_more: bool


_SIZE = re.compile(r"(?<=[-_:/])\d+(?:\.\d+)?[mMbB](?=$|[-_@])")


def family_of(model: str) -> str:
    """The model name with its size token starred: ``qwen2.5-coder-0.5b-instruct`` ->
    ``qwen2.5-coder-*-instruct``. A name without a size token is a family of its own."""
    return _SIZE.sub("*", model)


def families(sizes: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Group ``sizes`` (model -> parameter count) by family; only families with two or more sizes,
    because comparing SmolLM2-135M with Qwen2.5-0.5B would confound size with everything else."""
    out: dict[str, dict[str, float]] = {}
    for model, size in sizes.items():
        out.setdefault(family_of(model), {})[model] = size
    return {f: members for f, members in sorted(out.items()) if len(members) >= 2}


def harm(delta: Delta) -> float:
    """How much worse the compressed model is: accuracy lost, or set size gained."""
    return -delta.value if delta.metric == "accuracy" else delta.value


def scale_rows(deltas: list[Delta], sizes: Mapping[str, float], task: str = ALL_TASKS) -> list[ScaleRow]:
    """Group ``deltas`` of the models in ``sizes`` (model -> parameter count) by compression and metric."""
    groups: dict[tuple[str, str], list[tuple[str, float, Delta]]] = {}
    for d in deltas:
        if d.key.task == task and d.key.model in sizes and d.metric in ("accuracy", "mean_set_size"):
            groups.setdefault((d.key.compression, d.metric), []).append((d.key.model, sizes[d.key.model], d))
    rows = []
    for (compression, metric), items in sorted(groups.items()):
        if len(items) < 2:
            continue
        items.sort(key=lambda t: t[1])
        harms = [harm(d) for _, _, d in items]
        rows.append(ScaleRow(compression, metric, items, all(a > b for a, b in itertools.pairwise(harms))))
    return rows
