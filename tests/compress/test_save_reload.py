"""Every method: a compressed tiny model saves, reloads (plus the JSON recipe) and scores identically."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from surefast.compress import compress_, make_config
from surefast.compress.saved import JSON_NAME, apply_saved_compression_, read_compression, save_compressed

CASES = {
    "rtn-w4a16": ("rtn", dict(bits=4, group_size=32)),
    "rtn-w4a4": ("rtn", dict(bits=4, group_size=32, act_bits=4)),
    "gptq-w4a16": ("gptq", dict(bits=4, group_size=32)),
    "awq-w4a16": ("awq", dict(bits=4, group_size=32)),
    "smoothquant-w8a8": ("smoothquant", dict()),
    "quarot-w4a4": ("quarot", dict(bits=4, act_bits=4)),
}


def _roundtrip(model, tok, result, tmp_path, probe_ids):  # type: ignore[no-untyped-def]
    before = model(probe_ids).logits
    save_compressed(model, tok, result, tmp_path)
    data = json.loads((tmp_path / JSON_NAME).read_text())
    assert data["fingerprint"] == result.fingerprint and data["config"]["method"] == result.config.method
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert apply_saved_compression_(reloaded, tmp_path) is not None
    after = reloaded(probe_ids).logits
    assert torch.equal(before, after) or (before - after).abs().max() < 1e-5
    return data


@pytest.mark.parametrize("case", list(CASES))
def test_save_reload_scores_identically(tiny, tiny_tok, calib_ids, probe_ids, tmp_path, case) -> None:  # type: ignore[no-untyped-def]
    name, kw = CASES[case]
    model = tiny("llama")
    result = compress_(model, make_config(name, **kw), calib_ids, base_fingerprint="base123")
    data = _roundtrip(model, tiny_tok, result, tmp_path, probe_ids)
    assert data["base_fingerprint"] == "base123"
    if "a4" in case or "a8" in case:
        assert data["recipe"]["inputs"]  # activation quantizers were recorded ...
        plain = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
        assert not torch.allclose(plain(probe_ids).logits, model(probe_ids).logits)  # ... and matter


def test_moe_save_reload(tiny, tiny_tok, calib_ids, probe_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny("qwen3_moe")
    result = compress_(model, make_config("rtn", bits=4, group_size=32, act_bits=8), calib_ids)
    data = _roundtrip(model, tiny_tok, result, tmp_path, probe_ids)
    assert data["recipe"]["unfused_experts"]


def test_folder_without_json_is_left_alone(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    assert read_compression(tmp_path) is None
    assert apply_saved_compression_(model, tmp_path) is None


def test_fingerprint_depends_on_config_and_data(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    a = compress_(tiny("llama"), make_config("gptq", group_size=32), calib_ids).fingerprint
    b = compress_(tiny("llama"), make_config("gptq", group_size=32), calib_ids).fingerprint
    c = compress_(tiny("llama"), make_config("gptq", group_size=32), calib_ids[:4]).fingerprint
    d = compress_(tiny("llama"), make_config("gptq", group_size=64), calib_ids).fingerprint
    assert a == b and len({a, c, d}) == 3


@pytest.mark.parametrize("arch", ["gemma3", "qwen3_moe"])
def test_quarot_with_online_rotations_and_kv_reloads(tiny, tiny_tok, calib_ids, probe_ids, tmp_path, arch) -> None:  # type: ignore[no-untyped-def]
    model = tiny(arch)
    model.lm_head.weight = model.get_input_embeddings().weight  # tied, as in the real Gemma3 models
    model.config.tie_word_embeddings = True
    result = compress_(model, make_config("quarot", bits=4, act_bits=8, kv_bits=8, weight_method="rtn"), calib_ids)
    data = _roundtrip(model, tiny_tok, result, tmp_path, probe_ids)
    assert data["recipe"]["kv_bits"] == 8
    if arch == "gemma3":
        assert len(data["recipe"]["norm_rotation"]["norms"]) == 4


def test_spinquant_gemma_reloads_with_learned_norm_rotation(tiny, tiny_tok, calib_ids, probe_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny("gemma3")
    cfg = make_config("spinquant", bits=4, act_bits=8, weight_method="rtn", steps=2)
    data = _roundtrip(model, tiny_tok, compress_(model, cfg, calib_ids), tmp_path, probe_ids)
    assert "matrix_b64" in data["recipe"]["norm_rotation"]


def test_compress_model_entry_point(tmp_path, probe_ids) -> None:  # type: ignore[no-untyped-def]
    """What `surefast compress --model tiny:llama --method gptq ...` calls."""
    from surefast.cli.compress import compress_model
    from surefast.compress import CalibrationConfig

    seen: list[str] = []
    cfg = make_config("gptq", bits=4, group_size=32)
    result = compress_model(
        "tiny:llama", cfg, CalibrationConfig(n_samples=2, seq_len=16), tmp_path, seen.append, dtype="fp32"
    )
    data = read_compression(tmp_path)
    assert data is not None and data["fingerprint"] == result.fingerprint and data["base_fingerprint"]
    assert data["calibration"]["n_samples"] == 2 and data["extra"]["model"] == "tiny:llama"
    assert any("block" in s for s in seen) and (tmp_path / "config.json").is_file()
