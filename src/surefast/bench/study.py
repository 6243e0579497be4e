"""Run a study plan: one job per (model, compression), local (sequential) or on a Ray cluster.

A job loads the model, compresses it once, scores every (task, strategy) unit and stores each
unit's rows as one atomic part of the study's run. The run id comes from the plan's content,
so a study killed at any moment (even ``kill -9``) and started again skips every finished
part (a job whose parts are all stored is not even loaded), and scored logits of a half-done
unit come back from the scoring cache. Runs write only their own files, so several processes
(or Ray workers) can share one store.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from surefast.atomic import remove_stale_tmp
from surefast.bench.acceptance import AcceptanceConfig
from surefast.bench.plan import CompressionSpec, StudyPlan
from surefast.bench.runner import UnitProgress, part_name, run_bench
from surefast.bench.store import Run, Store
from surefast.errors import SurefastError

_log = logging.getLogger(__name__)

JobProgress = Callable[[str], None]


@dataclass(frozen=True)
class JobOutcome:
    model: str
    compression: str
    skipped: bool
    seconds: float
    compression_seconds: float = 0.0
    params: int = 0
    worker: str = ""  # host:pid that ran the job (a Ray worker, or this process)
    started: str = ""  # local time the job started, ISO 8601
    threads: int = 0  # torch's intra-op threads
    cpu: str = ""  # the CPU model and torch's capability (surefast.machine.cpu_facts)
    other_cores: float | None = None  # CPU other processes used meanwhile, in cores (surefast.machine.OtherLoad)


def job_done(run: Run, plan: StudyPlan, model: str, comp: CompressionSpec) -> bool:
    """Every unit stored, and the SAGE acceptance recorded when the plan asks for it (added to a
    finished plan, it makes each job load and compress its model once more, scoring nothing)."""
    parts = all(
        run.has_part(part_name(model, comp.label, t, s)) for t in plan.bench.tasks for s in plan.bench.strategies
    )
    if not parts or plan.acceptance is None:
        return parts
    return f"{model}|{comp.label}" in run.read_meta().get("acceptance", {})


def open_run(store: Store, plan: StudyPlan, command: str) -> Run:
    """The study's run, created on first use and reused when the same plan runs again (also by
    another process at the same moment: the check and the creation happen under the run's lock).

    An unreadable ``run.json`` (truncated, garbled) is rebuilt from the plan, which is all it
    was made from; the parts are kept, and finished jobs are still skipped. What finished jobs
    recorded there (model sizes, job timings) is lost; the rebuild is logged as a warning."""
    run = Run(store.root, plan.run_id)
    meta = {
        "kind": "study",
        "command": command,
        "plan": plan.source,
        "name": plan.name,
        "models": list(plan.models),
        "compressions": [asdict(c) for c in plan.compressions],
        "config": asdict(plan.bench),
        "model_params": {},
    }
    with run.locked():
        remove_stale_tmp(run.folder)  # left by a kill -9 mid-write
        if not (run.folder / "run.json").is_file():
            return store.create_run(meta, run_id=plan.run_id)
        try:
            run.read_meta()
        except SurefastError as exc:
            _log.warning("%s: rebuilt it from the plan; the %d stored parts are kept", exc.message, len(run.parts()))
            return store.create_run({**meta, "rebuilt": time.time()}, run_id=plan.run_id, replace=True)
        run.update_meta(status="running", resumed=time.time())
        return run


def run_job(
    plan: StudyPlan,
    store_root: str,
    model: str,
    comp: CompressionSpec,
    progress: UnitProgress | None = None,
    status: JobProgress | None = None,
) -> JobOutcome:
    """Compress ``model`` with ``comp`` and score every unit not yet stored. Pure function of its
    arguments (takes the store by path) so a Ray worker can run it as is."""
    from surefast.machine import OtherLoad, cpu_facts
    from surefast.models import load_model
    from surefast.models.load import dtype_name

    run = Run(Store(store_root).root, plan.run_id)
    if job_done(run, plan, model, comp):
        return JobOutcome(model, comp.label, True, 0.0)
    start, started, others = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), OtherLoad()
    if status:
        status(f"{model}: loading")
    # dtype auto: the dtype this run first chose for the model, so a resumed run (or another
    # worker) never mixes bf16 and fp32 rows of one model
    dtype = run.read_meta().get("dtypes", {}).get(model, plan.dtype) if plan.dtype == "auto" else plan.dtype
    loaded = load_model(model, dtype=dtype, work="scoring")
    params = sum(p.numel() for p in loaded.model.parameters())
    # Recorded now, not when the job ends: a job killed after its last part is stored is never
    # loaded again, and the scale analysis needs every model's size.
    with run.editing_meta() as meta:
        meta.setdefault("model_params", {})[model] = params
        if plan.dtype == "auto":
            meta.setdefault("dtypes", {}).setdefault(model, dtype_name(loaded.dtype))
    comp_fp, comp_seconds, config = "none", 0.0, None
    if not comp.is_dense:
        from surefast.compress import CalibrationConfig, compress_

        if status:
            status(f"{model}: compressing with {comp.label}")
        config = comp.config()
        result = compress_(
            loaded.model,
            config,
            CalibrationConfig(**dict(plan.calibration)),
            tokenizer=loaded.tokenizer,
            base_fingerprint=loaded.fingerprint,
        )
        comp_fp, comp_seconds = result.fingerprint, result.seconds
    if status:
        status(f"{model} / {comp.label}: scoring")
    run_bench(
        loaded,
        plan.bench,
        run,
        model_name=model,
        compression="" if comp.is_dense else comp.label,
        compression_fp=comp_fp,
        progress=progress,
        scores_dir=plan.scores,
    )
    if plan.acceptance is not None:  # before deployment: packing changes the model
        _acceptance(run, loaded, f"{model}|{comp.label}", plan.acceptance, dtype, status)
    if plan.scores is not None:  # a study's own cache, kept in git: one shard per unit
        from surefast.scoring.cache import compact

        for folder in Path(plan.scores).glob("*-*"):
            compact(folder)
    if plan.deployment:
        _deployment(run, loaded, f"{model}|{comp.label}", config, status)
    del loaded
    gc.collect()  # one model in memory at a time
    worker = f"{socket.gethostname()}:{os.getpid()}"
    facts = cpu_facts()
    return JobOutcome(
        model,
        comp.label,
        False,
        time.perf_counter() - start,
        comp_seconds,
        params,
        worker,
        started,
        int(facts["threads"]),
        f"{facts['cpu_model']} ({facts['cpu_capability']})",
        others.share(),
    )


def run_study_local(
    plan: StudyPlan,
    store: Store,
    command: str,
    progress: UnitProgress | None = None,
    status: JobProgress | None = None,
    on_job: Callable[[JobOutcome], None] | None = None,
) -> Run:
    run = open_run(store, plan, command)
    for model, comp in plan.jobs():
        outcome = run_job(plan, str(store.root), model, comp, progress, status)
        _record(run, outcome)
        if on_job:
            on_job(outcome)
    run.update_meta(status="done", finished=time.time())
    return run


def run_study_ray(
    plan: StudyPlan,
    store: Store,
    command: str,
    address: str | None = None,
    gpus_per_job: float = 0.0,
    on_job: Callable[[JobOutcome], None] | None = None,
) -> Run:
    """Fan the jobs out over a Ray cluster (``pip install surefast[cluster]``); results land in
    the same store, which every worker must reach at the same path (a shared filesystem)."""
    try:
        import ray
    except ImportError as exc:
        from surefast.errors import SurefastError

        raise SurefastError("--executor ray needs Ray", "pip install 'surefast[cluster]'") from exc
    run = open_run(store, plan, command)
    todo = []
    for model, comp in plan.jobs():
        if not job_done(run, plan, model, comp):
            todo.append((model, comp))
            continue
        skipped = JobOutcome(model, comp.label, True, 0.0)
        _record(run, skipped)
        if on_job:
            on_job(skipped)
    pending = []
    if todo:  # a finished study does not start (or join) a cluster
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_gpus=gpus_per_job)(run_job)
        pending = [remote.remote(plan, str(store.root), m, c) for m, c in todo]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        outcome = ray.get(ready[0])
        _record(run, outcome)
        if on_job:
            on_job(outcome)
    run.update_meta(status="done", finished=time.time())
    return run


def _deployment(run: Run, loaded: Any, key: str, config: Any, status: JobProgress | None) -> None:
    """Measure what the job's model costs to serve, once (kept in the run's metadata under
    ``deployment``; the report shows it beside accuracy). After scoring: packing changes the model."""
    if key in run.read_meta().get("deployment", {}):
        return
    from surefast.compress.lowbit.deploy import measure_deployment

    if status:
        status(f"{key.replace('|', ' / ')}: measuring deployment (weight bytes, decode speed)")
    measured = measure_deployment(loaded.model, loaded.tokenizer, config)
    with run.editing_meta() as meta:
        meta.setdefault("deployment", {})[key] = measured


def _acceptance(
    run: Run, loaded: Any, key: str, config: AcceptanceConfig, dtype: Any, status: JobProgress | None
) -> None:
    """SAGE's acceptance of ``config.draft`` (dense) on this job's model, once (``run.json``:
    ``acceptance``); a model without the draft's tokenizer gets the reason instead."""
    if key in run.read_meta().get("acceptance", {}):
        return
    from surefast.bench.acceptance import measure_acceptance
    from surefast.machine import OtherLoad, cpu_facts
    from surefast.models import load_model
    from surefast.speculate.drafts import check_tokenizers

    if status:
        status(f"{key.replace('|', ' / ')}: SAGE acceptance with the dense {config.draft}")
    draft = load_model(config.draft, dtype=dtype, work="scoring")
    others = OtherLoad()
    try:
        check_tokenizers(loaded.tokenizer, draft.tokenizer, config.draft)
    except SurefastError as exc:  # a different tokenizer: recorded, so the job counts as done
        measured: dict[str, Any] = {"skipped": exc.message}
    else:  # any other failure stops the job, as a scoring failure would
        measured = measure_acceptance(loaded, draft, config)
        measured |= {"threads": cpu_facts()["threads"], "other_cores": others.share()}
    del draft
    gc.collect()
    with run.editing_meta() as meta:
        meta.setdefault("acceptance", {})[key] = measured


def _record(run: Run, outcome: JobOutcome) -> None:
    with run.editing_meta() as meta:
        jobs: dict[str, Any] = meta.setdefault("jobs", {})
        key = f"{outcome.model}|{outcome.compression}"
        if not (outcome.skipped and key in jobs):  # keep the timing of the run that did the work
            jobs[key] = asdict(outcome)
