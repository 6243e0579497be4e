"""SmolLM2-135M, packed: the fake-quant model's logits (dequant-matmul) and its greedy answer (the chosen kernels).

In the default suite, like tests/test_real_model_smoke.py: the model is pulled once into the
real cache (~100 MB) and reused; RTN needs no calibration, so the whole test takes seconds.
"""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_, make_config
from surefast.compress.lowbit import PackedLinear, choice
from surefast.compress.lowbit.pack import pack_
from surefast.models import load_model
from surefast.models.chat import greedy_answer

PROMPT = "What is the capital of France?"


@pytest.mark.usefixtures("real_home")
def test_smollm2_packed_answers_exactly_as_its_fake_quant_model(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(choice, "cache_file", lambda: tmp_path / "kernels.json")  # the real cache holds models only
    lm = load_model("smollm2-135m-instruct", device="cpu")
    compress_(lm.model, make_config("rtn", bits=4, group_size=128))  # 576 inputs: groups of 128 and a last of 64
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = lm.model(ids).logits
    want, _ = greedy_answer(lm.model, lm.tokenizer, PROMPT, max_new_tokens=16)

    report = pack_(lm.model)
    assert len(report.layers) == 30 * 7 and report.weight_bytes < 0.33 * report.dense_bytes
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, ref)  # bf16 logits, bit for bit
    monkeypatch.delenv("SUREFAST_LOWBIT_KERNEL")
    got, _ = greedy_answer(lm.model, lm.tokenizer, PROMPT, max_new_tokens=16)  # the kernels chosen here
    assert got == want and "Paris" in got
    chosen = {k for m in lm.model.modules() if isinstance(m, PackedLinear) for k in m.chosen_kernels().values()}
    assert chosen  # measured on this machine (int4-cpu / dense here); the lead's benchmark reports which
