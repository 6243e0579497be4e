import re
from pathlib import Path

import pytest

from surefast.bench.plan import load_plan, plan_from_dict
from surefast.errors import SurefastError

PLAN = """
name: t
models: [tiny:llama]
compressions:
  - dense
  - {label: gptq-w4, method: gptq, bits: 4}
sweeps:
  - {label: wanda, method: wanda, param: sparsity, values: [0.0, 0.25, 0.5], scale: 100}
tasks: [mmlu]
strategies: shared
n: 40
splits: 10
"""


def test_plan_expands_sweeps_and_is_stable(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    plan = load_plan(path)
    assert [c.label for c in plan.compressions] == ["dense", "gptq-w4", "wanda-25", "wanda-50"]
    assert dict(plan.compressions[3].options) == {"sparsity": 0.5}
    assert plan.bench.tasks == ("mmlu",) and plan.bench.strategies == ("shared",) and plan.bench.n_splits == 10
    assert len(plan.jobs()) == 4
    assert load_plan(path).run_id == plan.run_id != load_plan(path, {"n": 50}).run_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [a]\nmodle: 1\n", "unknown key.*did you mean 'models'"),
        ("models: []\n", "non-empty list"),
        ("models: [a]\ntasks: [mmlu, trivia]\n", "unknown value 'trivia'"),
        ("models: [a]\ncompressions: [{label: x, method: rtn}, {label: x, method: gptq}]\n", "duplicate labels"),
        ("models: [a]\nsweeps: [{method: wanda}]\n", "needs method, param and values"),
        ("models: [a\n  b: c\n", r"plan\.yaml:\d+: invalid YAML"),
    ],
)
def test_bad_plans_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(SurefastError, match=message):
        load_plan(path)


def test_dense_baseline_is_always_included():
    plan = plan_from_dict({"models": ["tiny:llama"], "compressions": [{"method": "rtn", "bits": 4}]})
    assert plan.compressions[0].is_dense and plan.compressions[1].label == "rtn-bits4"


# Every bad plan is refused by load_plan, before any model loads, with one SurefastError whose
# message names the plan file and the key (a TypeError or ValueError would be a traceback).
BAD_PLANS = [
    ("n: twenty", "n"),
    ("n: -5", "n"),
    ("n: 0", "n"),
    ("n: 5", "n"),  # too few for the calibration half at alpha 0.1
    ("seed: abc", "seed"),
    ("seed: -1", "seed"),  # numpy's split generator takes no negative seed
    ("shots: -1", "shots"),
    ("chat: maybe", "chat"),
    ("alphas: [1.5]", "alphas"),
    ("alphas: [0]", "alphas"),
    ("alphas: [x]", "alphas"),
    ("alphas: {a: 1}", "alphas"),
    ("splits: 0", "splits"),
    ("splits: 2.5", "splits"),
    ("bootstrap: -1", "bootstrap"),
    ("bootstrap: many", "bootstrap"),
    ("batch_tokens: 0", "batch_tokens"),
    ("score_fns: lacc", "score_fns"),
    ("score_fns: [lac, nonsense]", "score_fns"),
    ("score_fns: 3", "score_fns"),
    ("skip_malformed: perhaps", "skip_malformed"),
    ("dtype: int8", "dtype"),
    ("dtype: [bf16]", "dtype"),
    ("tasks: {mmlu: 1}", "tasks"),
    ("tasks: []", "tasks"),
    ("strategies: [shared, 3]", "strategies"),
    ("name: [a, b]", "name"),
    ("models: [tiny:llama, tiny:llama]", "models"),
    ("models: [{name: x}]", "models"),
    ("models: [tiny:lama]", r"models\[0\]"),
    ("compressions: rtn", "compressions"),
    ("compressions: [{method: rnt}]", r"compressions\[0\].*did you mean 'rtn'"),
    ("compressions: [{method: rtn, bitz: 4}]", r"compressions\[0\].*'bitz'"),
    ("compressions: [{method: rtn, bits: four}]", r"compressions\[0\].*bits"),
    ("compressions: [{method: rtn, bits: 4.5}]", r"compressions\[0\].*bits"),
    ("compressions: [{method: rtn, bits: 1}]", r"compressions\[0\].*bits"),
    ("compressions: [{method: rtn, symmetric: 'no'}]", r"compressions\[0\].*symmetric"),
    ("compressions: [{method: wanda, nm: 2:4}]", r"compressions\[0\].*nm"),  # YAML reads 2:4 as 124
    ("compressions: [{bits: 4}]", r"compressions\[0\]"),  # no method: was silently the dense model
    ("compressions: [{label: d, method: dense}]", r"compressions\[0\]"),
    ("compressions: [dense, {label: [x], method: rtn}]", r"compressions\[1\].*label"),
    ("sweeps: [{method: wanda, param: sparsity, values: [a, b]}]", r"sweeps\[0\].*values"),
    ("sweeps: [{method: wanda, param: sparsity, values: 0.5}]", r"sweeps\[0\].*values"),
    ("sweeps: [{method: wanda, param: sparsity, values: [0.5, 1.5]}]", r"sweeps\[0\].*sparsity"),
    ("sweeps: [{method: wanda, param: sparsty, values: [0.5]}]", r"sweeps\[0\].*'sparsty'"),
    ("sweeps: [{method: wanda, param: sparsity, values: [0.5], scale: big}]", r"sweeps\[0\].*scale"),
    ("sweeps: {method: wanda}", "sweeps"),
    ("calibration: {n_samples: -4}", "calibration.*n_samples"),
    ("calibration: {n_samples: 0}", "calibration.*n_samples"),
    ("calibration: {seq_len: 0}", "calibration.*seq_len"),
    ("calibration: {n_samples: lots}", "calibration.*n_samples"),
    ("calibration: {nsamples: 4}", "calibration.*'nsamples'.*did you mean 'n_samples'"),
    ("calibration: 32", "calibration"),
    ("calibration: {source: /no/such/calibration.txt}", "calibration.*source"),
    ("data: /no/such/data/folder", "data"),
    ("data: [a]", "data"),
]


@pytest.mark.parametrize(("line", "key"), BAD_PLANS, ids=[line for line, _ in BAD_PLANS])
def test_every_bad_plan_is_refused_in_one_line_naming_file_and_key(tmp_path, line, key):
    path = tmp_path / "plan.yaml"
    path.write_text(f"models: [tiny:llama]\ntasks: [mmlu]\n{line}\n")
    with pytest.raises(SurefastError) as err:
        load_plan(path)
    assert type(err.value) is SurefastError
    assert err.value.message.startswith(f"{path}: ") and err.value.message.count(str(path)) == 1
    assert "\n" not in err.value.message
    assert re.search(key, str(err.value)), str(err.value)  # the message (and hint) name the key


def test_valid_plan_values_are_read_as_meant(tmp_path):
    """A string names one score (not its letters), comma lists work, null means the default,
    YAML's 1e-1 (a string in YAML 1.1) is a number, and bootstrap/skip_malformed reach the config."""
    plan = plan_from_dict(
        {
            "models": ["tiny:llama"],
            "score_fns": "lac",
            "alphas": ["1e-1", 0.05],
            "n": 200,
            "bootstrap": 0,
            "skip_malformed": True,
            "shots": None,
            "chat": False,
            "tasks": "mmlu,cosmosqa",
            "strategies": "shared",
            "calibration": {"n_samples": 4, "seq_len": 32},
        }
    )
    assert plan.bench.score_fns == ("lac",)
    assert plan.bench.alphas == (0.1, 0.05)
    assert plan.bench.n_boot == 0 and plan.bench.skip_malformed is True
    assert plan.bench.n_shots is None and plan.bench.chat is False
    assert plan.bench.tasks == ("mmlu", "cosmosqa") and plan.bench.strategies == ("shared",)
    assert plan_from_dict({"models": ["tiny:llama"], "score_fns": "lac, aps"}).bench.score_fns == ("lac", "aps")
    assert plan_from_dict({"models": ["tiny:llama"], "n": None}).bench.n == 2000  # `n:` with no value: the default


def test_example_plans_still_load():
    root = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(root.glob("*.yaml")):
        plan = load_plan(path)
        assert plan.jobs() and all(c.is_dense or c.config() for c in plan.compressions)


def test_study_run_of_a_bad_plan_prints_one_line_and_starts_nothing(tmp_path, monkeypatch, capsys, isolated_home):
    """`surefast study run bad.yaml`: the unknown method in the second compression is found
    before the dense job (which used to run first and then fail)."""
    import transformers

    from surefast.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a bad plan")

    # Patched where every model is built, not on surefast.models: a CLI module first imported
    # during this test would otherwise keep the patched load_model for the rest of the session.
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", no_model)
    path = tmp_path / "bad.yaml"
    path.write_text("models: [tiny:llama]\ntasks: [mmlu]\ncompressions: [dense, {label: x, method: rnt}]\n")
    with pytest.raises(SystemExit) as exit_:
        main(["study", "run", str(path), "--no-estimate"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    text = " ".join(err.split())  # Rich wraps at 80 columns when stderr is not a terminal
    assert text.startswith(f"error: {path}: compressions[1]") and "did you mean 'rtn'" in text
    assert "Traceback" not in err and err.count("error:") == 1
    assert not (isolated_home / "results" / "runs").exists()
