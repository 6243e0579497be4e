"""Real packaged models (slow): rotations are exact on real weights; a GPTQ model round-trips."""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_, make_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"])
def test_quarot_rotation_exact_on_real_model(real_home, name) -> None:  # type: ignore[no-untyped-def]
    from surefast.models import load_model

    lm = load_model(name, dtype="fp32", device="cpu")
    ids = lm.tokenizer("def add(a, b):\n    return a + b\n", return_tensors="pt")["input_ids"]
    ref = lm.model(ids).logits
    compress_(lm.model, make_config("quarot", quantize=False))
    assert (lm.model(ids).logits - ref).abs().max() < 1e-3 * ref.abs().max()


def test_gptq_real_model_saves_and_reloads(real_home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from surefast.cli.compress import compress_model
    from surefast.compress.calibration_data import CalibrationConfig
    from surefast.compress.saved import apply_saved_compression_

    cfg = make_config("rtn", bits=4, group_size=128, act_bits=8)
    result = compress_model(
        "smollm2-135m-instruct", cfg, CalibrationConfig(n_samples=4, seq_len=64), tmp_path, dtype="fp32"
    )
    assert result.fingerprint and (tmp_path / "surefast_compression.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    apply_saved_compression_(model, tmp_path)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.isfinite(model(ids).logits).all()
