"""``dtype: auto``: the pure pick, the per-machine cache, the overrides, and what loads with it.

Only :func:`test_a_real_measurement_at_tiny_width` times anything (a 64-wide linear, milliseconds);
every other test fakes the measurement or sets SUREFAST_DTYPE_AUTO.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import torch

from surefast.errors import SurefastError
from surefast.models import dtype_choice as dc
from surefast.models import load_model, resolve_dtype

REAL_MACHINE_BUSY = dc.machine_busy  # the fixture below replaces it in every test


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No override from the caller's environment, and no choice remembered from another test."""
    monkeypatch.delenv(dc.ENV, raising=False)
    monkeypatch.setattr(dc, "_MEMO", {})
    monkeypatch.setattr(dc, "machine_busy", lambda: False)  # the test machine's load must not decide


def fake_measure(bf16: float, fp32: float, calls: list[tuple[str, int]] | None = None) -> Any:
    def measure(work: str, hidden: int, **_: Any) -> dict[str, dict[str, float]]:
        if calls is not None:
            calls.append((work, hidden))
        cells = [str(m) for m in dc.WORK_TOKENS[work]]
        return {"bf16": {c: bf16 for c in cells}, "fp32": {c: fp32 for c in cells}}

    return measure


def no_measure(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("measured, but should not have")


@pytest.mark.parametrize(
    ("times", "want"),
    [
        ({"bf16": 1.0, "fp32": 1.0}, "bf16"),
        ({"bf16": 1.09, "fp32": 1.0}, "bf16"),  # within 10%: bf16 halves the memory
        ({"bf16": 1.11, "fp32": 1.0}, "fp32"),
        ({"bf16": 2.9, "fp32": 1.6}, "fp32"),  # issue 18's AVX2-only EPYC, 16-token forward of the 1.5B
        ({"bf16": 0.8, "fp32": 1.6}, "bf16"),
        ({"bf16": float("nan"), "fp32": 1.0}, "fp32"),
        ({"fp32": 2.0, "fp16": 1.0}, "fp16"),
    ],
)
def test_pick(times: dict[str, float], want: str) -> None:
    assert dc.pick(times) == want


def test_pick_needs_a_time() -> None:
    with pytest.raises(ValueError):
        dc.pick({"bf16": float("nan")})


@pytest.mark.parametrize(("hidden", "bucket"), [(64, 64), (896, 1024), (1024, 1024), (1536, 2048), (3584, 4096)])
def test_hidden_bucket(hidden: int, bucket: int) -> None:
    assert dc.hidden_bucket(hidden) == bucket


def test_measured_then_cached(isolated_home, monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.3, 0.1, calls))
    first = dc.auto_choice("scoring", hidden=896)
    assert (first.dtype, first.source, first.hidden) == ("fp32", "measured", 896)
    assert calls == [("scoring", 896)]
    assert dc.choose_dtype("scoring", hidden=896) == torch.float32 and len(calls) == 1  # remembered in-process

    saved = json.loads((isolated_home / "machine" / "dtype.json").read_text())
    (entry,) = saved["entries"].values()
    assert entry["dtype"] == "fp32" and entry["work"] == "scoring" and entry["times_s"]["bf16"] == {"256": 0.3}
    assert entry["cpu"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert entry["threads"] == torch.get_num_threads() and entry["torch"] == torch.__version__

    monkeypatch.setattr(dc, "_MEMO", {})  # a new process: reads the file, measures nothing
    monkeypatch.setattr(dc, "measure", no_measure)
    again = dc.auto_choice("scoring", hidden=1000)  # same bucket (1024)
    assert (again.dtype, again.source, again.times_s) == ("fp32", "cached", first.times_s)
    assert "fp32 100 ms" in again.note() and "cached" in again.note()


def test_cache_key_separates_work_width_and_threads(monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.2, calls))
    dc.auto_choice("scoring", hidden=896)
    dc.auto_choice("decoding", hidden=896)
    dc.auto_choice("decoding", hidden=1536)
    dc.auto_choice("decoding")  # the default width, 1536: already measured
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    dc.auto_choice("decoding", hidden=1536)
    assert calls == [("scoring", 896), ("decoding", 896), ("decoding", 1536), ("decoding", 1536)]


def test_wide_models_are_measured_at_the_cap(monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.2, calls))
    assert dc.auto_choice("scoring", hidden=8192).hidden == dc.MAX_HIDDEN
    assert calls == [("scoring", dc.MAX_HIDDEN)]


def test_a_busy_machine_is_measured_but_not_cached(isolated_home, monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.2, calls))
    monkeypatch.setattr(dc, "machine_busy", lambda: True)
    choice = dc.auto_choice("scoring")
    assert choice.source == dc.BUSY and dc.BUSY in choice.note()
    assert not (isolated_home / "machine" / "dtype.json").exists()
    dc.auto_choice("scoring")
    assert len(calls) == 1  # one measurement per process all the same
    monkeypatch.setattr(dc, "_MEMO", {})
    monkeypatch.setattr(dc, "machine_busy", lambda: False)
    assert dc.auto_choice("scoring").source == "measured" and len(calls) == 2  # the next process, quiet: cached
    assert (isolated_home / "machine" / "dtype.json").is_file()


def test_machine_busy_reads_the_load(monkeypatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.5, 0.0, 0.0))
    assert REAL_MACHINE_BUSY()
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 0.0, 0.0))
    assert not REAL_MACHINE_BUSY()


def test_a_garbled_cache_is_measured_again(isolated_home, monkeypatch) -> None:
    (isolated_home / "machine").mkdir()
    (isolated_home / "machine" / "dtype.json").write_text("{not json")
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.2))
    assert dc.auto_choice("decoding").source == "measured"
    assert json.loads((isolated_home / "machine" / "dtype.json").read_text())["schema"] == dc.SCHEMA


def test_env_overrides(monkeypatch) -> None:
    monkeypatch.setattr(dc, "measure", no_measure)
    monkeypatch.setenv(dc.ENV, "fp32")
    assert dc.choose_dtype("scoring") == torch.float32
    assert dc.auto_choice("decoding", device="cuda").dtype == "fp32"  # on a GPU too
    monkeypatch.setenv(dc.ENV, "BF16")
    choice = dc.auto_choice("decoding")
    assert (choice.torch_dtype, choice.source) == (torch.bfloat16, "env") and dc.ENV in choice.note()
    monkeypatch.setenv(dc.ENV, "int8")
    with pytest.raises(SurefastError, match=dc.ENV):
        dc.auto_choice("scoring")


def test_unknown_work() -> None:
    with pytest.raises(SurefastError, match="prefill"):
        dc.auto_choice("prefill")  # type: ignore[arg-type]


def test_an_unwritable_home_only_skips_the_cache(isolated_home, monkeypatch) -> None:
    def read_only(path: Any, data: bytes, **_: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(dc, "atomic_write_bytes", read_only)  # we run as root: chmod would not stop us
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.2))
    assert dc.auto_choice("scoring").dtype == "bf16"
    assert not (isolated_home / "machine" / "dtype.json").exists()


def test_a_home_that_cannot_be_created(tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SUREFAST_HOME", str(tmp_path / "file" / "home"))  # under a file: even root fails
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.2, 0.1, calls))
    assert dc.choose_dtype("decoding") == torch.float32
    assert dc.choose_dtype("decoding") == torch.float32 and len(calls) == 1  # measured once per process


@pytest.mark.parametrize(("bf16_ok", "want"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_needs_no_measurement(monkeypatch, bf16_ok: bool, want: torch.dtype) -> None:
    monkeypatch.setattr(dc, "measure", no_measure)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    choice = dc.auto_choice("scoring", device="cuda:0")
    assert (choice.torch_dtype, choice.source) == (want, "device")
    assert resolve_dtype("auto", work="decoding", device="cuda") == want


class FakeTimer:
    """perf_counter stand-in: each call of F.linear takes ``bf16`` then ``fp32`` seconds, alternately."""

    def __init__(self, bf16: float, fp32: float) -> None:
        self.durations, self.now, self.calls = (bf16, fp32), 0.0, 0

    def __call__(self) -> float:
        if self.calls % 2:  # the end of a call
            self.now += self.durations[(self.calls // 2) % 2]
        self.calls += 1
        return self.now


def test_measure_with_a_fake_timer() -> None:
    timer = FakeTimer(bf16=2**-5, fp32=2**-6)  # exact in binary: the differences of the clock are too
    times = dc.measure("decoding", 32, timer=timer)
    assert times == {"bf16": {"1": 2**-5, "16": 2**-5}, "fp32": {"1": 2**-6, "16": 2**-6}}
    assert timer.calls == 2 * 2 * 2 * dc.REPEATS  # (start, end) x 2 dtypes x 2 token counts x repeats
    assert dc.pick({n: sum(c.values()) for n, c in times.items()}) == "fp32"


def test_a_slow_cpu_gets_fewer_repeats() -> None:
    timer = FakeTimer(bf16=3.0, fp32=1.0)  # seconds per call: the budget is spent after the first repeat
    times = dc.measure("scoring", 32, timer=timer)
    assert times == {"bf16": {"256": 3.0}, "fp32": {"256": 1.0}}
    assert timer.calls == 2 * 2 * dc.MIN_REPEATS


def test_a_real_measurement_at_tiny_width(isolated_home) -> None:
    choice = dc.auto_choice("decoding", hidden=64)
    assert choice.source == "measured" and choice.hidden == 64
    assert choice.torch_dtype in (torch.bfloat16, torch.float32)
    assert set(choice.times_s) == {"bf16", "fp32"} and all(set(c) == {"1", "16"} for c in choice.times_s.values())
    assert all(0 < t < 1 for c in choice.times_s.values() for t in c.values())
    assert (isolated_home / "machine" / "dtype.json").is_file()


def test_load_model_auto_fingerprints_the_resolved_dtype(monkeypatch) -> None:
    fps = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        monkeypatch.setenv(dc.ENV, name)
        loaded = load_model("tiny:llama@0", dtype="auto", device="cpu", work="decoding")
        assert loaded.dtype == dtype and loaded.model.dtype == dtype
        assert loaded.dtype_choice is not None and loaded.dtype_choice.work == "decoding"
        assert loaded.fingerprint == load_model("tiny:llama@0", dtype=name, device="cpu").fingerprint
        fps[name] = loaded.fingerprint
    assert fps["bf16"] != fps["fp32"]
    assert load_model("tiny:llama@0", dtype="fp32", device="cpu").dtype_choice is None


def test_load_model_measures_at_the_models_width(monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.2, 0.1, calls))
    loaded = load_model("tiny:qwen2_5_vl@0", dtype="auto", device="cpu")  # a VLM: its text config's width
    assert calls == [("scoring", 64)] and loaded.dtype == torch.float32


def test_local_folder_width(tmp_path, tiny, tiny_tok, monkeypatch) -> None:
    tiny("qwen2").save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(dc, "measure", fake_measure(0.1, 0.1, calls))
    assert load_model(str(tmp_path), dtype="auto", device="cpu").dtype == torch.bfloat16
    assert calls == [("scoring", 64)]


def test_bad_dtype_names_every_choice() -> None:
    with pytest.raises(SurefastError) as info:
        resolve_dtype("fp8")
    assert "auto" in (info.value.hint or "") and "fp32" in (info.value.hint or "")
    assert resolve_dtype(None) == torch.bfloat16  # the library default stays bf16


def test_a_plan_with_dtype_auto() -> None:
    from surefast.bench.plan import plan_from_dict

    assert plan_from_dict({"models": ["tiny:llama@0"]}).dtype == "auto"  # the default
    auto = plan_from_dict({"models": ["tiny:llama@0"], "dtype": "auto"})
    assert auto.dtype == "auto" and auto.run_id != plan_from_dict({"models": ["tiny:llama@0"], "dtype": "bf16"}).run_id


def test_a_study_keeps_the_dtype_it_first_chose(isolated_home, monkeypatch) -> None:
    """A resumed study (here: a later job of the same model) loads the model in the dtype the run
    recorded, even where the machine would now choose another: one run never mixes dtypes."""
    import surefast.models
    from bench.study_helpers import write_data
    from surefast.bench.plan import plan_from_dict
    from surefast.bench.store import Store
    from surefast.bench.study import open_run, run_job

    plan = plan_from_dict(
        {
            "models": ["tiny:llama@0"],
            "compressions": ["dense", {"label": "rtn-w4", "method": "rtn", "bits": 4}],
            "tasks": ["mmlu"],
            "strategies": ["base"],
            "shots": 0,
            "n": 18,
            "splits": 5,
            "deployment": False,
            "calibration": {"n_samples": 2, "seq_len": 16},
            "data": str(write_data(isolated_home)),
        }
    )
    store = Store(isolated_home / "results")
    run = open_run(store, plan, "test")
    seen: list[Any] = []
    real = surefast.models.load_model

    def spy(spec: Any, **kwargs: Any) -> Any:
        loaded = real(spec, **kwargs)
        seen.append((kwargs["dtype"], kwargs["work"], loaded.dtype))
        return loaded

    monkeypatch.setattr(surefast.models, "load_model", spy)
    (dense, rtn) = plan.compressions
    monkeypatch.setenv(dc.ENV, "fp32")
    run_job(plan, str(store.root), "tiny:llama@0", dense)
    assert run.read_meta()["dtypes"] == {"tiny:llama@0": "fp32"}
    monkeypatch.setenv(dc.ENV, "bf16")  # the machine's choice changed
    run_job(plan, str(store.root), "tiny:llama@0", rtn)
    assert seen == [("auto", "scoring", torch.float32), ("fp32", "scoring", torch.float32)]


def test_speculate_says_what_auto_chose(cli, monkeypatch) -> None:
    monkeypatch.setenv(dc.ENV, "fp32")
    pair = ("--target", "tiny:llama@0", "--draft", "tiny:llama@1", "--max-new-tokens", "3", "--no-compare")
    out = cli("speculate", "hi", *pair)
    assert out.returncode == 0, out.stderr
    assert f"dtype auto (decoding): fp32, set by {dc.ENV}" in out.stderr
    assert "dtype auto" not in cli("speculate", "hi", *pair, "--dtype", "bf16").stderr


def test_machine_report_shows_the_auto_choice_per_work(cli, monkeypatch) -> None:
    monkeypatch.setattr(dc, "measure", fake_measure(0.004, 0.002))
    out = cli("speculate", "--target", "tiny:qwen2@0", "--machine-report", "--dtype", "fp32")
    assert out.returncode == 0, out.stderr
    assert "dtype auto (decoding): fp32 (bf16 4 / 4 ms, fp32 2 / 2 ms for 1 / 16-token linears at h=64" in out.stdout
    assert "dtype auto (scoring): fp32 (bf16 4 ms, fp32 2 ms for 256-token linears at h=64" in out.stdout
