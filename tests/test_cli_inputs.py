"""Bad input is refused in one line before any work starts: `bench run`, `bench prompt`, `compress`.

And what used to abort a run after it was created now ends it cleanly: a failed or interrupted
run says so in run.json, malformed rows can be skipped from the CLI, and an item longer than the
model's context is left out (and counted) instead of stopping the whole run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import surefast.cli.bench as cli_bench
from data.fixtures import jsonl, mmlu_rows, write
from surefast.cli import main

MODEL = "tiny:llama@0"
# One task, one strategy, zero-shot, fp32: a real run on a tiny model in a few seconds.
SMALL = ("--model", MODEL, "--tasks", "mmlu", "--strategies", "base", "--shots", "0", "--splits", "5")
SMALL += ("--dtype", "fp32")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``surefast ARGS`` in this process: (exit code, stdout, stderr with Rich's wrapping undone)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    code = exit_.value.code
    return code if isinstance(code, int) else 1, out, " ".join(err.split())


def mmlu_folder(root: Path, rows: list[Any]) -> Path:
    write(root / "mmlu" / "mmlu_test.jsonl.gz", jsonl(rows))
    return root


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(cli_bench, "load_model", refuse)


# --- bench run: every flag checked before the model loads -----------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (("--alphas", "x"), "--alphas 'x'"),  # was a ValueError traceback
        (("--alphas", "0.1,oops"), "--alphas"),
        (("--alphas", "1.5"), "alphas: 1.5"),  # were found only after the first unit was scored
        (("--alphas", "0"), "alphas: 0.0"),
        (("--splits", "0"), "splits"),
        (("--splits", "-3"), "splits"),
        (("--score-fns", "lacc"), "score_fns: unknown conformity score 'lacc'"),
        (("--score-fns", ","), "score_fns"),
        (("--seed", "-1"), "seed"),  # numpy refuses the split seed after scoring
        (("--shots", "-1"), "shots"),
        (("--n", "5"), "n: 5"),
    ],
)
def test_bench_run_refuses_bad_flags_before_the_model_loads(capsys, no_model, isolated_home, flags, names):
    code, _, err = cli(capsys, "bench", "run", *SMALL, *flags)
    assert code == 2 and err.startswith("error: ") and names in err, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert not (isolated_home / "results").exists()  # no run was created


@pytest.mark.parametrize(("raised", "status"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")])
def test_a_run_that_stops_after_it_was_created_says_so(capsys, monkeypatch, isolated_home, tmp_path, raised, status):
    """It used to stay "running" for ever (and `bench show` printed an empty table, exit 0)."""

    def stops(*args: Any, **kwargs: Any) -> None:
        raise raised("stopped mid-run")

    monkeypatch.setattr(cli_bench, "run_bench", stops)
    data = mmlu_folder(tmp_path / "data", mmlu_rows(30))
    with pytest.raises(raised):  # main() turns these into exit codes; run() itself re-raises them
        cli_bench.run(
            **{
                **_run_defaults(),
                "model": MODEL,
                "tasks": "mmlu",
                "strategies": "base",
                "n": 18,
                "shots": 0,
                "splits": 5,
                "dtype": "fp32",
                "data": str(data),
            }
        )
    (folder,) = (isolated_home / "results" / "runs").iterdir()
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == status
    if status == "failed":
        assert meta["error"] == "RuntimeError('stopped mid-run')"


def _run_defaults() -> dict[str, Any]:
    """`bench run`'s parameters at their defaults (typer's Annotated defaults, for a direct call)."""
    import inspect

    return {name: p.default for name, p in inspect.signature(cli_bench.run).parameters.items()}


# --- bench prompt: shows a prompt, with no conformal checks ----------------------------------------------------


def test_bench_prompt_shows_an_item_of_a_small_n(capsys, tmp_path):
    data = mmlu_folder(tmp_path / "data", mmlu_rows(30))
    code, out, err = cli(capsys, "bench", "prompt", "--model", MODEL, "--n", "10", "--item", "9", "--data", str(data))
    assert code == 0, err  # was refused: "--n 10 leaves 5 calibration items; alpha=0.1 needs at least 9"
    assert "Question number" in out and "Answer:" in out


@pytest.mark.parametrize("item", ["10", "-1"])
def test_bench_prompt_refuses_an_item_outside_n(capsys, tmp_path, item):
    data = mmlu_folder(tmp_path / "data", mmlu_rows(30))
    code, _, err = cli(capsys, "bench", "prompt", "--model", MODEL, "--n", "10", "--item", item, "--data", str(data))
    assert code == 2 and err.startswith(f"error: --item {item} is outside 0..9"), err


# --- compress: method, options and calibration sizes checked before the model loads ---------------------------


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (("--method", "rnt"), "unknown compression method 'rnt'"),  # already refused; kept
        (("--method", "rtn", "-o", "bits=4.5"), "bits expects a whole number"),  # ran with 4.5 bits
        (("--method", "rtn", "-o", "symmetric='no'"), "symmetric expects true or false"),  # 'no' is truthy
        (("--method", "gptq", "--n-samples", "0"), "n_samples"),
        (("--method", "gptq", "--n-samples", "-4"), "n_samples"),  # calibrated on all windows but four
        (("--method", "gptq", "--seq-len", "0"), "seq_len"),  # ZeroDivisionError after the model loaded
    ],
)
def test_compress_refuses_bad_input_before_the_model_loads(capsys, monkeypatch, tmp_path, flags, names):
    import surefast.cli.compress

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded for bad input")

    monkeypatch.setattr(surefast.cli.compress, "compress_model", refuse)
    code, _, err = cli(capsys, "compress", "--model", MODEL, "--out", str(tmp_path / "out"), *flags)
    assert code == 2 and err.startswith("error: ") and names in err, err
    assert not (tmp_path / "out").exists()


# --- malformed rows: the flag the error message names exists ---------------------------------------------------


def test_skip_malformed_flag_skips_and_reports(capsys, tmp_path, isolated_home):
    data = mmlu_folder(tmp_path / "data", [*mmlu_rows(10), "{not json", *mmlu_rows(20)[10:]])
    code, _, err = cli(capsys, "bench", "run", *SMALL, "--n", "18", "--data", str(data))
    assert code == 2 and "malformed mmlu row" in err and "--skip-malformed" in err, err
    assert not (isolated_home / "results").exists()  # found while estimating, before the run is created

    code, out, err = cli(capsys, "bench", "run", *SMALL, "--n", "18", "--data", str(data), "--skip-malformed")
    assert code == 0, err  # was: "No such option: --skip-malformed"
    assert "skipped 1 malformed rows (mmlu: 1)" in " ".join(out.split())
    (folder,) = (isolated_home / "results" / "runs").iterdir()
    meta = json.loads((folder / "run.json").read_text())
    assert meta["config"]["skip_malformed"] is True and meta["units"][0]["malformed"] == 1


# --- an item longer than the model's context: left out and counted, not a failed run ---------------------------

LONG = 2500  # characters = tokens for the byte-level tiny tokenizer; the tiny model has 2048 positions


def long_rows() -> list[dict[str, str]]:
    rows = mmlu_rows(30)
    rows[7] = {**rows[7], "question": "Why? " * (LONG // 5)}  # no context to shorten: MMLU has none
    return rows


def test_bench_run_leaves_out_an_item_longer_than_the_context(capsys, tmp_path, isolated_home):
    data = mmlu_folder(tmp_path / "data", long_rows())
    code, out, err = cli(capsys, "bench", "run", *SMALL, "--n", "30", "--data", str(data))
    assert code == 0, err  # was: "item mmlu-7 does not fit max_length=2048 ... (raise max_length)", after the run began
    assert "left out items longer than the model's context" in " ".join(out.split())
    (folder,) = (isolated_home / "results" / "runs").iterdir()
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "done"
    assert meta["too_long"] == {f"{MODEL}|dense|mmlu|base": ["mmlu-7"]}
    assert meta["units"][0]["too_long"] == 1 and meta["units"][0]["n_items"] == 29


def test_every_compression_leaves_out_the_same_items_and_the_cache_serves_the_rest(tiny_tok, tmp_path):
    """Which items are left out depends on the items, tokenizer, prompt and context, not on the
    weights: a dense and a "compressed" job of one model score the same 29 items, and a rerun
    scores nothing (the left-out item is never cached, and never needed)."""
    from surefast.bench.runner import BenchConfig, run_bench
    from surefast.bench.store import Store
    from surefast.models import load_model

    data = mmlu_folder(tmp_path / "data", long_rows())
    config = BenchConfig(tasks=("mmlu",), strategies=("base",), n=30, n_shots=0, n_splits=5, data=str(data))
    loaded = load_model(MODEL, dtype="fp32")
    store = Store(tmp_path / "results")
    run = store.create_run({"kind": "test"})
    dense = run_bench(loaded, config, run)
    other = run_bench(loaded, config, run, compression="other", compression_fp="other-fp")
    assert [(u.n_items, u.too_long, u.n_cached) for u in dense + other] == [(29, 1, 0), (29, 1, 0)]
    assert run.read_meta()["too_long"] == {
        f"{MODEL}|dense|mmlu|base": ["mmlu-7"],
        f"{MODEL}|other|mmlu|base": ["mmlu-7"],
    }
    again = run_bench(loaded, config, store.create_run({"kind": "test"}))
    assert [(u.n_items, u.too_long, u.n_cached) for u in again] == [(29, 1, 29)]
