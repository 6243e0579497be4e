"""The report's "Paired per-item changes" section, from the stored items (:mod:`surefast.bench.analysis.paired`)."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import TYPE_CHECKING

from surefast.bench.analysis.paired import (
    PairedItems,
    PairKey,
    pairs_from_items,
    pool,
    pool_strategies,
    shift_histogram,
    top_changed,
)
from surefast.bench.report import plots
from surefast.bench.report.blocks import Section, image, md_text, paragraph, table

if TYPE_CHECKING:
    import pyarrow as pa

TITLE = "Paired per-item changes"
SCORE_FN = "lac"  # the score of the full-sample sets ("newly outside their set")
TOP_K = 10  # items listed per (model, compression)
NO_ITEMS = (
    "No per-item data stored for these runs (they were stored before scored items were kept): "
    "paired per-item changes cannot be shown. Run them again to see which answers changed."
)


def section(items: pa.Table, run_ids: list[str], alpha: float) -> Section:
    """Flips, McNemar, newly uncovered items and the p_true shift per compressed cell (pooled
    over strategies), a histogram of the shift, and the items that changed most."""
    if items.num_rows == 0:
        h, m = paragraph(NO_ITEMS)
        return Section(TITLE, h, m)
    pooled = pool_strategies(pairs_from_items(items, score_fn=SCORE_FN, alpha=alpha))
    missing = sorted(set(run_ids) - set(items.column("run_id").to_pylist()))
    notes = [f"Runs stored without items (not in this section): {', '.join(missing)}."] if missing else []
    if not pooled:
        h, m = paragraph(" ".join(["No compressed model has a dense baseline among the stored items.", *notes]))
        return Section(TITLE, h, m)
    notes.insert(
        0,
        f"Items are paired by uid between each compressed model and its dense model, per task and prompt "
        f"strategy, then pooled over strategies. r->w / w->r: answers (argmax option) right under the dense model "
        f"and wrong after compression, and the reverse; p: McNemar's exact two-sided test of r->w against w->r. "
        f"Newly outside / inside: the true option leaves / enters the model's LAC prediction set at alpha = "
        f"{alpha:g}, each set calibrated on all paired items of its unit (a full-sample diagnostic, not a held-out "
        f"guarantee). Shift: p(true option) compressed minus dense.",
    )
    unpaired = sum(p.n_unpaired for p in pooled.values())
    if unpaired:
        notes.append(f"{unpaired} stored items had no partner with the same uid and label; they are left out.")
    header = [
        "model",
        "compression",
        "task",
        "pairs",
        "r->w",
        "w->r",
        "net (pts)",
        "McNemar p",
        "newly outside",
        "newly inside",
        "mean shift",
        "median shift",
    ]
    rows = []
    for key, got in pooled.items():
        stats = got.metrics()
        rows.append(
            [
                key.model,
                key.compression,
                key.task,
                f"{stats['n_paired']:.0f}",
                f"{stats['flips_right_to_wrong']:.0f}",
                f"{stats['flips_wrong_to_right']:.0f}",
                _signed(100 * stats["net_change"]),
                f"{stats['mcnemar_p']:.3g}",
                f"{stats['newly_uncovered']:.0f}",
                f"{stats['newly_covered']:.0f}",
                _signed(stats["p_true_shift_mean"], 3),
                _signed(stats["p_true_shift_median"], 3),
            ]
        )
    intro_h = "".join(paragraph(t)[0] for t in notes)
    intro_m = "\n\n".join(paragraph(t)[1] for t in notes)
    table_h, table_m = table(header, rows)
    png = _histogram(pooled)
    img_h, img_m = image("p_true_shift.png", png, "shift of the true option's probability")
    parts_h, parts_m = [intro_h, table_h, img_h], [intro_m, table_m, img_m]
    for (model, compression), got in _by_model(pooled).items():
        h, m = _top_items(model, compression, got)
        parts_h.append(h)
        parts_m.append(m)
    return Section(TITLE, "".join(parts_h), "\n\n".join(parts_m), [("p_true_shift.png", png)])


def _signed(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:+.{digits}f}"


def _by_model(pooled: dict[PairKey, PairedItems]) -> dict[tuple[str, str], PairedItems]:
    """(model, compression) -> its pairs over all tasks and strategies."""
    by: dict[tuple[str, str], list[PairedItems]] = defaultdict(list)
    for key, got in pooled.items():
        by[(key.model, key.compression)].append(got)
    return {k: pool(v) for k, v in sorted(by.items())}


def _histogram(pooled: dict[PairKey, PairedItems]) -> bytes:
    panels = []
    edges = shift_histogram(pooled[next(iter(pooled))].delta)[1]
    for model in sorted({k.model for k in pooled}):
        series = [
            (compression, shift_histogram(got.delta)[0])
            for (m, compression), got in _by_model(pooled).items()
            if m == model and got.n
        ]
        panels.append((model, series))
    return plots.shift_histograms(panels, edges)


def _top_items(model: str, compression: str, got: PairedItems) -> tuple[str, str]:
    """The items whose true-option probability changed most, with their text."""
    top = top_changed(got, TOP_K)
    title = f"Items that changed most: {model}, {compression} vs dense"
    if not top:
        return f"<h3>{html.escape(title)}</h3><p>No paired items.</p>", f"### {md_text(title)}\n\nNo paired items."
    # the question and subject first: the page's style aligns the first two columns left
    header = ["question", "subject", "task", "right", "answer dense -> compressed", "p(right) dense -> compressed"]
    rows = [
        [
            t["text"] or t["uid"],
            t["group"] or "-",
            t["task"],
            t["label"],
            f"{t['answer_dense']} -> {t['answer_compressed']}",
            f"{t['p_true_dense']:.3f} -> {t['p_true_compressed']:.3f} ({t['delta']:+.3f})",
        ]
        for t in top
    ]
    h, m = table(header, rows)
    return f"<h3>{html.escape(title)}</h3>{h}", f"### {md_text(title)}\n\n{m}"
