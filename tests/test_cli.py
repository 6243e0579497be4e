"""The command line: readable errors (no tracebacks), and the commands a newcomer types first."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "surefast", *args], capture_output=True, text=True)


def test_models_list_shows_the_registry():
    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    for name in ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        assert name in out.stdout
    assert "hf:org/name[@revision]" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("models", "pull", "smolm2"), "did you mean"),
        (("models", "info", "hf:bad"), "bad hub spec"),
        (("generate", "--model", "missing.gguf", "hi"), "GGUF file not found"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.startswith("error:")


def test_models_info_on_a_tiny_model():
    out = run("models", "info", "tiny:llama@1", "--dtype", "fp32")
    assert out.returncode == 0, out.stderr
    assert "llama" in out.stdout and "fingerprint" in out.stdout


def test_compress_takes_any_config_field_as_an_option(tmp_path):
    out = run(
        "compress",
        "--model",
        "tiny:llama@1",
        "--method",
        "gptq",
        "--out",
        str(tmp_path / "m"),
        "--dtype",
        "fp32",
        "--n-samples",
        "2",
        "--seq-len",
        "16",
        "-o",
        "act_order=False",
        "-o",
        "damp=0.05",
    )
    assert out.returncode == 0, out.stderr
    import json

    config = json.loads((tmp_path / "m" / "surefast_compression.json").read_text())["config"]
    assert config["act_order"] is False and config["damp"] == 0.05 and config["clip_search"] is True
    bad = run(
        "compress", "--model", "tiny:llama@1", "--method", "gptq", "--out", str(tmp_path / "n"), "-o", "clip_serch=True"
    )
    assert bad.returncode == 2 and "did you mean 'clip_search'" in bad.stderr and "Traceback" not in bad.stderr
