"""The pieces every report section is made of: a section, a table, an image, a number with its interval.

Every cell and caption is user data (model names, compression labels, question texts): HTML
gets it escaped, and Markdown too (``<``, ``&``, ``|`` and line breaks), so a question that
holds markup or a pipe renders as text and never breaks a table.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

import numpy as np

from surefast.bench.analysis.cells import Cell
from surefast.bench.analysis.deltas import Z95


@dataclass
class Section:
    title: str
    html: str
    markdown: str
    images: list[tuple[str, bytes]] = field(default_factory=list)


def md_text(text: str) -> str:
    """``text`` safe in a Markdown table cell or list item: one line; ``&`` and ``<`` as entities, so
    no tag or entity forms (``->`` stays readable); ``|``, backslash, backtick, ``*`` and brackets
    backslash-escaped, so no cell ends early and no code, emphasis or link forms."""
    out = " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;")
    return re.sub(r"([\\`*\[\]|])", r"\\\1", out)


def table(header: list[str], rows: list[list[str]]) -> tuple[str, str]:
    """A table as (HTML, Markdown)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    md = ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(map(md_text, r)) + " |" for r in rows]
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>", "\n".join(md)


def paragraph(text: str) -> tuple[str, str]:
    """A paragraph as (HTML, Markdown)."""
    return f"<p>{html.escape(text)}</p>", md_text(text)


def fmt(values: dict[str, np.ndarray], metric: str, pct: bool) -> str:
    """The mean of ``values[metric]`` over the splits where it is defined (x100 for ``pct``), "-"
    when absent or undefined on every split (a worst-group coverage with no group large enough)."""
    finite = np.asarray(values.get(metric, []), dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if not finite.size:
        return "-"
    v = float(finite.mean())
    return f"{100 * v:.2f}" if pct else f"{v:.2f}"


def image(name: str, png: bytes, alt: str) -> tuple[str, str]:
    """An inline PNG (HTML, self-contained) and a link to its file (Markdown)."""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">', f"![{md_text(alt)}]({name})"


def pm(cell: Cell, metric: str, pct: bool) -> str:
    """The cell's mean, and +- the half-width of its bootstrap 95% interval when it has one
    (from the replicates that are defined, when at least two are)."""
    text = fmt(cell, metric, pct)
    boot = cell.boot.get(metric)
    if boot is None or metric not in cell or text == "-":
        return text
    boot = boot[np.isfinite(boot)]
    if boot.size < 2:
        return text
    half = Z95 * float(np.std(boot, ddof=1)) * (100 if pct else 1)
    return f"{text} +- {half:.2f}"
