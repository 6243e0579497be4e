"""One error rule: whatever a user can get wrong ends in one ``error:`` line (and a ``hint:``), exit code 2.

Every config a user can set from the command line or a study plan is fed an invalid value here:
BenchConfig (``bench run`` flags and plan keys), every registered compression config
(``compress -o`` and flags, plan compressions), CalibrationConfig (``compress --n-samples``,
plan ``calibration``), every speculative policy config (``speculate -o``), SamplingConfig
(``speculate --temperature``/``--top-p``). Configs no flag reaches with a bad value (ScoringConfig:
BenchConfig checks ``batch_tokens`` first; PruneConfig: click checks ``--prune-ratio``'s range;
TaskConfig, PromptConfig, RAPSConfig) are checked as library calls: a SurefastError, never a bare
ValueError or TypeError. Cases are collected from the registries, so a new method, policy
or plan key is covered (or fails here until it is).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from surefast.bench.plan import KNOWN_KEYS
from surefast.compress.api import config_class, method_names
from surefast.errors import SurefastError
from surefast.speculate.policies import POLICY_CONFIGS

MODEL = "tiny:llama@0"
PAIR = ("--target", "tiny:llama@0", "--draft", "tiny:llama@1")
BENCH = ("bench", "run", "--model", MODEL, "--tasks", "mmlu", "--strategies", "base", "--shots", "0")


def assert_user_error(out: SimpleNamespace, *needles: str, alone: bool = True) -> None:
    """Exit code 2, exactly one ``error:`` line (with every needle) plus at most a ``hint:`` line
    after it, and no traceback. ``alone``: nothing printed before it (the error came before any
    work; a progress display that started may leave an empty line)."""
    lines = out.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert out.returncode == 2, out.stderr
    assert len(errors) == 1 and "Traceback" not in out.stderr + out.stdout, out.stderr
    tail = lines[errors[0] :]
    assert len(tail) == 1 or (len(tail) == 2 and tail[1].startswith("hint: ")), out.stderr
    assert all(needle in tail[0] for needle in needles), out.stderr
    if alone:
        assert not any(line.strip() for line in lines[: errors[0]]), out.stderr


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any transformers model fails the test: the bad value must be refused first."""
    import transformers

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built before the bad value was refused")

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)


def _builtin_methods() -> list[str]:
    return [n for n in method_names() if config_class(n).__module__.startswith("surefast.")]  # not test plugins


def _wrong_type(annotation: Any) -> str | None:
    """A ``-o`` literal of the wrong type for a field (None: a field type this rule does not cover)."""
    kinds = set(typing.get_args(annotation) or (annotation,)) - {type(None)}
    if kinds == {bool}:
        return "'no'"  # truthy text, not a switch
    if kinds <= {int, float}:
        return "'x'"
    if kinds == {str}:
        return "5"
    return None


def _option_cases() -> list[tuple[str, str]]:
    """(method, "field=bad literal") for every typed field of every built-in compression method."""
    cases = []
    for method in _builtin_methods():
        hints = typing.get_type_hints(config_class(method))
        for field in dataclasses.fields(config_class(method)):
            bad = _wrong_type(hints[field.name])
            if bad is not None:
                cases.append((method, f"{field.name}={bad}"))
    return cases


def _out_of_range(method: str) -> tuple[str, Any]:
    """One out-of-range option of a built-in method, by the field it is known to check."""
    fields = {f.name for f in dataclasses.fields(config_class(method))}
    for key, value in (("bits", 1), ("sparsity", 1.5), ("ratio", 1.5)):
        if key in fields:
            return key, value
    raise AssertionError(f"{method}: give tests/test_error_rule.py an invalid value for one of its options")


# --- the exit codes ---------------------------------------------------------------------------------------------


def test_a_user_error_exits_2_an_interrupt_130_and_a_bug_raises(cli, monkeypatch) -> None:
    from surefast.cli import demo

    def fail_with(exc: BaseException) -> Callable[[str], None]:
        def parse_spec(raw: str) -> None:
            raise exc

        return parse_spec

    monkeypatch.setattr(demo, "parse_spec", fail_with(SurefastError("bad spec x", "try y")))
    out = cli("generate", "hi")
    assert_user_error(out, "bad spec x")
    assert out.stderr == "error: bad spec x\nhint: try y\n"
    monkeypatch.setattr(demo, "parse_spec", fail_with(KeyboardInterrupt()))
    assert cli("generate", "hi").returncode == 130
    monkeypatch.setattr(demo, "parse_spec", fail_with(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # not ours to hide: Python prints it and exits 1
        cli("generate", "hi")


def test_main_registers_the_commands_once(cli) -> None:
    """Each main() call used to add every command group again, so every in-process call was slower
    than the one before (this file's few hundred CLI runs took minutes instead of seconds)."""
    from surefast.cli import app

    cli("speculate", "hi", "-o", "max_width=0")
    groups, commands = len(app.registered_groups), len(app.registered_commands)
    cli("speculate", "hi", "-o", "max_width=0")
    assert (len(app.registered_groups), len(app.registered_commands)) == (groups, commands)


# --- bench run: BenchConfig from flags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--n", "0"), "n: must be at least 1"),
        (("--n", "5"), "n: 5 items are too few"),
        (("--seed", "-1"), "seed"),
        (("--shots", "-2"), "shots"),
        (("--splits", "0"), "splits"),
        (("--score-fns", "lacc"), "unknown conformity score 'lacc'"),
        (("--alphas", "1.5"), "alphas: 1.5"),
        (("--alphas", "nan"), "alphas: nan"),
        (("--alphas", "x"), "--alphas 'x'"),
        (("--tasks", "mmlux"), "--tasks: unknown value 'mmlux'"),
        (("--strategies", "basic"), "--strategies: unknown value 'basic'"),
        (("--dtype", "fp8"), "fp8"),
    ],
)
def test_bench_run_flags(cli, no_model, flags, needle) -> None:
    assert_user_error(cli(*BENCH, *flags), needle)


# --- study plans: every plan key, every method's options, the calibration ------------------------------------

# One invalid value per plan key; the test below fails when a key is added without one.
PLAN_CASES: dict[str, tuple[str, str]] = {
    "name": ("name: [a, b]", "name"),
    "models": ("models: []", "models"),
    "compressions": ("compressions: [{label: x, method: rnt}]", "unknown compression method 'rnt'"),
    "sweeps": ("sweeps: [{method: wanda}]", "sweeps[0]"),
    "tasks": ("tasks: [mmlux]", "tasks: unknown value 'mmlux'"),
    "strategies": ("strategies: [basic]", "strategies: unknown value 'basic'"),
    "n": ("n: 0", "n: must be at least 1"),
    "seed": ("seed: -1", "seed"),
    "shots": ("shots: many", "shots: expected a whole number"),
    "chat": ("chat: maybe", "chat"),
    "score_fns": ("score_fns: [lacc]", "score_fns: unknown conformity score 'lacc'"),
    "alphas": ("alphas: [1.5]", "alphas: 1.5"),
    "splits": ("splits: 0", "splits"),
    "bootstrap": ("bootstrap: -1", "bootstrap"),
    "data": ("data: 5", "data"),
    "calibration": ("calibration: {n_samples: 0}", "calibration: n_samples"),
    "dtype": ("dtype: fp8", "dtype"),
    "deployment": ("deployment: 3", "deployment: expected true or false"),
    "batch_tokens": ("batch_tokens: 0", "batch_tokens"),
    "skip_malformed": ("skip_malformed: 'yes'", "skip_malformed"),
    "store": ("store: [a]", "store: expected a folder path"),
    "scores": ("scores: plan.yaml", "scores: not a folder"),
    "acceptance": ("acceptance: {prompts: 2}", "acceptance: no draft given"),
    "see_also": ("see_also: ''", "see_also: expected a file path"),
}


def _plan(tmp_path: Path, line: str) -> str:
    """A valid one-model plan with ``line`` added (a key given twice: the later one wins in YAML)."""
    path = tmp_path / "plan.yaml"
    path.write_text(f"name: rule\nmodels: [{MODEL}]\ntasks: [mmlu]\nn: 20\n{line}\n")
    return str(path)


def test_every_plan_key_has_a_case() -> None:
    assert set(PLAN_CASES) == set(KNOWN_KEYS)


@pytest.mark.parametrize("key", sorted(PLAN_CASES))
def test_plan_keys(cli, no_model, tmp_path, key) -> None:
    line, needle = PLAN_CASES[key]
    path = _plan(tmp_path, line)
    assert_user_error(cli("study", "plan", path, "--no-estimate"), path, needle)


def test_an_unknown_plan_key(cli, no_model, tmp_path) -> None:
    assert_user_error(cli("study", "plan", _plan(tmp_path, "splts: 5"), "--no-estimate"), "splts")


@pytest.mark.parametrize("method", _builtin_methods())
def test_plan_compression_options(cli, no_model, tmp_path, method) -> None:
    key, value = _out_of_range(method)
    path = _plan(tmp_path, f"compressions: [{{label: x, method: {method}, {key}: {value}}}]")
    assert_user_error(cli("study", "plan", path, "--no-estimate"), "compressions[0]")


@pytest.mark.parametrize("line", ["calibration: {seq_len: 0}", "calibration: {n_sample: 4}", "calibration: 5"])
def test_plan_calibration(cli, no_model, tmp_path, line) -> None:
    assert_user_error(cli("study", "plan", _plan(tmp_path, line), "--no-estimate"), "calibration")


# --- compress: every method's options, the flags, CalibrationConfig ------------------------------------------


def _compress(cli: Callable[..., SimpleNamespace], tmp_path: Path, method: str, *flags: str) -> SimpleNamespace:
    return cli("compress", "--model", MODEL, "--method", method, "--out", str(tmp_path / "out"), *flags)


@pytest.mark.parametrize(("method", "option"), _option_cases())
def test_compress_option_of_the_wrong_type(cli, no_model, tmp_path, method, option) -> None:
    key = option.split("=")[0]
    assert_user_error(_compress(cli, tmp_path, method, "-o", option), f"{method} option {key} expects")


@pytest.mark.parametrize("method", _builtin_methods())
def test_compress_option_out_of_range(cli, no_model, tmp_path, method) -> None:
    key, value = _out_of_range(method)
    assert_user_error(_compress(cli, tmp_path, method, "-o", f"{key}={value}"), key)


@pytest.mark.parametrize(
    ("method", "flags", "needle"),
    [
        ("rtn", ("--bits", "9"), "bits=9 is out of range"),
        ("rtn", ("--act-bits", "1"), "act_bits=1"),  # was refused only after the model loaded
        ("gptq", ("--act-bits", "12"), "act_bits=12"),  # ... and GPTQ had run
        ("wanda", ("--sparsity", "1.5"), "sparsity must be in [0, 1)"),
        ("wanda", ("--nm", "4:2"), "N:M pattern 4:2"),
        ("magnitude", ("--nm", "two:four"), "cannot read N:M pattern"),
        ("slicegpt", ("--ratio", "1.5"), "slicegpt ratio"),
        ("llm-pruner", ("--ratio", "0.95"), "llm-pruner ratio"),
        ("rtn", ("-o", "nope=1"), "rtn has no option 'nope'"),
        ("rtn", ("-o", "bits"), "is not KEY=VALUE"),
        ("rtn", ("--dtype", "fp8"), "fp8"),
        ("gptq", ("--n-samples", "0"), "n_samples"),  # CalibrationConfig
        ("gptq", ("--n-samples", "-4"), "n_samples"),
        ("gptq", ("--seq-len", "0"), "seq_len"),
    ],
)
def test_compress_flags(cli, no_model, tmp_path, method, flags, needle) -> None:
    assert_user_error(_compress(cli, tmp_path, method, *flags), needle)


def test_a_saved_folder_with_a_bad_config_is_one_line(cli, tmp_path) -> None:
    """surefast_compression.json is read back into the method's config when the folder loads:
    a bad value there (edited by hand) used to end in int()'s ValueError traceback."""
    folder = tmp_path / "out"
    assert _compress(cli, tmp_path, "rtn", "--bits", "4", "--dtype", "fp32").returncode == 0
    saved = folder / "surefast_compression.json"
    record = json.loads(saved.read_text())
    record["config"]["bits"] = "four"
    saved.write_text(json.dumps(record))
    assert_user_error(cli("models", "info", str(folder), "--dtype", "fp32"), "bits=four", alone=False)


# --- speculate: every policy's options, the sampling flags, the VLM draft's pruning ---------------------------


def _policy_cases() -> list[tuple[str, str]]:
    """(policy, "field=bad literal"): a wrong type and an out-of-range value for every field."""
    cases = []
    for policy, cls in POLICY_CONFIGS.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            cases.append((policy, f"{field.name}='x'"))
            if kind is int:
                cases.append((policy, f"{field.name}=-1"))
            elif kind is float:
                cases.append((policy, f"{field.name}=2.0"))
            else:  # the fixed tree's paths
                cases.append((policy, f"{field.name}=()"))
    return cases


@pytest.mark.parametrize(("policy", "option"), _policy_cases())
def test_speculate_policy_options(cli, no_model, policy, option) -> None:
    key = option.split("=")[0]
    assert_user_error(cli("speculate", "hi", *PAIR, "--policy", policy, "-o", option), key)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--temperature", "inf"), "temperature=inf"),  # click's range lets it through (NaN it refuses)
        (("--top-p", "0"), "top_p=0.0"),
        (("--policy", "sagee"), "sagee"),
        (("-o", "max_width=0"), "max_width=0"),  # issue 15's example: SageConfig's ValueError, once a traceback
        (("-o", "temperature=0.5"), "not a policy setting but a flag"),
        (("--image", "nope.png"), "nope.png not found"),
        (("--dtype", "fp8"), "fp8"),
    ],
)
def test_speculate_flags(cli, no_model, flags, needle) -> None:
    assert_user_error(cli("speculate", "hi", *PAIR, *flags), needle)


# --- configs no flag reaches with a bad value: library calls ----------------------------------------------------


def _library_cases() -> list[tuple[Callable[..., Any], dict[str, Any]]]:
    from surefast.conformal.scores import RAPSConfig
    from surefast.data import TaskConfig
    from surefast.prompts import PromptConfig
    from surefast.scoring import ScoringConfig
    from surefast.speculate.vlm import PruneConfig

    return [
        (ScoringConfig, {"batch_tokens": 0}),
        (ScoringConfig, {"max_batch_size": 0}),
        (ScoringConfig, {"max_length": 1}),
        (ScoringConfig, {"boundary": "exact"}),
        (ScoringConfig, {"batch_tokens": "4096"}),
        (ScoringConfig, {"max_length": "long"}),
        (PruneConfig, {"ratio": 1.0}),
        (PruneConfig, {"ratio": math.nan}),
        (PruneConfig, {"ratio": "half"}),
        (PruneConfig, {"attention_share": 1.5}),
        (PruneConfig, {"attention_share": None}),
        (TaskConfig, {"n": "ten"}),
        (TaskConfig, {"n_demos": "five"}),
        (PromptConfig, {"n_shots": "five"}),
        (RAPSConfig, {"lam": "small"}),
    ]


@pytest.mark.parametrize(("config", "values"), _library_cases(), ids=lambda x: getattr(x, "__name__", None) or repr(x))
def test_library_configs_raise_surefast_errors(config, values) -> None:
    with pytest.raises(SurefastError) as err:
        config(**values)
    assert err.value.message and err.value.hint, "every refusal says what to do"


def test_prune_config_stays_a_value_error() -> None:
    """Callers that caught the old ValueError still do (ConfigError is both)."""
    from surefast.speculate.vlm import PruneConfig

    with pytest.raises(ValueError, match="prune ratio"):
        PruneConfig(ratio=1.0)


@pytest.mark.parametrize(("method", "option"), _option_cases())
def test_compression_configs_built_directly_refuse_in_one_line(method, option) -> None:
    """Built without make_config's type checks (a saved folder's json, library code), a config
    of the wrong type is built or refused with a SurefastError, never int()'s or float()'s."""
    key, literal = option.split("=")
    value = {"'x'": "x", "'no'": "no", "5": 5}[literal]
    with contextlib.suppress(SurefastError):  # anything else fails the test
        config_class(method)(**{key: value})
