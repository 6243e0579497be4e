"""Import lm-evaluation-harness runs: its per-sample logs become a surefast run.

``lm_eval ... --log_samples --output_path OUT`` (0.4.x's EvaluationTracker; checked on 0.4.13) writes::

    OUT/<model_name_sanitized>/results_<date_id>.json          config.model, config.model_args,
                                                               configs (per task), versions,
                                                               group_subtasks, lm_eval_version
    OUT/<model_name_sanitized>/samples_<task>_<date_id>.jsonl  one JSON line per (doc, filter)

A multiple-choice line holds ``doc_id``, ``doc`` (the dataset row), ``target`` (``str`` of
``doc_to_target``: an option index, an option's text, or a list for several right answers),
``arguments`` (``{"gen_args_i": {"arg_0": context, "arg_1": target_delimiter + option_i}}``),
``resps`` / ``filtered_resps`` (per option ``[loglik, is_greedy]``, both as *strings*), the
doc/prompt/target hashes and the task's metrics (``acc``, ``acc_norm``: 0 or 1).

Mapping. One store run (kind ``lmeval-import``). Each lm-eval task becomes one unit, part
``model|compression|task|lmeval``; the leaves of one group (``group_subtasks``, e.g. the 57
``mmlu_*`` tasks under ``mmlu``) become one unit named after the top group when they all have
the same number of options K, each leaf's name (without the group's prefix) being the items'
``group``. An item's logits ``[K]`` are lm-eval's per-option log-likelihoods, exactly what its
``acc`` takes the argmax of (``normalize``: divided by the option's length in characters, as
``acc_norm``; strategy ``lmeval_norm``); its uid is ``<lm-eval task>:<doc_id>``; the label
comes from ``target`` (checked against the logged ``acc``, which also gives the label of a
two-option task whose target is not an option, such as winogrande's). The rows are
:func:`surefast.conformal.evaluate` over K options with the protocol hash of
:func:`surefast.bench.runner.protocol`, computed from lm-eval's item hashes, which do not depend
on the model: a compressed model's import pairs with the dense one's.

Choices where lm-eval is silent: repeated ``doc_id`` lines with equal values (one per filter,
or a rerun appended) count once, differing ones are an error; tasks that are not multiple
choice, or have several right answers per item, are skipped with a note; anything malformed is
one :class:`~surefast.errors.SurefastError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surefast.bench.runner import BenchConfig, part_name, protocol
from surefast.bench.store import QUESTION_CHARS, Run, Store
from surefast.errors import SurefastError

_DEFAULTS = BenchConfig()
_TEXT_KEYS = ("question", "query", "ctx", "sentence", "goal", "premise", "input", "problem", "prompt", "text")
_HINT = "give the folder lm_eval --log_samples --output_path wrote (or one results_*.json in it)"


class _Skip(Exception):  # a task surefast cannot import (a note, not an error)
    pass


@dataclass(frozen=True)
class Sample:
    """One document of a multiple-choice task as lm-eval logged it."""

    task: str  # the lm-eval task that logged it (a leaf such as mmlu_anatomy)
    doc_id: int
    line: int
    label: int  # the right option's index
    logliks: tuple[float, ...]  # [K] log P(option | context), summed over the option's tokens
    chars: tuple[int, ...]  # [K] each option's length in characters (acc_norm's divisor)
    text: str  # the question's opening
    subject: str  # the doc's ``subject`` ("" if none)
    digest: str  # lm-eval's doc, prompt and target hashes: the item, not the model
    acc: float | None  # lm-eval's own acc (0 or 1) for it, when logged
    acc_norm: float | None = None


@dataclass(frozen=True)
class TaskLog:
    """One lm-eval task's samples file, parsed (samples by doc_id, repeats dropped)."""

    name: str
    path: Path
    k: int
    samples: tuple[Sample, ...]
    repeats: int = 0  # lines that repeated an earlier doc_id with equal values


@dataclass(frozen=True)
class Unit:
    """What becomes one store unit: an lm-eval task, or the same-K leaves of one group."""

    task: str
    leaves: tuple[TaskLog, ...]
    grouped: bool = False

    @property
    def k(self) -> int:
        return self.leaves[0].k

    @property
    def samples(self) -> list[Sample]:
        return [s for leaf in self.leaves for s in leaf.samples]

    def logits(self, normalize: bool = False) -> np.ndarray:
        x = np.array([s.logliks for s in self.samples], dtype=np.float64)  # [N, K]
        if normalize:
            x = x / np.maximum(np.array([s.chars for s in self.samples], dtype=np.float64), 1.0)
        return x

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)  # [N]

    def uids(self) -> list[str]:
        return [f"{s.task}:{s.doc_id}" for s in self.samples]

    def groups(self) -> list[str]:
        if not self.grouped:
            return [s.subject for s in self.samples]
        return [s.task.removeprefix(f"{self.task}_") for s in self.samples]

    def fingerprint(self) -> str:
        blob = json.dumps([[u, s.digest] for u, s in zip(self.uids(), self.samples, strict=True)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def lm_eval_acc(self, normalize: bool = False) -> float | None:
        """lm-eval's accuracy over the unit's items (``acc``; ``acc_norm`` with ``normalize``)."""
        values = [s.acc_norm if normalize else s.acc for s in self.samples]
        return None if any(v is None for v in values) else float(np.mean([v or 0.0 for v in values]))


@dataclass(frozen=True)
class LmevalRun:
    """One lm-eval run: its results JSON and the units its samples files make."""

    results: Path
    model: str  # the label rows get (--model, else model_args' pretrained=)
    backend: str  # lm-eval's --model (hf, vllm, ...)
    model_args: Any  # a dict (0.4.13) or the "k=v,k=v" string older 0.4 releases logged
    lm_eval_version: str
    units: tuple[Unit, ...]
    notes: tuple[str, ...] = ()  # one line per task not imported
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def model_fp(self) -> str:
        blob = json.dumps({"model": self.backend, "model_args": self.model_args}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_results(source: Path) -> Path:
    """The one ``results_*.json`` of ``source`` (that file, or the only one under that folder)."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise SurefastError(f"{source} does not exist", _HINT)
    found = sorted(source.rglob("results_*.json"))
    if not found:
        raise SurefastError(f"no results_*.json under {source}", _HINT)
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(source)) for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise SurefastError(f"{source} holds {len(found)} lm-eval runs ({names})", "give one results_*.json")
    return found[0]


def read_lmeval(source: Path, model: str | None = None) -> LmevalRun:
    """Parse the lm-eval run at ``source`` (a folder or its results JSON); no store is touched."""
    results_path = find_results(Path(source))
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SurefastError(f"{results_path} is unreadable ({exc})", _HINT) from None
    if not isinstance(results, dict):
        raise SurefastError(f"{results_path} is not an lm-eval results file (not a JSON object)", _HINT)
    date_id = results_path.stem.rpartition("_")[2]
    files = {
        p.name[len("samples_") : -len(f"_{date_id}.jsonl")]: p
        for p in sorted(results_path.parent.glob(f"samples_*_{date_id}.jsonl"))
    }
    if not files:
        raise SurefastError(
            f"no samples_*_{date_id}.jsonl beside {results_path}", "run lm_eval with --log_samples (per-item logs)"
        )
    configs = _obj(results.get("configs"))
    notes = [f"{t}: no samples file, not imported" for t in sorted(set(configs) - set(files))]
    logs: dict[str, TaskLog] = {}
    for task, path in files.items():
        config = _obj(configs.get(task))
        if config.get("output_type", "multiple_choice") != "multiple_choice":
            notes.append(f"{task}: skipped ({config['output_type']}; only multiple-choice tasks are imported)")
            continue
        try:
            logs[task] = read_samples(path, task, config)
        except _Skip as why:
            notes.append(f"{task}: skipped ({why})")
    units, group_notes = _units(logs, _obj(results.get("group_subtasks")))
    cfg = _obj(results.get("config"))
    args = cfg.get("model_args") or {}
    return LmevalRun(
        results=results_path,
        model=model or _model_label(args, results),
        backend=str(cfg.get("model") or ""),
        model_args=args,
        lm_eval_version=str(results.get("lm_eval_version") or "unknown"),
        units=tuple(units),
        notes=tuple(notes + group_notes),
        versions=dict(results.get("versions") or {}),
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_samples(path: Path, task: str, config: Mapping[str, Any] | None = None) -> TaskLog:
    """One ``samples_<task>_<date>.jsonl`` -> its samples sorted by doc_id.

    Raises SurefastError naming the file and line for anything malformed, ``_Skip`` for a task
    that is not single-answer multiple choice."""
    config = config or {}
    delimiter = str(config.get("target_delimiter", " "))
    metrics = {m.get("metric") for m in config.get("metric_list") or [] if isinstance(m, dict)}
    paired = "acc_mutual_info" in metrics  # K conditional then K unconditional log-likelihoods
    by_id: dict[int, Sample] = {}
    k = 0
    repeats = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    sample = _sample(raw, task, number, delimiter, paired)
                except SurefastError as exc:
                    raise SurefastError(f"{path} line {number}: {exc.message}", exc.hint) from None
                if k and len(sample.logliks) != k:
                    raise SurefastError(
                        f"{path} line {number}: {len(sample.logliks)} options, but earlier lines of {task} have {k}"
                    )
                k = len(sample.logliks)
                first = by_id.get(sample.doc_id)
                if first is None:
                    by_id[sample.doc_id] = sample
                elif (first.logliks, first.label) == (sample.logliks, sample.label):
                    repeats += 1
                else:
                    raise SurefastError(
                        f"{path} line {number}: doc_id {sample.doc_id} again (first on line {first.line}) "
                        "with other log-likelihoods or target",
                        "two runs appended to one file? import a file of one run",
                    )
    except OSError as exc:
        raise SurefastError(f"{path} is unreadable ({exc})") from None
    except UnicodeDecodeError:
        raise SurefastError(f"{path} is not UTF-8 text") from None
    if not by_id:
        raise SurefastError(f"{path} holds no samples", _HINT)
    return TaskLog(task, path, k, tuple(by_id[i] for i in sorted(by_id)), repeats)


def _sample(raw: str, task: str, line: int, delimiter: str, paired: bool) -> Sample:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise SurefastError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise SurefastError("not a JSON object")
    doc_id = obj.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
        raise SurefastError(f"doc_id {doc_id!r} is not a whole number")
    pairs = _arguments(obj.get("arguments"))  # [(context, continuation)] per request
    if any(not isinstance(cont, str) for _, cont in pairs):
        raise _Skip("not multiple choice: its requests are not (context, option) pairs")
    resps = obj.get("filtered_resps", obj.get("resps"))
    if not isinstance(resps, list) or not resps:
        raise SurefastError("no per-option log-likelihoods (filtered_resps / resps)")
    if len(resps) != len(pairs):
        raise SurefastError(f"{len(resps)} log-likelihoods for {len(pairs)} options")
    lls = [_loglik(r, i) for i, r in enumerate(resps)]
    if paired:
        lls, pairs = lls[: len(lls) // 2], pairs[: len(pairs) // 2]
    k = len(lls)
    if k < 2:
        raise _Skip(f"{k} option per item; conformal sets need at least 2")
    conts = [cont.removeprefix(delimiter) for _, cont in pairs]
    multiple_input = len(set(conts)) == 1 < len({c for c, _ in pairs})  # winogrande: the options are the contexts
    acc, acc_norm = _zero_one(obj.get("acc")), _zero_one(obj.get("acc_norm"))
    label = _label(obj.get("target"), None if multiple_input else conts, k, int(np.argmax(lls)), acc)
    doc = obj.get("doc")
    hashes = [obj.get(h) for h in ("doc_hash", "prompt_hash", "target_hash")]
    digest = (
        "".join(map(str, hashes)) if all(isinstance(h, str) for h in hashes) else _hash([doc, obj.get("target"), pairs])
    )
    return Sample(
        task=task,
        doc_id=doc_id,
        line=line,
        label=label,
        logliks=tuple(lls),
        chars=tuple(len(c) for c in conts),
        text=_question(doc, pairs[-1][0])[:QUESTION_CHARS],
        subject=str(doc["subject"]) if isinstance(doc, dict) and isinstance(doc.get("subject"), str) else "",
        digest=digest,
        acc=acc,
        acc_norm=acc_norm,
    )


def _zero_one(value: Any) -> float | None:
    """A logged 0/1 metric; None for anything else (a custom process_results may log a share)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1)
    return float(value) if ok else None


def _arguments(args: Any) -> list[tuple[Any, Any]]:
    """``{"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}`` (0.4.13) or ``[[ctx, cont], ...]``."""
    if isinstance(args, dict):
        args = [args[key] for key in sorted(args, key=_index)]
        args = [[a.get("arg_0"), a.get("arg_1")] if isinstance(a, dict) else a for a in args]
    if not isinstance(args, list) or not args or any(not isinstance(a, list | tuple) or len(a) < 2 for a in args):
        raise SurefastError("no arguments (the (context, option) pairs lm-eval scored)")
    return [(a[0], a[1]) for a in args]


def _index(key: str) -> int:
    tail = key.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _loglik(resp: Any, i: int) -> float:
    value = resp
    while isinstance(value, list | tuple) and value:  # [loglik, is_greedy], or [[loglik, is_greedy]] in resps
        value = value[0]
    try:
        out = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise SurefastError(f"option {i}'s log-likelihood {value!r} is not a finite number")
    return out


def _label(target: Any, choices: list[str] | None, k: int, pred: int, acc: float | None) -> int:
    """The right option's index from lm-eval's ``str(doc_to_target(doc))``, checked against its acc.

    ``choices``: the options' texts (None when they sit in the contexts, winogrande-style);
    ``pred``: the argmax option. A digit string is read as an index first (lm-eval's usual
    ``doc_to_target``), then as an option's text; the logged acc settles which, and gives the
    label of a two-option item whose target is neither."""
    text = target if isinstance(target, str) else json.dumps(target)
    candidates = []
    if text.strip().isascii() and text.strip().isdigit():
        candidates.append(int(text))
    if choices and text in choices:
        candidates.append(choices.index(text))
    if not candidates and text.startswith("["):
        raise _Skip("several right answers per item; a conformal label is one option")
    in_range = [c for c in candidates if c < k]
    if acc is not None:
        agree = [c for c in in_range if (c == pred) == (acc == 1.0)]
        if agree:
            return agree[0]
        if choices is None and not candidates and k == 2:  # right: the argmax; wrong: the other one
            return pred if acc == 1.0 else 1 - pred
        if in_range:
            raise SurefastError(f"target {text!r} disagrees with lm-eval's own acc ({acc:g}) for this item")
    if in_range:
        return in_range[0]
    if choices is None and not candidates:
        raise _Skip("the options sit in the contexts and the target names none of them (known only for 2 options)")
    if candidates:
        raise SurefastError(f"target {text!r} is out of range for {k} options")
    raise SurefastError(f"target {text!r} is neither an option's index nor an option's text")


def _question(doc: Any, context: Any) -> str:
    if isinstance(doc, dict):
        for key in _TEXT_KEYS:
            if isinstance(doc.get(key), str) and doc[key].strip():
                return str(doc[key]).strip()
    return str(context or "").rstrip().rpartition("\n\n")[2]  # the last block: few-shot demos come first


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _units(logs: Mapping[str, TaskLog], group_subtasks: Mapping[str, Any]) -> tuple[list[Unit], list[str]]:
    """Leaves under their top group when they share K, else each task on its own."""
    parent = {c: group for group, children in group_subtasks.items() if isinstance(children, list) for c in children}
    by_root: dict[str, list[TaskLog]] = {}
    for name, log in sorted(logs.items()):
        root = name
        seen = {root}
        while root in parent and parent[root] not in seen:
            root = parent[root]
            seen.add(root)
        by_root.setdefault(root, []).append(log)
    units, notes = [], []
    for root, leaves in sorted(by_root.items()):
        if len(leaves) == 1 and leaves[0].name == root:
            units.append(Unit(root, (leaves[0],)))
        elif len({leaf.k for leaf in leaves}) == 1:
            units.append(Unit(root, tuple(leaves), grouped=True))
        else:
            ks = ", ".join(f"{leaf.name} {leaf.k}" for leaf in leaves)
            notes.append(f"{root}: its tasks have different option counts ({ks}), so each is imported on its own")
            units += [Unit(leaf.name, (leaf,)) for leaf in leaves]
    return units, notes


def _model_label(args: Any, results: Mapping[str, Any]) -> str:
    if isinstance(args, str):
        args = dict(kv.partition("=")[::2] for kv in args.split(",") if kv)
    name = (args.get("pretrained") or args.get("model")) if isinstance(args, dict) else None
    if not name:
        return str(results.get("model_name") or (results.get("config") or {}).get("model") or "lm-eval")
    name = str(name)
    local = name.startswith(("/", ".", "~")) or Path(name).is_dir()
    return Path(name).name if local else name  # a hub id keeps its org: Qwen/Qwen2.5-0.5B


@dataclass(frozen=True)
class ImportConfig:
    """How imported items are analysed; defaults are ``bench run``'s (:class:`BenchConfig`)."""

    score_fns: tuple[str, ...] = _DEFAULTS.score_fns
    alphas: tuple[float, ...] = _DEFAULTS.alphas
    n_splits: int = _DEFAULTS.n_splits
    cal_fraction: float = _DEFAULTS.cal_fraction
    seed: int = _DEFAULTS.seed
    n_boot: int = _DEFAULTS.n_boot
    normalize: bool = False  # divide log-likelihoods by option length in characters (lm-eval's acc_norm)
    compression: str = ""  # the label pairing this model with a dense one's import ("" = dense)

    def __post_init__(self) -> None:
        self.bench()  # the same checks and messages as bench run's flags

    def bench(self) -> BenchConfig:
        return BenchConfig(
            score_fns=tuple(self.score_fns),
            alphas=tuple(self.alphas),
            n_splits=self.n_splits,
            cal_fraction=self.cal_fraction,
            seed=self.seed,
            n_boot=self.n_boot,
        )

    @property
    def strategy(self) -> str:
        return "lmeval_norm" if self.normalize else "lmeval"


@dataclass(frozen=True)
class UnitSummary:
    task: str
    n_items: int
    k: int
    accuracy: float
    lm_eval_acc: float | None
    leaves: int
    repeats: int


def import_lmeval(
    parsed: LmevalRun, store: Store, config: ImportConfig, *, command: str = "", run_id: str | None = None
) -> tuple[Run, list[UnitSummary]]:
    """Store ``parsed`` as one run: per unit its items, then its conformal rows."""
    from surefast import conformal
    from surefast.conformal.calibrate import min_calibration_size

    if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
        raise SurefastError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-'")
    if not parsed.units:
        raise SurefastError(f"{parsed.results}: no multiple-choice task to import ({'; '.join(parsed.notes)})")
    bench = config.bench()
    need = max(min_calibration_size(a) for a in bench.alphas)
    for unit in parsed.units:  # before the run exists: one task too small fails nothing half-way
        n_cal = int(np.floor(bench.cal_fraction * len(unit.samples) + 1e-9))
        if n_cal < need:
            raise SurefastError(
                f"{unit.task}: {len(unit.samples)} items leave {n_cal} for calibration; "
                f"alpha={min(bench.alphas):g} needs at least {need}",
                "import a task with more items (an lm_eval run without --limit) or use a larger --alphas",
            )
    compression = "" if config.compression == "dense" else config.compression
    meta = {
        "kind": "lmeval-import",
        "command": command,
        "source": str(parsed.results.resolve()),
        "lm_eval_version": parsed.lm_eval_version,
        "models": [parsed.model],
        "model": parsed.model,
        "lm_eval_model": parsed.backend,
        "model_args": parsed.model_args,
        "versions": parsed.versions,
        "config": asdict(config),
    }
    run = store.create_run(meta, run_id)
    out = []
    try:
        for unit in parsed.units:
            common = {"model": parsed.model, "compression": compression, "task": unit.task, "strategy": config.strategy}
            part = part_name(parsed.model, compression, unit.task, config.strategy)
            logits, labels = unit.logits(config.normalize), unit.labels()  # [N, K], [N]
            try:
                rows = conformal.evaluate(
                    logits,
                    labels,
                    from_logits=True,
                    score_fns=bench.score_fns,
                    alphas=bench.alphas,
                    n_splits=bench.n_splits,
                    cal_fraction=bench.cal_fraction,
                    seed=bench.seed,
                    n_boot=bench.n_boot,
                )
            except SurefastError as exc:
                raise SurefastError(f"{unit.task}: {exc.message}", exc.hint) from None
            fp = protocol(unit.uids(), unit.fingerprint(), bench)
            items = [
                {**common, "uid": uid, "label": int(y), "logits": [float(v) for v in row], "group": g, "text": s.text}
                for uid, y, row, g, s in zip(unit.uids(), labels, logits, unit.groups(), unit.samples, strict=True)
            ]
            run.write_items(part, [{**item, "protocol": fp} for item in items])
            model_cols = {"model_fp": parsed.model_fp, "compression_fp": parsed.model_fp if compression else "none"}
            # e_share / f_share count answers E "I don't know" and F "None of the above", which
            # only surefast's own six options have: an lm-eval task's fifth option is no abstention.
            rows = [row for row in rows if row["metric"] not in ("e_share", "f_share")]
            run.write_part(part, [{**common, **model_cols, **row, "protocol": fp} for row in rows])
            accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
            repeats = sum(leaf.repeats for leaf in unit.leaves)
            summary = UnitSummary(
                unit.task, len(labels), unit.k, accuracy, unit.lm_eval_acc(config.normalize), len(unit.leaves), repeats
            )
            out.append(summary)
    except Exception as exc:  # say so in run.json, as bench run does
        run.update_meta(status="failed", error=str(exc) if isinstance(exc, SurefastError) else repr(exc))
        raise
    run.update_meta(status="done", units=[asdict(u) for u in out], notes=list(parsed.notes))
    return run, out
