"""One entry point: ``load_task(task, TaskConfig(...)) -> TaskData`` (items, demos, fingerprint, stats).

Steps: resolve the source; read and validate every record (a malformed one is an error naming
its file and line, or skipped and counted with ``skip_malformed``; junk rows are dropped and
counted); pick the demos (fixed per task, see :func:`surefast.data.sampling.demo_indices`); sample
N items from the rest (nested by seed); build six options per item: the four content options
shuffled by seed, then E = "I don't know" and F = "None of the above".
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from surefast.data import cosmosqa, halueval, hellaswag, mmlu
from surefast.data.base import Malformed, Raw, ResolvedSource, TaskSpec
from surefast.data.items import IDK, LETTERS, NOTA, TASKS, MCItem
from surefast.data.sampling import demo_indices, permutation, pick_others, place_label, sample_indices
from surefast.data.sources import resolve
from surefast.errors import SurefastError
from surefast.registry import Registry

DATA_VERSION = "1"  # bump when item construction changes: every data fingerprint changes with it
DEFAULT_N = 2000  # items per task, as in the reference protocol
MAX_EXAMPLES = 5  # malformed rows quoted in LoadStats

TASK_SPECS: Registry[TaskSpec] = Registry("task", cutoff=0.5)  # task names are short: a looser suggestion
for _spec in (mmlu.SPEC, cosmosqa.SPEC, hellaswag.SPEC, halueval.DIALOGUE, halueval.SUMMARIZATION):
    TASK_SPECS.register(_spec.name, _spec)
assert tuple(TASK_SPECS) == TASKS  # items.TASKS: the names, for modules that must not import the loaders

_NOTA_LIKE = re.compile(r"^\s*none of the (above|others|these|previous)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TaskConfig:
    """Which items of a task to load.

    ``n``: items to sample (None: all but the demos). ``seed``: sampling and option shuffling.
    ``n_demos``: few-shot demonstrations kept apart from the items; None means the task's
    default, as in the reference benchmark (5; HaluEval dialogue 3, summarization 1, whose
    records are long). ``skip_malformed``: skip and count bad rows instead of stopping at the
    first. ``source``: see :mod:`surefast.data.sources` (None: find or fetch one).
    """

    n: int | None = DEFAULT_N
    seed: int = 0
    n_demos: int | None = None
    skip_malformed: bool = False
    source: str | None = None

    def __post_init__(self) -> None:
        # not numbers.Real: "x" < 1 would be a TypeError, not a one-line SurefastError
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, numbers.Real) or self.n < 1):
            raise SurefastError(f"n must be a positive number of items, got {self.n!r}", "or None for all")
        if self.n_demos is not None and (not isinstance(self.n_demos, numbers.Real) or self.n_demos < 0):
            raise SurefastError(f"n_demos must be >= 0, got {self.n_demos!r}", "0: zero-shot; None: the task's default")


@dataclass(frozen=True)
class LoadStats:
    rows_read: int  # records in the source
    malformed_skipped: int  # bad records skipped (only with skip_malformed)
    junk_dropped: int  # rows that are not data (MMLU's stray header rows)
    available: int  # valid records: demos + the pool items are sampled from
    malformed_examples: tuple[str, ...] = ()  # the first few, "file:line: reason"


@dataclass(frozen=True)
class TaskData:
    """The loaded task. ``items`` and ``demos`` never share a uid; ``fingerprint`` changes iff they change."""

    task: str
    config: TaskConfig
    items: list[MCItem]
    demos: list[MCItem]
    fingerprint: str  # 16 hex chars over loader version and every item's and demo's content
    stats: LoadStats
    source: str  # what was read: an absolute path or a hub id with config/split
    source_kind: str  # "file", "hub" or "pypi"
    source_identity: dict[str, str]  # file sha256, or hub id + revision + dataset fingerprint

    def record(self) -> dict[str, Any]:
        """A JSON-able summary for results and logs (what was sampled from what, and how)."""
        return {
            "task": self.task,
            "role": TASK_SPECS[self.task].role,
            "loader_version": DATA_VERSION,
            "config": asdict(self.config),
            "source": self.source,
            "source_kind": self.source_kind,
            "source_identity": self.source_identity,
            "fingerprint": self.fingerprint,
            "stats": asdict(self.stats),
            "n_items": len(self.items),
            "demo_uids": [d.uid for d in self.demos],
        }


def get_spec(task: str) -> TaskSpec:
    """The spec of ``task``; an unknown name raises SurefastError with a suggestion."""
    return TASK_SPECS.get(task)


def load_task(task: str, config: TaskConfig | None = None) -> TaskData:
    """Load ``task`` (one of :data:`TASKS`): N sampled items and the fixed demos, as six-option MCItems."""
    spec = get_spec(task)
    config = config or TaskConfig()
    source = resolve(spec, config.source)
    raws, stats = _cached_raws(spec, source, config.skip_malformed)
    uids = [f"{spec.name}-{r.index}" for r in raws]
    n_demos = spec.default_demos if config.n_demos is None else config.n_demos
    if len(raws) <= n_demos:
        raise SurefastError(
            f"{source.label} has {len(raws)} valid {spec.name} rows, too few for {n_demos} demos and any items"
        )
    demo_pos = demo_indices(uids, [r.size for r in raws], n_demos, spec.name)
    demo_set = set(demo_pos)
    rest = [i for i in range(len(raws)) if i not in demo_set]
    if config.n is not None and config.n > len(rest):
        raise SurefastError(
            f"asked for n={config.n} {spec.name} items, but {source.label} has {len(rest)} after {n_demos} demos",
            f"pass n <= {len(rest)} (--n {len(rest)}), or a larger source",
        )
    order = sample_indices([uids[i] for i in rest], config.n, spec.name, config.seed)
    builder = _Builder(spec, raws, uids, demo_set)
    demos = [builder.item(i, permutation(4, "demo-shuffle", spec.name, uids[i]), k) for k, i in enumerate(demo_pos)]
    items = [builder.item(rest[j], permutation(4, "shuffle", spec.name, config.seed, uids[rest[j]])) for j in order]
    return TaskData(
        spec.name,
        config,
        items,
        demos,
        fingerprint(spec.name, items, demos),
        stats,
        source.label,
        source.kind,
        dict(source.identity),
    )


_RAW_CACHE: OrderedDict[tuple[Any, ...], tuple[list[Raw], LoadStats]] = OrderedDict()
_RAW_CACHE_SIZE = len(TASKS)  # a CLI run loads each task a few times (prompt display, scoring): parse once


def _cached_raws(spec: TaskSpec, source: ResolvedSource, skip_malformed: bool) -> tuple[list[Raw], LoadStats]:
    """:func:`read_raws`, remembered per (task, source content, skip) for this process."""
    key = (spec.name, source.kind, source.label, tuple(sorted(source.identity.items())), skip_malformed)
    if key in _RAW_CACHE:
        _RAW_CACHE.move_to_end(key)
        return _RAW_CACHE[key]
    result = read_raws(spec, source, skip_malformed)
    if source.identity.get("sha256") or source.identity.get("dataset_fingerprint"):  # only content-identified sources
        _RAW_CACHE[key] = result
        while len(_RAW_CACHE) > _RAW_CACHE_SIZE:
            _RAW_CACHE.popitem(last=False)
    return result


def read_raws(spec: TaskSpec, source: ResolvedSource, skip_malformed: bool) -> tuple[list[Raw], LoadStats]:
    """Every valid record of ``source``; malformed ones raise (or are counted), junk is counted."""
    raws: list[Raw] = []
    read = malformed = junk = 0
    examples: list[str] = []
    for record in source.records():
        read += 1
        try:
            if record.error is not None:
                raise Malformed(record.error)
            raw = spec.parse_record(record)
        except Malformed as exc:
            if not skip_malformed:
                raise SurefastError(
                    f"malformed {spec.name} row at {record.where}: {exc}",
                    "fix or delete that row, or skip and count bad rows: --skip-malformed (bench run, bench prompt), "
                    "skip_malformed: true (study plan), TaskConfig(skip_malformed=True)",
                ) from exc
            malformed += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{record.where}: {exc}")
            continue
        if raw is None:
            junk += 1
        else:
            raws.append(raw)
    if not raws:
        raise SurefastError(
            f"no valid {spec.name} rows in {source.label} ({read} read, {malformed} malformed)",
            "is this the right file for the task?",
        )
    return raws, LoadStats(read, malformed, junk, len(raws), tuple(examples))


class _Builder:
    """Turns a Raw into an MCItem: completes HaluEval's options, applies a permutation, adds E and F."""

    def __init__(self, spec: TaskSpec, raws: Sequence[Raw], uids: Sequence[str], demos: set[int]) -> None:
        self.spec, self.raws, self.uids, self.demos = spec, raws, uids, demos

    def item(self, i: int, perm: tuple[int, ...], demo_number: int | None = None) -> MCItem:
        raw, uid = self.raws[i], self.uids[i]
        choices, meta = raw.choices, dict(raw.meta)
        if self.spec.distractors:
            others = self._distractors(i)
            choices = choices + tuple(self.raws[j].choices[0] for j in others)
            meta["distractors"] = ",".join(self.uids[j] for j in others)
        if len(choices) != 4:
            raise AssertionError(f"{uid}: {len(choices)} content options")
        if demo_number is not None:  # demos rotate their answer over A-D: no letter bias in the prefix
            perm = place_label(perm, raw.label, demo_number % 4)
        options = tuple(choices[p] for p in perm)
        label = perm.index(raw.label)
        meta["order"] = ",".join(str(p) for p in perm)
        if self.spec.distractors:
            meta["hallucinated"] = LETTERS[perm.index(1)]
        nota = [LETTERS[k] for k, text in enumerate(options) if _NOTA_LIKE.match(text)]
        if nota:
            meta["nota_option"] = ",".join(nota)
        six = (options[0], options[1], options[2], options[3], IDK, NOTA)
        return MCItem(self.spec.name, uid, raw.context, raw.question, six, label, meta)

    def _distractors(self, i: int) -> list[int]:
        """Right answers of other records (fixed per item, never a demo): none may repeat an own answer."""
        own = self.raws[i].choices

        def accept(j: int, chosen: list[int]) -> bool:
            if j == i or j in self.demos:
                return False
            text = self.raws[j].choices[0]
            taken = [*own, *(self.raws[c].choices[0] for c in chosen)]
            return not any(halueval.same_text(text, t) for t in taken)

        return pick_others(len(self.raws), self.spec.distractors, accept, "distractor", self.spec.name, self.uids[i])


def fingerprint(task: str, items: Sequence[MCItem], demos: Sequence[MCItem]) -> str:
    """16 hex chars over what the model is shown: same fingerprint, same items, whatever the file container."""
    digest = hashlib.sha256(f"surefast-data-v{DATA_VERSION}\x1f{task}".encode())
    for kind, group in (("demo", demos), ("item", items)):
        for it in group:
            digest.update(json.dumps([kind, it.uid, it.context, it.question, it.options, it.label]).encode())
    return digest.hexdigest()[:16]
