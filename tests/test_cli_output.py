"""What the CLI and the report print is what the model, the data and the user wrote (issue 14).

Model text, paths and data values reach the terminal verbatim (not as Rich markup), error
messages stay one line, plot labels are plain text (not mathtext), ``--max-new-tokens`` never
runs past the model's context, and bad ``--image`` files are refused in one line.
"""

from __future__ import annotations

import random
import re

import pytest

from surefast.errors import SurefastError

# What SmolLM2 wrote (Rich markup ate "[i]") and a chat tag that crashed Rich's markup parser.
MODEL_TEXT = "return arr[i] + arr[i]\n[/INST] hi :smile: [bold]x[/bold]\t" + "y" * 150


@pytest.mark.parametrize("command", ["generate", "demo"])
def test_model_text_is_printed_verbatim(cli, monkeypatch, command):
    import surefast.cli.demo as demo

    monkeypatch.setattr(demo, "greedy_answer", lambda model, tok, prompt, n: (MODEL_TEXT, 7))
    args = (
        ("generate", "--model", "tiny:llama@0", "hi") if command == "generate" else ("demo", "--model", "tiny:llama@0")
    )
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    assert f"{MODEL_TEXT}\n" in out.stdout  # brackets, emoji codes, tabs and the long line untouched


@pytest.mark.parametrize("policy", ["ar", "hf-assisted", "sage"])
def test_speculate_prints_model_text_verbatim(cli, monkeypatch, tmp_path, policy):
    """The transformers methods went through ``console.print``; the engine's stream must stay verbatim too."""
    import surefast.speculate.api as api
    from surefast.models.tiny import tiny_tokenizer
    from surefast.speculate.engine import SpeculativeDecoder
    from surefast.speculate.stats import SpecStats

    # The tiny tokenizer is byte-level: decode(encode(text)) == text, so the "model" writes MODEL_TEXT.
    tokens = tiny_tokenizer()(MODEL_TEXT, add_special_tokens=False)["input_ids"]
    real_generate = api.hf_generate  # what the harness runs for ar and hf-assisted

    def fake_generate(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        return type(out)(tokens, out.stats)

    def fake_stream(self, ids, max_new_tokens, eos_token_id="auto"):
        self.stats = SpecStats(method="sage", prompt_tokens=ids.shape[1], new_tokens=len(tokens))
        yield tokens[:5]
        yield tokens[5:]

    monkeypatch.setattr(api, "hf_generate", fake_generate)
    monkeypatch.setattr(SpeculativeDecoder, "stream", fake_stream)
    pair = ("--target", "tiny:llama@0", "--draft", "tiny:llama@0", "--dtype", "fp32")
    stats = tmp_path / "[/x]" / "stats.json"
    out = cli(
        "speculate",
        "hi",
        *pair,
        "--policy",
        policy,
        "--no-compare",
        "--max-new-tokens",
        "4",
        "--stats-json",
        str(stats),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{MODEL_TEXT}\n") and f"statistics written to {stats}" in out.stdout


def test_error_message_and_hint_are_printed_verbatim_on_one_line_each(cli, monkeypatch):
    import surefast.cli.demo as demo

    message = "row 3 of data/[/x]/items.jsonl: option [i] is " + "long " * 30
    hint = "fix [bold]row 3[/bold] or drop it: [/x]"

    def bad_spec(raw: str) -> None:
        raise SurefastError(message, hint)

    monkeypatch.setattr(demo, "parse_spec", bad_spec)
    out = cli("generate", "hi")
    assert out.returncode == 2
    assert out.stderr == f"error: {message}\nhint: {hint}\n"  # no MarkupError, no traceback, no wrapping


def test_a_path_with_markup_in_an_error(cli):
    out = cli("generate", "--model", "models/[/x]/m.gguf", "hi")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "models/[/x]/m.gguf" in out.stderr and out.stderr.startswith("error:")


def test_progress_descriptions_are_not_markup():
    """The library's progress callbacks name files and models; Rich read them as markup."""
    import io

    from rich.console import Console

    from surefast.cli.progress import progress_bar

    buf = io.StringIO()
    with progress_bar(Console(file=buf, force_terminal=True, width=200)) as update:
        update("reading models/[/x]/a[i].gguf", 1, 2)
    assert "reading models/[/x]/a[i].gguf" in buf.getvalue()


# --- plot labels are plain text --------------------------------------------------------------

LABELS = ["rtn-$\\frac$-cost", "w4_a8^2", "back\\slash", "$x^$", "$$"]


def _is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_every_plot_renders_labels_with_math_characters():
    from surefast.bench.analysis.cells import CellKey
    from surefast.bench.analysis.deltas import Delta
    from surefast.bench.analysis.thresholds import SweepJump
    from surefast.bench.report import plots

    points = []
    for i, label in enumerate(LABELS):
        key = CellKey(f"model_{label}", label, "task")
        acc = Delta(key, "accuracy", -0.01 * i, -0.02 * i - 0.01, 0.0, 0.5)
        size = Delta(key, "mean_set_size", 0.1 * i, 0.05 * i, 0.15 * i + 0.01, 2.0)
        points.append((key.model, label, acc, size))
    assert _is_png(plots.delta_scatter(points))
    jump = SweepJump(largest_step=0.5, largest_step_at=0.5, last_step_share=0.3, changepoint=0.5, jump_score=1.0)
    assert _is_png(
        plots.sweep_plot(f"{LABELS[0]} on {LABELS[1]}", [0.0, 0.5, 0.9], [1.0, 1.5, 2.0], [0.6, 0.5, 0.4], jump)
    )
    assert _is_png(plots.coverage_plot(LABELS, [0.9, 0.91, 0.89, 0.92, 0.88], 0.9))


# --- --max-new-tokens stops at the model's context ----------------------------------------------


@pytest.fixture
def short_context(monkeypatch):
    """Tiny models with a 40-position context (they are built at load time from this dict)."""
    import surefast.models.tiny as tiny

    monkeypatch.setitem(tiny._TEXT, "max_position_embeddings", 40)
    return 40


def test_greedy_answer_stops_at_the_context(short_context):
    from surefast.models.chat import encode_chat, greedy_answer
    from surefast.models.tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", 0), tiny_tokenizer()
    model.generation_config.eos_token_id = None  # count tokens, not luck: only the limit may stop it
    prompt_tokens = encode_chat(tok, "hi").shape[1]
    _, n = greedy_answer(model, tok, "hi", 200)
    assert n == short_context - prompt_tokens
    with pytest.raises(SurefastError, match="holds 40 positions"):
        greedy_answer(model, tok, "x" * 60, 4)


def test_generate_caps_max_new_tokens_with_a_note(cli, short_context, monkeypatch):
    import surefast.cli.demo as demo

    seen = []
    real = demo.greedy_answer
    monkeypatch.setattr(demo, "greedy_answer", lambda m, t, p, n: (seen.append(n), real(m, t, p, n))[1])
    # 200, not the 1e9: the old code would then run (until memory ran out) instead of failing.
    out = cli("generate", "--model", "tiny:llama@0", "--dtype", "fp32", "--max-new-tokens", "200", "hi")
    assert out.returncode == 0, out.stderr
    from surefast.models.chat import encode_chat
    from surefast.models.tiny import tiny_tokenizer

    room = short_context - encode_chat(tiny_tokenizer(), "hi").shape[1]
    assert seen == [room]
    assert f"--max-new-tokens 200 capped to {room}" in out.stderr and "40-position context" in out.stderr
    assert "Traceback" not in out.stderr


# --- bad --image files ---------------------------------------------------------------------------


def _bad_images(tmp_path):
    (tmp_path / "notes.txt").write_text("a cat sat on the mat\n")
    (tmp_path / "noise.png").write_bytes(random.Random(0).randbytes(4096))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    return {
        "notes.txt": "is a text file, not an image",
        "noise.png": "is in no image format PIL reads",
        "empty.png": "is empty (0 bytes)",
        "folder.png": "is a folder, not an image file",
    }


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the image checks must come first."""
    import surefast.cli.speculate as speculate

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the --image check")

    monkeypatch.setattr(speculate, "load_model", refuse)
    monkeypatch.setattr(speculate, "load_draft", refuse)


def test_speculate_refuses_bad_images_before_loading_models(cli, tmp_path, no_model_load):
    for name, problem in _bad_images(tmp_path).items():
        pair = ("--target", "tiny:qwen2_5_vl@0", "--draft", "tiny:qwen2_5_vl@1")
        out = cli("speculate", "what is this?", *pair, "--image", str(tmp_path / name))
        assert out.returncode == 2, (name, out.stderr)
        assert out.stderr.startswith(f"error: image {tmp_path / name} {problem}\n"), out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 2


def test_prepare_inputs_refuses_bad_image_files(tmp_path):
    from surefast.models.tiny import tiny_model, tiny_tokenizer
    from surefast.speculate.vlm import prepare_inputs

    model = tiny_model("qwen2_5_vl", 0)
    for name, problem in _bad_images(tmp_path).items():
        with pytest.raises(SurefastError, match=re.escape(f"image {tmp_path / name} {problem}")):
            prepare_inputs(tiny_tokenizer(), model, "what is this?", [str(tmp_path / name)])


def test_labels_and_names_in_tables_are_printed_verbatim(capsys):
    # Compression labels and model names come from plans and files: "[/x]" crashed the table printer
    # (MarkupError) and "[bold]" vanished.
    from surefast.bench.plan import plan_from_dict
    from surefast.cli.bench import print_summary
    from surefast.cli.study import print_cells

    label = "w4 [/x] [bold]rtn"
    print_summary([{"model": "m[i]", "compression": label, "task": "mmlu", "alpha": 0.1, "accuracy": 0.5}], "run [/r]")
    plan = plan_from_dict({"name": "s[/n]", "models": ["tiny:llama"], "compressions": ["dense"], "n": 20})
    print_cells(plan, None, None)
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    for text in ("w4 [/x] [bold]rtn", "m[i]", "run [/r]", "s[/n]"):
        assert text in out
