"""``surefast speculate``: streams the answer, prints the statistics and the speed-up, clear errors."""

from __future__ import annotations

import json
import math

import pytest

from surefast.cli.speculate import explain_divergence, parse_options, sparkline, stats_table
from surefast.errors import SurefastError
from surefast.speculate import speculative_generate
from surefast.speculate.divergence import Divergence


@pytest.fixture
def run(cli):
    """Run ``surefast speculate ARGS`` in this process: (return code, stdout, stderr)."""
    return lambda *args: cli("speculate", *args)


def test_speculate_streams_and_compares_with_the_target(run, tmp_path):
    stats = tmp_path / "stats.json"
    out = run(
        "hello",
        "--target",
        "tiny:llama@0",
        "--draft",
        "tiny:llama@0",
        "--dtype",
        "fp32",
        "--max-new-tokens",
        "12",
        "-o",
        "budget=6",
        "--stats-json",
        str(stats),
    )
    assert out.returncode == 0, out.stderr
    assert "tokens per target forward" in out.stdout and "speed-up" in out.stdout and "same output" in out.stdout
    payload = json.loads(stats.read_text())
    assert payload["identical_to_ar"] is True and payload["policy"] == "sage"
    assert payload["stats"]["new_tokens"] == 12 and payload["baseline"]["method"] == "ar"
    assert len(payload["stats"]["step_records"]) == payload["stats"]["steps"]


@pytest.mark.parametrize("policy", ["assisted", "chain"])
def test_every_kind_of_method_warms_up_and_compares(run, policy):
    out = run(
        "hi",
        "--target",
        "tiny:llama@0",
        "--draft",
        "tiny:llama@1",
        "--policy",
        policy,
        "--max-new-tokens",
        "6",
        "--dtype",
        "fp32",
    )
    assert out.returncode == 0, out.stderr
    assert "speed-up" in out.stdout and "same output" in out.stdout


def test_a_divergence_is_explained_as_a_tie_or_flagged():
    tie = explain_divergence(Divergence(position=51, top2_margin=0.125, tolerance=0.3), "bf16")
    assert "new token 51" in tie and "rounding tie" in tie and "0.125" in tie
    bug = explain_divergence(Divergence(position=3, top2_margin=2.5, tolerance=0.3), "bf16")
    assert "should not happen" in bug and "2.500" in bug


def test_speculate_hf_assisted_without_comparison(run):
    out = run(
        "hi",
        "--target",
        "tiny:llama@0",
        "--draft",
        "tiny:llama@1",
        "--policy",
        "assisted",
        "--no-compare",
        "--max-new-tokens",
        "6",
        "--dtype",
        "fp32",
    )
    assert out.returncode == 0, out.stderr
    assert "hf-assisted" in out.stdout and "speed-up" not in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--policy", "sagee"), "did you mean 'sage'"),
        (("-o", "budgt=3"), "did you mean 'budget'"),
        (("-o", "budget"), "is not KEY=VALUE"),
        (("--policy", "ar", "-o", "budget=3"), "does not apply"),
        (("--target", "nope.gguf"), "GGUF file not found"),
    ],
)
def test_speculate_errors_are_one_line(run, args, message):
    out = run("hi", "--target", "tiny:llama@0", "--draft", "tiny:llama@1", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_parse_options_and_sparkline_goldens():
    assert parse_options(["budget=16", "smoothing=0.25", "paths=((0,), (1,))"]) == {
        "budget": 16,
        "smoothing": 0.25,
        "paths": ((0,), (1,)),
    }
    with pytest.raises(SurefastError, match="not a Python literal"):
        parse_options(["budget=sixteen"])
    assert sparkline([0.0, 1.0, math.nan]) == "▁█ "
    assert sparkline([0.0, 0.0, 1.0, 1.0], width=2) == "▁█"  # averaged down to the width
    assert sparkline([]) == ""


def test_stats_table_shows_the_speedup(tiny):
    model = tiny("llama", seed=0)
    spec = speculative_generate(model, model, [[3, 4, 5]], method="chain", max_new_tokens=8, eos_token_id=None)
    ar = speculative_generate(model, None, [[3, 4, 5]], method="ar", max_new_tokens=8, eos_token_id=None)
    table = stats_table(spec.stats, ar.stats, identical=spec.tokens == ar.tokens)
    cells = [str(c) for col in table.columns for c in col._cells]
    assert any("speed-up" in c for c in cells) and any("same output" in c for c in cells)
    assert any(c.startswith(f"{spec.stats.tokens_per_forward:.2f}") for c in cells)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava_onevision"])
def test_speculate_vlm_with_an_image(run, tmp_path, arch):
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype="uint8")).save(tmp_path / "cat.png")
    out = run(
        "what is in the picture?",
        "--target",
        f"tiny:{arch}@0",
        "--draft",
        f"tiny:{arch}@1",
        "--image",
        str(tmp_path / "cat.png"),
        "--prune-ratio",
        "0.5",
        "--max-new-tokens",
        "10",
        "--dtype",
        "fp32",
    )
    assert out.returncode == 0, out.stderr
    assert "same output" in out.stdout and "visual tokens" in out.stderr
    missing = run("hi", "--target", f"tiny:{arch}@0", "--draft", f"tiny:{arch}@1", "--image", "nope.png")
    assert missing.returncode == 2 and "nope.png not found" in missing.stderr


@pytest.fixture
def harness_calls(monkeypatch):
    """The (args, kwargs) of every call the command makes to the library's ``compare`` (which still runs)."""
    import surefast.cli.speculate as speculate

    calls = []
    real = speculate.compare

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(speculate, "compare", spy)
    return calls


@pytest.mark.parametrize(("flags", "both"), [(("--seed", "4"), True), (("--seed", "4", "--no-compare"), False)])
def test_the_command_runs_the_library_harness(run, harness_calls, flags, both):
    """``surefast speculate`` is argument handling and printing around one call of ``compare``."""
    pair = ("--target", "tiny:llama@0", "--draft", "tiny:llama@1", "--dtype", "fp32", "--max-new-tokens", "5")
    out = run("hi", *pair, "--policy", "chain", *flags)
    assert out.returncode == 0, out.stderr
    ((args, kwargs),) = harness_calls
    assert args[3] == "chain" and kwargs["seed"] == 4 and kwargs["max_new_tokens"] == 5 and kwargs["prune"] is None
    assert kwargs["warm_up"] is both and kwargs["baseline"] is both and ("speed-up" in out.stdout) is both


def test_an_image_prompt_runs_the_same_harness(run, harness_calls, tmp_path):
    """Visual prompts go through ``compare`` too, warm-up included (before, only text prompts were warmed up)."""
    import numpy as np
    from PIL import Image

    from surefast.speculate.vlm import VisualInputs

    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    pair = ("--target", "tiny:qwen2_5_vl@0", "--draft", "tiny:qwen2_5_vl@1", "--dtype", "fp32")
    out = run("what?", *pair, "--image", str(tmp_path / "x.png"), "--prune-ratio", "0.5", "--max-new-tokens", "4")
    assert out.returncode == 0, out.stderr
    ((args, kwargs),) = harness_calls
    assert isinstance(args[2], VisualInputs) and kwargs["prune"].ratio == 0.5 and kwargs["warm_up"] is True


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: bad settings must be refused before the models load."""
    import surefast.cli.speculate as speculate

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(speculate, "load_model", refuse)
    monkeypatch.setattr(speculate, "load_draft", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "budget"), "--option 'budget' is not KEY=VALUE"),
        (("-o", "=3"), "--option '=3' is not KEY=VALUE"),
        (("-o", "budget=abc"), "--option 'budget=abc': 'abc' is not a Python literal"),
        (("-o", "x={[1]: 2}"), "--option 'x={[1]: 2}'"),  # literal_eval's TypeError
        (("-o", "budgte=16"), "policy 'sage' has no option 'budgte'"),  # hint: did you mean 'budget'?
        (("-o", "budget=-1"), "sage option budget=-1: must be a whole number >= 1"),
        (("-o", "budget=1.5"), "sage option budget=1.5: must be a whole number"),
        (("-o", "budget=True"), "sage option budget=True"),
        (("-o", "budget=None"), "sage option budget=None"),
        (("-o", "smoothing='a'"), "sage option smoothing='a'"),
        (("-o", "smoothing=1.0"), "sage option smoothing=1.0: must be a finite number in [0, 1)"),
        (("-o", "min_depth=3", "-o", "max_depth=2"), "sage option max_depth=2"),
        (("--policy", "static-tree", "-o", "paths=((0,),(5,))"), "static-tree option paths=((0,), (5,)): children"),
        (("--policy", "static-tree", "-o", "paths=5"), "static-tree option paths=5"),
        (("--policy", "static-tree", "-o", "paths=()"), "static-tree option paths=()"),
        (("--policy", "dynamic", "-o", "width=0"), "dynamic option width=0"),
        (("--policy", "chain", "-o", "depth=-2"), "chain option depth=-2"),
        (("-o", "temperature=0.5"), "-o temperature: not a policy setting but a flag"),
        (
            ("--policy", "chain", "-o", "budget=3"),
            "policy 'chain' has no option 'budget' (a setting of dynamic, sage and conformal)",
        ),
        (("--top-p", "0"), "sampling top_p=0.0"),
        (("--draft", "self:layers=x"), "--draft self:layers=x: K must be a whole number"),
        (("--draft", "self:int3"), "unknown self-draft 'self:int3'"),
        (("--draft", "ngram", "--draft-compress", "int4"), "--draft-compress applies to a draft model"),
        (("--draft-compress", "int2"), "--draft-compress 'int2': unknown"),
        (("--draft", "ngram", "--policy", "hf-assisted"), "hf-assisted needs a draft model"),
        (("--draft", "./no/such/folder"), "no such model folder"),
    ],
)
def test_speculate_bad_options_are_one_line_before_any_model_loads(run, no_model_load, args, message):
    out = run("hi", "--target", "tiny:llama@0", "--draft", "tiny:llama@1", *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and message in out.stderr.splitlines()[0], out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 2


def test_speculate_max_width_zero_is_one_line(run, no_model_load):
    """Issue 14, section 4: ``surefast speculate -o max_width=0 "hi"`` ended in SageConfig's ValueError."""
    out = run("hi", "-o", "max_width=0")
    assert out.returncode == 2
    assert out.stderr.startswith("error: sage option max_width=0: must be a whole number >= 1\nhint: ")
    assert "Traceback" not in out.stderr and "ValueError" not in out.stderr


@pytest.fixture
def short_context(monkeypatch):
    """Tiny models with a 40-position context (they are built at load time from this dict)."""
    import surefast.models.tiny as tiny

    monkeypatch.setitem(tiny._TEXT, "max_position_embeddings", 40)
    return 40


@pytest.mark.parametrize("policy", ["sage", "ar", "hf-assisted"])
def test_speculate_stops_at_the_context(run, tmp_path, short_context, policy):
    from surefast.models.chat import encode_chat
    from surefast.models.tiny import tiny_tokenizer

    room = short_context - encode_chat(tiny_tokenizer(), "hi").shape[1]
    stats = tmp_path / "stats.json"
    pair = ("--target", "tiny:llama@0", "--draft", "tiny:llama@0", "--dtype", "fp32")
    out = run("hi", *pair, "--policy", policy, "--max-new-tokens", "200", "--stats-json", str(stats))
    assert out.returncode == 0, out.stderr
    assert f"--max-new-tokens 200 capped to {room}" in out.stderr and "40-position context" in out.stderr
    payload = json.loads(stats.read_text())
    assert payload["stats"]["new_tokens"] == room  # this seed writes no EOS: only the cap stops it
    if payload["baseline"] is not None:
        assert payload["baseline"]["new_tokens"] == room


def test_speculate_refuses_a_prompt_that_fills_the_context(run, short_context):
    out = run("x" * 60, "--target", "tiny:llama@0", "--draft", "tiny:llama@0", "--dtype", "fp32")
    assert out.returncode == 2 and "no new token fits" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ("--draft", "self:layers=1"),
        ("--draft", "self:int4"),
        ("--draft", "ngram"),
        ("--draft", "tiny:qwen2@1", "--draft-compress", "int4"),
        ("--draft", "tiny:qwen2@1", "--no-ngram", "--no-adapt", "--policy", "conformal"),
        ("--draft", "ngram", "--policy", "hf-lookup"),
    ],
)
def test_every_draft_kind_from_the_command_line(run, tmp_path, flags):
    stats = tmp_path / "stats.json"
    args = ("--target", "tiny:qwen2@0", "--dtype", "fp32", "--max-new-tokens", "10", "--stats-json", str(stats))
    out = run("say something twice, say something twice", *args, *flags)
    assert out.returncode == 0, out.stderr
    assert "same output" in out.stdout
    payload = json.loads(stats.read_text())
    assert payload["identical_to_ar"] is True
    if "--no-adapt" in flags or "hf-lookup" in flags:
        assert not payload["stats"]["plan"]
    else:
        assert payload["stats"]["plan"]["steps"] == payload["stats"]["steps"]


def test_plan_prints_expected_speedups_and_stops(run):
    out = run("hi there, hi there", "--target", "tiny:qwen2@0", "--draft", "tiny:qwen2@1", "--dtype", "fp32", "--plan")
    assert out.returncode == 0, out.stderr
    assert "expected speed-up" in out.stdout and "ngram" in out.stdout and "conformal" in out.stdout
    assert "statistics" not in out.stdout  # nothing was generated
    assert "target forward ms by tokens" in out.stdout


def test_machine_report_prints_the_cost_curve(run):
    out = run("--target", "tiny:qwen2@0", "--machine-report")  # no prompt needed
    assert out.returncode == 0, out.stderr
    assert "k=16" in out.stdout and "bf16" in out.stdout and "fp32" in out.stdout
    assert "a 16-token forward costs" in out.stdout


def test_a_missing_prompt_is_one_line(run):
    out = run("--target", "tiny:qwen2@0")
    assert out.returncode == 2 and out.stderr.startswith("error: give a prompt"), out.stderr
