"""Run the benchmark for one (model, compression): every task x strategy, scored once, analysed.

For each (task, strategy) *unit*: load the task's items (deterministic by seed), build the
prompt, score the six option logits (prefix KV cache, on-disk logits cache keyed by model,
compression, task, strategy and data fingerprints), run split conformal prediction over R
random splits, and store the tidy rows as one part of the run. A killed run resumes: finished
parts are skipped and scored logits come back from the cache.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surefast.bench.store import QUESTION_CHARS, Run, Store
from surefast.data.items import TASKS
from surefast.errors import SurefastError
from surefast.models import LoadedModel
from surefast.prompts.build import STRATEGIES

UnitProgress = Callable[[str, int, int], None]  # (unit label, items done, items total)
# The groupings every unit's evaluation has (run_unit): a Mondrian score may calibrate by these.
# A task without subject or sub-source meta has one subject group, so "lac@subject" is plain LAC there.
RUN_GROUPINGS = ("position", "subject")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Defaults follow the reference protocol (Ye et al. 2024; Tong et al. 2026):
    2000 items per task, the reference's few-shot counts (5; HaluEval dialogue 3, summarization 1,
    whose records are long), all three prompt strategies, LAC and APS at alpha 0.1, a 50/50
    calibration/test split; ours adds R=100 random splits for intervals."""

    tasks: tuple[str, ...] = TASKS
    strategies: tuple[str, ...] = STRATEGIES
    n: int = 2000
    seed: int = 0
    n_shots: int | None = None  # None: each task's reference count; 0: zero-shot
    chat: bool | None = None  # None: use the tokenizer's chat template when it has one
    score_fns: tuple[str, ...] = ("lac", "aps")
    alphas: tuple[float, ...] = (0.1,)
    n_splits: int = 100
    cal_fraction: float = 0.5
    n_boot: int = 200  # item-bootstrap replicates behind every interval (surefast.conformal.bootstrap); 0: none
    data: str | None = None  # a folder in the ../shared/data layout; None: each task's default source
    batch_tokens: int | None = None  # None: ScoringConfig's per-device default
    skip_malformed: bool = False

    def __post_init__(self) -> None:
        # Everything is checked here, before any model loads: `bench run` and study plans both
        # build this config first (a bad alpha or score name used to surface after the first
        # unit was scored, a bad type as a traceback). Messages name the study-plan key, which
        # is also the flag's name (`splits` is --splits, `score_fns` is --score-fns).
        from surefast.conformal import MondrianConfig, get_score
        from surefast.conformal.calibrate import min_calibration_size

        def whole(key: str, value: object, least: int) -> None:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SurefastError(f"{key}: expected a whole number, got {value!r}")
            if value < least:
                raise SurefastError(f"{key}: must be at least {least}, got {value}")

        lists = (
            ("tasks", self.tasks),
            ("strategies", self.strategies),
            ("score_fns", self.score_fns),
            ("alphas", self.alphas),
        )
        for key, values in lists:  # a bare string would be read letter by letter
            if isinstance(values, str) or not isinstance(values, tuple | list) or not values:
                raise SurefastError(f"{key}: expected a non-empty list, got {values!r}")
        for task in self.tasks:
            if task not in TASKS:
                raise SurefastError(f"tasks: unknown task {task!r}", f"choose from {', '.join(TASKS)}")
        for strategy in self.strategies:
            if strategy not in STRATEGIES:
                raise SurefastError(
                    f"strategies: unknown prompt strategy {strategy!r}", f"choose from {', '.join(STRATEGIES)}"
                )
        whole("n", self.n, 1)
        whole("seed", self.seed, 0)  # numpy's split generator refuses a negative seed
        if self.n_shots is not None:
            whole("shots", self.n_shots, 0)
        whole("splits", self.n_splits, 1)
        whole("bootstrap", self.n_boot, 0)
        if self.batch_tokens is not None:
            whole("batch_tokens", self.batch_tokens, 1)
        if self.chat is not None and not isinstance(self.chat, bool):
            raise SurefastError(f"chat: expected true or false (or nothing: the tokenizer decides), got {self.chat!r}")
        if not isinstance(self.skip_malformed, bool):
            raise SurefastError(f"skip_malformed: expected true or false, got {self.skip_malformed!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise SurefastError(f"data: expected a folder or file name, got {self.data!r}")
        for name in self.score_fns:
            try:
                score = get_score(name)
            except SurefastError as exc:
                raise SurefastError(f"score_fns: {exc.message}", exc.hint) from None
            if isinstance(score, MondrianConfig) and score.by not in RUN_GROUPINGS:  # "lac@subject"
                raise SurefastError(
                    f"score_fns: {name!r} calibrates per {score.by!r}, which a benchmark run does not group by",
                    f"use one of {', '.join(RUN_GROUPINGS)} after the '@'",
                )
        for alpha in self.alphas:
            if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha < 1.0:  # NaN too
                raise SurefastError(
                    f"alphas: {alpha!r} is not an error rate in (0, 1)",
                    "e.g. 0.1: sets that hold the right answer 90% of the time",
                )
        frac = self.cal_fraction
        if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0.0 < frac < 1.0:
            raise SurefastError(f"cal_fraction: {frac!r} is not a share in (0, 1)", "the default is 0.5")
        if self.n < 10:
            raise SurefastError(f"n: {self.n} items are too few for a calibration/test split", "use at least 10 items")
        n_cal = int(np.floor(frac * self.n + 1e-9))
        need = max(min_calibration_size(a) for a in self.alphas)
        if n_cal < need:
            raise SurefastError(
                f"n: {self.n} items leave {n_cal} for calibration; alpha={min(self.alphas):g} needs at least {need}",
                f"use at least {int(np.ceil(need / frac))} items or a larger alpha",
            )


@dataclass
class UnitResult:
    task: str
    strategy: str
    n_items: int
    shortened: int
    n_cached: int
    seconds: float
    accuracy: float
    skipped: bool = False
    too_long: int = 0  # items left out: they do not fit the model's context even without their own context
    malformed: int = 0  # rows of the task's source skipped as malformed (skip_malformed)


def task_config(config: BenchConfig, task: str) -> Any:
    from surefast.data import TaskConfig

    source = None
    if config.data:
        source = str(Path(config.data))
    return TaskConfig(
        n=config.n, seed=config.seed, n_demos=config.n_shots, skip_malformed=config.skip_malformed, source=source
    )


def run_unit(
    loaded: LoadedModel,
    task_data: Any,
    task: str,
    strategy: str,
    config: BenchConfig,
    compression_fp: str,
    progress: UnitProgress | None = None,
    scores_dir: str | None = None,
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """Score one (task, strategy): (ScoreResult, tidy conformal rows, item rows), both without
    model columns; the item rows are the store's per-item table (:data:`~surefast.bench.store.ITEM_SCHEMA`)."""
    from surefast import conformal
    from surefast.prompts import PromptConfig, build_prompt
    from surefast.scoring import CacheKey, ScoringConfig, score_items

    prompt = build_prompt(
        task,
        task_data.demos,
        loaded.tokenizer,
        PromptConfig(strategy=strategy, n_shots=config.n_shots, chat=config.chat),
    )
    key = CacheKey(loaded.fingerprint, compression_fp, task, strategy, task_data.fingerprint)
    label = f"{task}/{strategy}"
    result = score_items(
        loaded.model,
        loaded.tokenizer,
        prompt,
        task_data.items,
        config=ScoringConfig(batch_tokens=config.batch_tokens, cache_dir=scores_dir),
        cache_key=key,
        progress=(lambda done, total: progress(label, done, total)) if progress else None,
    )
    by_uid = {item.uid: item for item in task_data.items}
    items = [by_uid[uid] for uid in result.uids]
    groups = {"subject": [item_group(item) for item in items]}
    # From the logits, not the float32-rounded probabilities: a confident model's non-top options
    # are told apart by probabilities far below float32 precision (surefast.conformal.scores).
    rows = conformal.evaluate(
        result.logits,
        result.labels,
        from_logits=True,
        score_fns=config.score_fns,
        alphas=config.alphas,
        n_splits=config.n_splits,
        cal_fraction=config.cal_fraction,
        seed=config.seed,
        n_boot=config.n_boot,
        groups=groups,
    )
    fp = protocol(result.uids, task_data.fingerprint, config)
    item_rows = [
        {
            "uid": item.uid,
            "label": int(label),
            "logits": [float(v) for v in logits],
            "group": group,
            "text": item.question[:QUESTION_CHARS],
            "protocol": fp,
        }
        for item, label, logits, group in zip(items, result.labels, result.logits, groups["subject"], strict=True)
    ]
    return result, [{**row, "protocol": fp} for row in rows], item_rows


def item_group(item: Any) -> str:
    """The group an item's conditional coverage is reported in: its subject (MMLU) or sub-source."""
    meta = item.meta or {}
    return str(meta.get("subject") or meta.get("source") or "")


def protocol(uids: Any, data_fingerprint: str, config: BenchConfig) -> str:
    """What two units must share for their per-split (and per-replicate) values to pair: the
    scored items in their order, the seed and the split and bootstrap settings (16 hex chars)."""
    settings = {"seed": config.seed, "splits": config.n_splits, "cal_fraction": config.cal_fraction}
    blob = json.dumps({"uids": list(uids), "data": data_fingerprint, "bootstrap": config.n_boot, **settings})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_bench(
    loaded: LoadedModel,
    config: BenchConfig,
    run: Run,
    *,
    model_name: str | None = None,
    compression: str = "",
    compression_fp: str = "none",
    progress: UnitProgress | None = None,
    scores_dir: str | None = None,
) -> list[UnitResult]:
    """Run every (task, strategy) unit not yet stored in ``run``; return one result per unit.
    ``scores_dir``: the score cache's root (None: ``$SUREFAST_HOME/scores``)."""
    from dataclasses import replace

    from surefast.data import load_task
    from surefast.data.load import fingerprint
    from surefast.scoring.batching import ItemsTooLong

    name = model_name or loaded.spec.raw
    results = []
    for task in config.tasks:
        task_data = load_task(task, task_config(config, task))
        malformed = task_data.stats.malformed_skipped
        for strategy in config.strategies:
            part = part_name(name, compression, task, strategy)
            if run.has_part(part):
                n_items = len(task_data.items)
                skipped = UnitResult(task, strategy, n_items, 0, n_items, 0.0, float("nan"), True, malformed=malformed)
                results.append(skipped)
                continue
            start = time.perf_counter()
            too_long: tuple[str, ...] = ()
            try:
                scored, rows, item_rows = run_unit(
                    loaded, task_data, task, strategy, config, compression_fp, progress, scores_dir
                )
            except ItemsTooLong as exc:
                # Left out, not cut: these do not fit even with their own context removed. Which
                # ones depends only on the items, the tokenizer, the prompt and the model's
                # context, never on its weights, so every compression of a model leaves out the
                # same items (conformal comparisons need the same items). Their uids go into
                # run.json; the unit's data fingerprint becomes that of the items kept, so the
                # score cache and the protocol hash both see the items actually scored.
                too_long = exc.uids
                if len(too_long) == len(task_data.items):
                    raise
                left_out = set(too_long)
                items = [item for item in task_data.items if item.uid not in left_out]
                kept = replace(task_data, items=items, fingerprint=fingerprint(task, items, task_data.demos))
                scored, rows, item_rows = run_unit(
                    loaded, kept, task, strategy, config, compression_fp, progress, scores_dir
                )
                with run.editing_meta() as meta:
                    meta.setdefault("too_long", {})[part] = sorted(too_long)
            common = {
                "model": name,
                "model_fp": loaded.fingerprint,
                "compression": compression,
                "compression_fp": compression_fp,
                "task": task,
                "strategy": strategy,
            }
            labels = {k: common[k] for k in ("model", "compression", "task", "strategy")}
            run.write_items(part, [{**labels, **item} for item in item_rows])  # first: a stored part has its items
            run.write_part(part, [{**common, **row} for row in rows])
            n_scored, seconds = len(scored.labels), time.perf_counter() - start
            unit = UnitResult(task, strategy, n_scored, scored.shortened, scored.n_cached, seconds, scored.accuracy)
            unit.too_long, unit.malformed = len(too_long), malformed
            results.append(unit)
    return results


def part_name(model: str, compression: str, task: str, strategy: str) -> str:
    """The store part of one unit; model names and compression labels are unique within a run."""
    return f"{model}|{compression or 'dense'}|{task}|{strategy}"


def start_run(store: Store, config: BenchConfig, command: str, models: list[str]) -> Run:
    return store.create_run({"kind": "bench", "command": command, "models": models, "config": asdict(config)})


MAIN_METRICS = ("accuracy", "coverage", "mean_set_size", "uacc")
# `bench show`'s second table: error detection, selective prediction and the worst groups
DEPTH_METRICS = (
    "auroc",
    "selective_accuracy_80",
    "aurc",
    "brier",
    "nll",
    "coverage_worst@position",
    "coverage_gap@position",
    "coverage_worst@subject",
    "coverage_gap@subject",
)


def summary(
    store: Store, run_id: str, alpha: float | None = None, metrics: tuple[str, ...] = MAIN_METRICS
) -> list[dict[str, Any]]:
    """The reference paper's main table for one run: per (model, compression, task) and averaged
    over tasks, accuracy, coverage and set size (means over strategies, score functions and
    splits) at ``alpha`` (default: the run's first alpha), plus UAcc and the split std of each
    metric; ``metrics`` asks for others (e.g. :data:`DEPTH_METRICS`). Undefined (NaN) values
    are left out of the means."""
    run = store.run(run_id)
    alphas = run.read_meta().get("config", {}).get("alphas") or [0.1]
    a = float(alpha if alpha is not None else alphas[0])
    per_task = store.query(
        """
        WITH per_split AS (
          SELECT model, compression, task, split, metric, avg(value) AS v
          FROM results WHERE run_id = $run AND abs(alpha - $alpha) < 1e-9
            AND list_contains($metrics, metric) AND NOT isnan(value)
            AND coalesce(resampling, 'splits') = 'splits'  -- bootstrap replicates give intervals, not means
          GROUP BY ALL)
        SELECT model, compression, task, metric, avg(v) AS mean, coalesce(stddev_samp(v), 0) AS std
        FROM per_split GROUP BY ALL ORDER BY model, compression, task, metric
        """,
        runs=[run.run_id],
        run=run.run_id,
        alpha=a,
        metrics=list(metrics),
    ).fetchall()
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for model, compression, task, metric, mean, std in per_task:
        row = table.setdefault(
            (model, compression, task),
            {"model": model, "compression": compression or "dense", "task": task, "alpha": a},
        )
        row[metric] = mean
        row[f"{metric}_std"] = std
    out = list(table.values())
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in out:
        groups.setdefault((row["model"], row["compression"]), []).append(row)
    for (model, compression), rows in groups.items():
        avg: dict[str, Any] = {"model": model, "compression": compression, "task": "avg", "alpha": a}
        for metric in metrics:
            values = [r[metric] for r in rows if metric in r]
            if values:
                avg[metric] = float(np.mean(values))
        out.append(avg)
    return out
