"""Study plans: models x compression configs (sweeps included) x tasks x strategies, from YAML.

Example (``examples/demo_study.yaml`` is the one ``make demo`` runs)::

    name: my-study
    models: [smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct]
    compressions:
      - dense
      - {label: gptq-w4a16, method: gptq, bits: 4, group_size: 128}
      - {label: rtn-w4a4, method: rtn, bits: 4, act_bits: 4}
    sweeps:                       # one compression per value, labelled <label>-<value*scale>
      - {label: wanda, method: wanda, param: sparsity, values: [0.1, 0.2, 0.3, 0.4, 0.5], scale: 100}
    tasks: all                    # or a list
    strategies: all
    n: 300
    score_fns: [lac, aps]
    alphas: [0.1]
    splits: 100
    bootstrap: 200                # item-bootstrap replicates behind the intervals; 0: none
    calibration: {n_samples: 32, seq_len: 256}
    deployment: true              # pack each quantized model after scoring: weight bytes, decode tok/s
    store: ../studies/my-study/results   # results store (default $SUREFAST_HOME/results; --store wins)
    scores: ../studies/my-study/scores   # score cache (default $SUREFAST_HOME/scores)
    acceptance: {draft: qwen2.5-coder-0.5b-instruct}   # SAGE acceptance per job (surefast.bench.acceptance)
    see_also: ../studies/findings/REPORT.md   # linked from the top of the report (a fuller study)
    # also: seed, shots, chat, data, dtype (auto, bf16, fp16, fp32), batch_tokens, skip_malformed

``dtype: auto`` (the default) scores in the faster of bf16 and fp32 on the machine that runs the
job, measured once per machine (:mod:`surefast.models.dtype_choice`); the run records the dtype
each model got and keeps it when the study is resumed.

``store`` and ``scores`` are folders relative to the plan file: a study kept inside a
repository (``studies/<name>/``) resumes on any clone where the last machine stopped. They
are not part of the run id (the same plan in another place continues the same run).

Sweep labels end in their level (``wanda-30``), which is how reports find sweeps. The run id is
derived from the plan's content, so running the same plan again continues the same run and
recomputes nothing that finished. :func:`plan_from_dict` checks the whole plan (every key, every
compression's config, the calibration and the model specs) before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from surefast.bench.acceptance import AcceptanceConfig, acceptance_config
from surefast.bench.runner import STRATEGIES, BenchConfig
from surefast.data.items import TASKS
from surefast.errors import SurefastError
from surefast.models import parse_spec
from surefast.registry import suggestion

DENSE = "dense"
DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class CompressionSpec:
    """One compression of a study: a label (table and sweep name) and the method's options."""

    label: str
    method: str | None  # None = dense
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def is_dense(self) -> bool:
        return self.method is None

    def config(self) -> Any:
        from surefast.compress import make_config

        assert self.method is not None
        return make_config(self.method, **dict(self.options))


@dataclass(frozen=True)
class StudyPlan:
    name: str
    models: tuple[str, ...]
    compressions: tuple[CompressionSpec, ...]
    bench: BenchConfig
    calibration: tuple[tuple[str, Any], ...] = ()
    dtype: str = "auto"  # auto: the faster of bf16 and fp32 for scoring here (surefast.models.dtype_choice)
    source: str = ""  # the file it came from, for messages
    deployment: bool = True  # measure each job's weight bytes and decode speed (packed where it packs)
    store: str | None = None  # results store folder (absolute; None: $SUREFAST_HOME/results)
    scores: str | None = None  # score cache folder (absolute; None: $SUREFAST_HOME/scores)
    acceptance: AcceptanceConfig | None = None  # SAGE acceptance of each job's model with a dense draft
    see_also: str | None = None  # a fuller study's REPORT.md (absolute), linked from the top of the report

    @property
    def run_id(self) -> str:
        """Stable across runs of the same plan content: a restarted study continues its run."""
        blob = json.dumps(
            {
                "models": self.models,
                "compressions": [asdict(c) for c in self.compressions],
                "bench": asdict(self.bench),
                "calibration": self.calibration,
                "dtype": self.dtype,
            },
            sort_keys=True,
            default=str,
        )
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)
        return f"study-{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    def jobs(self) -> list[tuple[str, CompressionSpec]]:
        """One job per (model, compression): compress once, then score every task and strategy."""
        return [(m, c) for m in self.models for c in self.compressions]


KNOWN_KEYS = (
    "name",
    "models",
    "compressions",
    "sweeps",
    "tasks",
    "strategies",
    "n",
    "seed",
    "shots",
    "chat",
    "score_fns",
    "alphas",
    "splits",
    "bootstrap",
    "data",
    "calibration",
    "dtype",
    "deployment",
    "batch_tokens",
    "skip_malformed",
    "store",
    "scores",
    "acceptance",
    "see_also",
)


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if source else key


def _get(data: dict[str, Any], key: str, default: Any) -> Any:
    """``key: `` with no value (YAML null) means the default, like leaving the key out."""
    value = data.get(key)
    return default if value is None else value


def _list(value: Any, allowed: tuple[str, ...], key: str, source: str) -> tuple[str, ...]:
    if value in (None, "all"):
        return allowed
    if isinstance(value, str):
        items = tuple(v.strip() for v in value.split(",") if v.strip())
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = tuple(value)
    else:
        raise SurefastError(
            f"{_where(source, key)}: expected all, a name, a comma list or a list of names, got {value!r}",
            f"choose from {', '.join(allowed)}",
        )
    if not items:
        raise SurefastError(f"{_where(source, key)}: give at least one", f"choose from {', '.join(allowed)} or all")
    for item in items:
        if item not in allowed:
            raise SurefastError(f"{_where(source, key)}: unknown value {item!r}", f"choose from {', '.join(allowed)}")
    return items


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    """A YAML string is one name or a comma list ("lac" is not the scores l, a and c)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise SurefastError(f"{_where(source, key)}: expected a name, a comma list or a list of names, got {value!r}")


def _numbers(value: Any, key: str, source: str) -> tuple[Any, ...]:
    """A number or a list; YAML 1.1 reads ``1e-1`` (no dot) as a string, so numeric strings count.
    What is not a number is passed on for BenchConfig to refuse by name."""
    if isinstance(value, list):
        return tuple(_number(v) for v in value)
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return (_number(value),)
    raise SurefastError(f"{_where(source, key)}: expected a number or a list of numbers, got {value!r}")


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _missing(path: str) -> bool:
    """A local path that does not exist (``stdlib``, ``pypi`` and ``hf:...`` are not paths)."""
    return path not in ("stdlib", "pypi") and not path.startswith("hf:") and not Path(path).expanduser().exists()


def _label(entry: dict[str, Any], where: str) -> str | None:
    label = entry.get("label")
    if label is not None and not (isinstance(label, str) or _is_number(label)):
        raise SurefastError(f"{where}: label: expected text, got {label!r}")
    return None if label is None else str(label)


def _checked(spec: CompressionSpec, where: str) -> CompressionSpec:
    """Build the method's config now, so an unknown method or option (or a value out of range)
    stops the plan before any job runs, not after the dense job has."""
    try:
        spec.config()
    except SurefastError as exc:
        raise SurefastError(f"{where}: {exc.message}", exc.hint) from None
    return spec


def _compression(entry: Any, source: str, index: int) -> CompressionSpec:
    where = _where(source, f"compressions[{index}]")
    if entry == DENSE:
        return CompressionSpec(DENSE, None)
    if not isinstance(entry, dict):
        raise SurefastError(f"{where}: expected 'dense' or a mapping with 'method', got {entry!r}")
    method = entry.get("method")
    if method is None:  # was silently the dense model, options ignored
        raise SurefastError(f"{where}: no method given", "add method: rtn, gptq, wanda, ... or write dense")
    if method == DENSE:
        extra = sorted(k for k in entry if k != "method" and not (k == "label" and entry[k] in (None, DENSE)))
        if extra:
            raise SurefastError(f"{where}: the dense model takes no options or label ({', '.join(extra)})")
        return CompressionSpec(DENSE, None)
    if not isinstance(method, str):
        raise SurefastError(f"{where}: method: expected a method name, got {method!r}")
    options = {k: v for k, v in entry.items() if k not in ("label", "method")}
    label = _label(entry, where) or "-".join([method, *(f"{k}{v}" for k, v in sorted(options.items()))])
    return _checked(CompressionSpec(label, method, tuple(sorted(options.items()))), where)


def _sweep(entry: Any, source: str, index: int) -> list[CompressionSpec]:
    where = _where(source, f"sweeps[{index}]")
    if not isinstance(entry, dict) or not {"method", "param", "values"} <= set(entry):
        raise SurefastError(f"{where}: a sweep needs method, param and values")
    values, scale, param = entry["values"], entry.get("scale", 1), entry["param"]
    if not isinstance(values, list) or not values or not all(_is_number(v) for v in values):
        raise SurefastError(f"{where}: values: expected a non-empty list of numbers, got {values!r}")
    if not _is_number(scale):
        raise SurefastError(f"{where}: scale: expected a number, got {scale!r}")
    if not isinstance(param, str) or not isinstance(entry["method"], str):
        raise SurefastError(f"{where}: method and param are names, got {entry['method']!r} and {param!r}")
    label = _label(entry, where) or entry["method"]
    fixed = {k: v for k, v in entry.items() if k not in ("label", "method", "param", "values", "scale")}
    out = []
    for value in values:
        level = value * scale
        if float(value) == 0:
            continue  # level 0 is the dense model, already in every study
        options = {**fixed, param: value}
        spec = CompressionSpec(f"{label}-{level:g}", entry["method"], tuple(sorted(options.items())))
        out.append(_checked(spec, f"{where} ({param}={value})"))
    return out


def _calibration(value: Any, source: str) -> tuple[tuple[str, Any], ...]:
    """The calibration keys as given (the run id hashes them), checked against CalibrationConfig."""
    import dataclasses

    from surefast.compress.calibration_data import CalibrationConfig

    where = _where(source, "calibration")
    if not isinstance(value, dict):
        raise SurefastError(f"{where}: expected a mapping such as {{n_samples: 32, seq_len: 256}}, got {value!r}")
    fields = sorted(f.name for f in dataclasses.fields(CalibrationConfig))
    for key in value:
        if key not in fields:
            raise SurefastError(
                f"{where}: unknown key {key!r}", suggestion(str(key), fields, otherwise=f"keys: {', '.join(fields)}")
            )
    try:
        config = CalibrationConfig(**value)
    except SurefastError as exc:
        raise SurefastError(f"{where}: {exc.message}", exc.hint) from None
    src = config.source
    if _missing(src):
        raise SurefastError(
            f"{where}: source: no such file or folder: {src}",
            "use stdlib (the offline default), a .txt/.jsonl path or folder, or hf:NAME",
        )
    return tuple(sorted(value.items()))


def plan_from_dict(data: dict[str, Any], source: str = "") -> StudyPlan:
    """Read and check the whole plan: every key's type and range, every compression's config,
    the calibration and the model specs, so a bad plan stops here in one line naming the key,
    before any model loads or any job runs."""
    for key in data:
        if key not in KNOWN_KEYS:
            known = sorted(KNOWN_KEYS)
            hint = suggestion(str(key), known, otherwise=f"known keys: {', '.join(known)}")
            raise SurefastError(f"{_where(source, key)}: unknown key", hint)
    models = data.get("models")
    if not models or not isinstance(models, list):
        raise SurefastError(f"{_where(source, 'models')}: give a non-empty list of model specs")
    for i, model in enumerate(models):
        if not isinstance(model, str) or not model.strip():
            raise SurefastError(
                f"{_where(source, f'models[{i}]')}: expected a model spec such as smollm2-135m-instruct, got {model!r}"
            )
    if len(set(models)) != len(models):  # one job per (model, compression): twice would share its parts
        dup = sorted({m for m in models if models.count(m) > 1})
        raise SurefastError(f"{_where(source, 'models')}: listed twice: {', '.join(dup)}")
    entries, sweeps = _get(data, "compressions", [DENSE]), _get(data, "sweeps", [])
    for key, value in (("compressions", entries), ("sweeps", sweeps)):
        if not isinstance(value, list):
            raise SurefastError(f"{_where(source, key)}: expected a list, got {value!r}")
    comps = [_compression(e, source, i) for i, e in enumerate(entries or [DENSE])]
    for i, sweep in enumerate(sweeps):
        comps += _sweep(sweep, source, i)
    if not any(c.is_dense for c in comps):
        comps.insert(0, CompressionSpec(DENSE, None))  # deltas need the baseline
    labels = [c.label for c in comps]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise SurefastError(f"{_where(source, 'compressions')}: duplicate labels {dup}", "give each a distinct label")
    defaults = BenchConfig()
    fields: dict[str, Any] = dict(
        tasks=_list(data.get("tasks"), TASKS, "tasks", source),
        strategies=_list(data.get("strategies"), STRATEGIES, "strategies", source),
        n=_get(data, "n", defaults.n),
        seed=_get(data, "seed", defaults.seed),
        n_shots=data.get("shots"),
        chat=data.get("chat"),
        score_fns=_names(_get(data, "score_fns", list(defaults.score_fns)), "score_fns", source),
        alphas=_numbers(_get(data, "alphas", list(defaults.alphas)), "alphas", source),
        n_splits=_get(data, "splits", defaults.n_splits),
        n_boot=_get(data, "bootstrap", defaults.n_boot),
        data=data.get("data"),
        batch_tokens=_get(data, "batch_tokens", defaults.batch_tokens),
        skip_malformed=_get(data, "skip_malformed", defaults.skip_malformed),
    )
    try:  # BenchConfig checks the types and ranges; its messages start with the plan key
        bench = BenchConfig(**fields)
    except SurefastError as exc:
        raise SurefastError(_where(source, exc.message), exc.hint) from None
    if bench.data and _missing(bench.data):
        raise SurefastError(
            f"{_where(source, 'data')}: no such file or folder: {bench.data}",
            "a data folder in the documented layout (docs/tasks.md)",
        )
    calibration = _calibration(_get(data, "calibration", {}), source)
    dtype = _get(data, "dtype", "auto")
    if dtype not in DTYPES:
        raise SurefastError(f"{_where(source, 'dtype')}: unknown dtype {dtype!r}", f"choose from {', '.join(DTYPES)}")
    deployment = _get(data, "deployment", True)
    if not isinstance(deployment, bool):
        raise SurefastError(f"{_where(source, 'deployment')}: expected true or false, got {deployment!r}")
    name = data.get("name")
    if name is not None and not (isinstance(name, str) or _is_number(name)):
        raise SurefastError(f"{_where(source, 'name')}: expected text, got {name!r}")
    for i, model in enumerate(models):  # last: a spec error reads best once the rest is known good
        try:
            parse_spec(model)
        except SurefastError as exc:
            raise SurefastError(f"{_where(source, f'models[{i}]')}: {exc.message}", exc.hint) from None
    store, scores = (_folder(data.get(key), key, source) for key in ("store", "scores"))
    acceptance = acceptance_config(data.get("acceptance"), _where(source, "acceptance"))
    if acceptance is not None:
        try:
            parse_spec(acceptance.draft)
        except SurefastError as exc:
            raise SurefastError(f"{_where(source, 'acceptance')}: draft: {exc.message}", exc.hint) from None
    see_also = data.get("see_also")
    if see_also is not None:
        if not isinstance(see_also, str) or not see_also.strip():
            raise SurefastError(f"{_where(source, 'see_also')}: expected a file path, got {see_also!r}")
        path = Path(see_also).expanduser()
        see_also = str((Path(source).resolve().parent / path).resolve() if not path.is_absolute() and source else path)
    name = str(name or (Path(source).stem if source else "study"))
    return StudyPlan(
        name,
        tuple(models),
        tuple(comps),
        bench,
        calibration,
        dtype,
        source,
        deployment,
        store,
        scores,
        acceptance,
        see_also,
    )


def _folder(value: Any, key: str, source: str) -> str | None:
    """A folder key, relative to the plan file's folder (to the working directory without a file)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SurefastError(f"{_where(source, key)}: expected a folder path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute() and source:
        path = Path(source).resolve().parent / path
    if path.exists() and not path.is_dir():
        raise SurefastError(f"{_where(source, key)}: not a folder: {path}")
    return str(path.resolve())


def load_plan(path: Path | str, overrides: dict[str, Any] | None = None) -> StudyPlan:
    """Read a YAML plan; ``overrides`` (e.g. from CLI flags) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise SurefastError(f"study plan not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SurefastError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise SurefastError(f"{path}: a study plan is a mapping of keys (models, compressions, ...)")
    return plan_from_dict({**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}, str(path))


__all__ = ["DENSE", "CompressionSpec", "StudyPlan", "load_plan", "plan_from_dict"]
