"""Packed folders: saved by ``save_compressed``, loaded by ``load_model`` as the packed model, no dense weight built."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from surefast.compress import compress_, make_config, save_compressed
from surefast.compress.lowbit import PackedLinear
from surefast.compress.lowbit.pack import pack_
from surefast.compress.quant.fake import codes_of, input_transforms
from surefast.compress.saved import JSON_NAME, PACKED_WEIGHTS
from surefast.errors import SurefastError
from surefast.models import load_model
from surefast.models.tiny import TEXT_ARCHITECTURES

CASES = {
    "rtn": dict(bits=4, group_size=32),
    "smoothquant": dict(),  # w8a8
    "quarot": dict(bits=4, act_bits=8, kv_bits=8, weight_method="rtn"),  # Hadamards, norm rotations, KV quantizers
    "gptq-asym": dict(bits=4, group_size=32, symmetric=False, act_order=False),
}


def _folders(tiny, tok, calib_ids, tmp_path, arch, case):  # type: ignore[no-untyped-def]
    """The same compressed model saved fake-quant (``fake``) and packed (``packed``)."""
    model = tiny(arch)
    result = compress_(model, make_config(case.split("-")[0], **CASES[case]), calib_ids)
    save_compressed(model, tok, result, tmp_path / "fake")
    report = pack_(model)  # after a dense save, the model still holds its codes (MoE experts included)
    save_compressed(model, tok, result, tmp_path / "packed")
    return tmp_path / "fake", tmp_path / "packed", report


def _logits(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_packed_folder_loads_as_the_packed_model(
    tiny, tiny_tok, calib_ids, probe_ids, tmp_path, monkeypatch, arch, case
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    fake, packed, report = _folders(tiny, tiny_tok, calib_ids, tmp_path, arch, case)
    assert (packed / PACKED_WEIGHTS).is_file() and not (packed / "model.safetensors").exists()
    recipe = json.loads((packed / JSON_NAME).read_text())["recipe"]
    assert list(recipe["packed"]) == [layer.name for layer in report.layers]
    dense, lm = load_model(str(fake), device="cpu"), load_model(str(packed), device="cpu")
    layers = {n: m for n, m in lm.model.named_modules() if isinstance(m, PackedLinear)}
    assert list(layers) == list(recipe["packed"]) and [m.spec for m in layers.values()] == [
        layer.spec for layer in report.layers
    ]
    assert sorted(input_transforms(lm.model)) == sorted(recipe["inputs"])
    assert torch.equal(_logits(lm.model, probe_ids), _logits(dense.model, probe_ids))  # bf16, bit for bit
    assert lm.fingerprint != dense.fingerprint


def test_fp32_loading_keeps_the_packed_scales_fp32(tiny, tiny_tok, calib_ids, probe_ids, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    fake, packed, _ = _folders(tiny, tiny_tok, calib_ids, tmp_path, "llama", "rtn")
    dense, lm = load_model(str(fake), device="cpu", dtype="fp32"), load_model(str(packed), device="cpu", dtype="fp32")
    assert lm.model.model.embed_tokens.weight.dtype == torch.float32
    assert {m.scales.dtype for m in lm.model.modules() if isinstance(m, PackedLinear)} == {torch.float32}
    assert torch.equal(_logits(lm.model, probe_ids), _logits(dense.model, probe_ids))


class _Allocations(TorchDispatchMode):
    """Every real (not meta) floating tensor any op creates, by shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and not t.is_meta and t.is_floating_point():
                self.shapes.append(tuple(t.shape))
        return out


def test_loading_never_allocates_a_dense_weight_of_a_packed_layer(tiny, tiny_tok, calib_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, packed, report = _folders(tiny, tiny_tok, calib_ids, tmp_path, "llama", "rtn")
    dense_shapes = {(layer.spec.out_features, layer.spec.in_features) for layer in report.layers}
    assert dense_shapes == {(64, 64), (32, 64), (128, 64), (64, 128)}  # no other tensor of tiny llama has these
    with _Allocations() as seen:
        lm = load_model(str(packed), device="cpu")
    assert seen.shapes and not dense_shapes & set(seen.shapes)
    assert len(report.layers) == sum(isinstance(m, PackedLinear) for m in lm.model.modules())
    assert not [n for n, p in lm.model.named_parameters() if p.is_meta]


def test_an_incomplete_packed_folder_is_one_line(tiny, tiny_tok, calib_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    _, packed, _ = _folders(tiny, tiny_tok, calib_ids, tmp_path, "llama", "rtn")
    tensors = load_file(str(packed / PACKED_WEIGHTS))
    del tensors["model.layers.1.mlp.down_proj.scales"]
    save_file(tensors, str(packed / PACKED_WEIGHTS))
    with pytest.raises(SurefastError, match=r"surefast_packed\.safetensors has no buffer model\.layers\.1\.mlp"):
        load_model(str(packed), device="cpu")
    (packed / JSON_NAME).unlink()  # no hook to load the weights at all
    with pytest.raises(SurefastError, match=r"left the weight model\.embed_tokens\.weight without a value"):
        load_model(str(packed), device="cpu")


def test_saving_a_moe_model_keeps_its_experts_hooks_and_codes(tiny, tiny_tok, calib_ids, probe_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the dense save fuses the experts for transformers and used to unfuse them anew, leaving
    # the in-memory model without its experts' activation quantizers and recorded codes
    model = tiny("qwen3_moe")
    result = compress_(model, make_config("smoothquant"), calib_ids)
    before = _logits(model, probe_ids)
    experts = {n for n in input_transforms(model) if ".experts." in n}
    save_compressed(model, tiny_tok, result, tmp_path / "fake")
    assert experts and experts <= set(input_transforms(model))
    assert torch.equal(_logits(model, probe_ids), before)
    assert all(codes_of(m) is not None for n, m in model.named_modules() if n in experts)


LOAD_PACKED_IN_A_FRESH_INTERPRETER = """
import sys
import torch
from surefast.models import load_model
lm = load_model(sys.argv[1], device="cpu")
assert "surefast.compress" in sys.modules
from surefast.compress.lowbit import PackedLinear
assert any(isinstance(m, PackedLinear) for m in lm.model.modules())
with torch.no_grad():
    print(lm.model(torch.tensor([[5, 6, 7]])).logits.shape)
"""


def test_a_packed_folder_loads_in_a_fresh_interpreter(tiny, tiny_tok, calib_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, packed, _ = _folders(tiny, tiny_tok, calib_ids, tmp_path, "llama", "smoothquant")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUREFAST_LOWBIT_KERNEL": "dequant-matmul"}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_PACKED_IN_A_FRESH_INTERPRETER, str(packed)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 3, 384])" in out.stdout


# --- the command line -----------------------------------------------------------------------


def test_compress_pack_info_and_generate(cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    out = tmp_path / "packed"
    args = ("--model", "tiny:llama", "--method", "gptq", "--group-size", "32", "--n-samples", "4", "--seq-len", "32")
    done = cli("compress", *args, "--pack", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "packed 14 layers (int4 x14)" in done.stdout and (out / PACKED_WEIGHTS).is_file()
    info = cli("models", "info", str(out))
    assert info.returncode == 0, info.stderr
    text = " ".join(info.stdout.split())
    assert "gptq (packed weights)" in text and "int4 x14" in text and "4-bit sym g32 x14" in text
    assert "packed layers 0.05 MB (bf16 0.15 MB, 0.31x)" in text
    dense = cli("models", "info", "tiny:llama")
    count = next(line for line in dense.stdout.splitlines() if "parameters" in line).split()[-2]
    packed_line = next(line for line in info.stdout.splitlines() if "parameters" in line)
    assert count in packed_line  # packed codes count as the weights they are
    said = cli("generate", "--model", str(out), "--max-new-tokens", "4", "hello")
    assert said.returncode == 0, said.stderr
    assert "tokens/s; weights" in said.stderr and "(packed: int4 x14)" in said.stderr  # what it cost, on stderr
    sq = ("--model", "tiny:llama", "--method", "smoothquant", "--n-samples", "4", "--seq-len", "32")
    w8a8 = cli("compress", *sq, "--pack-format", "w8a8", "--out", str(tmp_path / "w8a8"))  # --pack implied
    assert w8a8.returncode == 0 and "(w8a8 x14)" in w8a8.stdout, w8a8.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--method", "wanda", "--pack"), "error: --pack: wanda does not quantize weights"),
        (("--method", "gptq", "-o", "static_groups=False", "--pack"), "no contiguous group grid"),
        (("--method", "rtn", "-o", "symmetric=False", "--bits", "8", "--pack"), "8-bit asymmetric"),
        (("--method", "rtn", "--pack-format", "int5"), "error: --pack-format: unknown packed format 'int5'"),
        (("--method", "rtn", "--pack-head", "int9"), "error: --pack-head: unknown head format 'int9'"),
    ],
)
def test_compress_pack_refuses_before_the_model_loads(cli, monkeypatch, tmp_path, flags, says) -> None:  # type: ignore[no-untyped-def]
    import surefast.cli.compress

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded for bad input")

    monkeypatch.setattr(surefast.cli.compress, "compress_model", refuse)
    done = cli("compress", "--model", "tiny:llama", "--out", str(tmp_path / "out"), *flags)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
