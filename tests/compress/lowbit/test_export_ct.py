"""compressed-tensors export and import, checked against the compressed-tensors package itself.

Its own decompressor (``PackedQuantizationCompressor`` / ``IntQuantizationCompressor``) and
transformers' loader read our folders; its own ``ModelCompressor`` writes the folders our reader
reads. Without the package (a dev extra) those tests skip; the pure layout tests still run.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.export_ct import (
    CTScheme,
    export_compressed_tensors,
    pack_int32,
    unpack_int32,
    whole_groups,
)
from surefast.compress.lowbit.import_ct import read_compressed_tensors
from surefast.compress.quant.fake import fake_quant_weight, install_act_quant_, install_input_transform_, weight_qparams
from surefast.errors import SurefastError

BF16_U = 2.0**-8  # bf16's unit roundoff (8 significant bits)


def small_llama(dtype: torch.dtype = torch.float32, seed: int = 0):
    """A tiny llama whose inputs (256 and 320) give whole groups of 32/64/128 and, at 128, a partial one."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from surefast.models.tiny import TINY_VOCAB

    config = AutoConfig.for_model(
        "llama",
        vocab_size=TINY_VOCAB,
        hidden_size=256,
        intermediate_size=320,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        initializer_range=0.1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(dtype).eval()


def record_rtn(model, bits: int, group_size: int, symmetric: bool) -> dict[str, QuantizedWeight]:
    """Round every decoder linear to nearest (fake.py's grid), record its codes, write the fake-quant weight."""
    codes = {}
    for name, lin in model.named_modules():
        if not (isinstance(lin, torch.nn.Linear) and ".layers." in name):
            continue
        w = lin.weight.detach().float()
        scale, zero = weight_qparams(w, bits, group_size, symmetric)  # [out, n_groups, 1]
        g = w.shape[1] if group_size <= 0 or group_size >= w.shape[1] else group_size
        index = torch.arange(w.shape[1]) // g
        s, z = scale[:, index, 0], zero[:, index, 0]
        if symmetric:
            q = torch.clamp(torch.round(w / s), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        else:
            q = torch.clamp(torch.round(w / s) + z, 0, 2**bits - 1)
        qw = QuantizedWeight(q.to(torch.int8), scale[..., 0], None if symmetric else zero[..., 0], bits, g)
        assert torch.equal(qw.dequantize(), fake_quant_weight(w, bits, group_size, symmetric))  # the contract
        lin.weight.data.copy_(qw.dequantize().to(lin.weight.dtype))
        codes[name] = qw
    return codes


def layer_state(folder, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    return {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}


def ct_scheme(folder, name: str):
    """compressed-tensors' own parse of the config group that targets ``name``."""
    from compressed_tensors.quantization import QuantizationConfig

    qc = QuantizationConfig.model_validate(json.loads((folder / "config.json").read_text())["quantization_config"])
    for scheme in qc.config_groups.values():
        if name in scheme.targets or "Linear" in scheme.targets:
            return scheme
    raise AssertionError(f"no group targets {name}")


# --- the pure layout, against compressed-tensors' own packing ---------------------------------
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("cols", [1, 7, 8, 37, 64])
def test_pack_int32_is_compressed_tensors_packing(bits, cols):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    g = torch.Generator().manual_seed(cols)
    unsigned = torch.randint(0, 2**bits, (5, cols), generator=g)
    signed = (unsigned - 2 ** (bits - 1)).to(torch.int8)  # compressed-tensors packs the signed codes
    ours = pack_int32(unsigned, bits)
    assert torch.equal(ours, helpers.pack_to_int32(signed, bits))
    assert torch.equal(ours.T, helpers.pack_to_int32(signed.T.contiguous(), bits, packed_dim=0))  # zero points
    assert torch.equal(unpack_int32(ours, bits, cols), unsigned)


def test_unpack_inverts_pack_without_the_package():
    """The nibble order, written out: code i of a word at bits 4i..4i+3 (compressed-tensors' helpers.py)."""
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15, 9]])
    packed = pack_int32(codes, 4)
    assert packed.shape == (1, 2) and packed.dtype == torch.int32
    assert packed[0, 0].item() == 0xF7654321 - 2**32  # the top nibble sets the sign bit
    assert packed[0, 1].item() == 9
    assert torch.equal(unpack_int32(packed, 4, 9), codes)


def test_partial_last_group_is_regrouped_exactly():
    """576 inputs at group 128 (SmolLM2): written as group 64, scales repeated, the same weights."""
    w = torch.randn(8, 576, generator=torch.Generator().manual_seed(0))
    s, z = weight_qparams(w, 4, 128, False)
    index = torch.arange(576) // 128
    q = torch.clamp(torch.round(w / s[:, index, 0]) + z[:, index, 0], 0, 15)
    qw = QuantizedWeight(q.to(torch.int8), s[..., 0], z[..., 0], 4, 128)
    group, scales, zeros = whole_groups(qw)
    assert group == 64 and scales.shape == (8, 9)
    assert torch.equal(QuantizedWeight(qw.codes, scales, zeros, 4, 64).dequantize(), qw.dequantize())


# --- compressed-tensors reads our export --------------------------------------------------------
GRIDS = [  # (bits, group_size, symmetric): int4 at 32/64/128 both ways, int8 per channel (weight-only)
    (4, 32, True),
    (4, 64, False),
    (4, 128, True),
    (4, 128, False),
    (8, -1, True),
]


@pytest.mark.parametrize(("bits", "group", "sym"), GRIDS)
def test_compressed_tensors_decompresses_exactly_our_weights(tmp_path, bits, group, sym):
    """fp32 scales on disk: its decompressor returns ``QuantizedWeight.dequantize()`` bit for bit."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import PackedQuantizationCompressor

    model = small_llama()
    codes = record_rtn(model, bits, group, sym)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_compressed_tensors(model, codes, None, tmp_path / "ct", scale_dtype=torch.float32)
    messages = [str(w.message) for w in caught]
    if group == 128:  # the two down_proj (320 inputs): one warning for both
        assert messages == [
            "2 layers with 320 inputs (the first: model.layers.0.mlp.down_proj) are not whole groups of 128: "
            "written with group 64, each scale repeated (the same weights); compressed-tensors needs whole groups"
        ]
    else:
        assert messages == []
    for name, qw in codes.items():
        scheme = ct_scheme(out, name)
        assert scheme.format == "pack-quantized"
        state = layer_state(out, name)
        assert ("weight_zero_point" in state) == (not sym)
        weight = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
        assert torch.equal(weight, qw.dequantize()), name


@pytest.mark.parametrize(("bits", "group", "sym"), GRIDS)
def test_our_reader_gets_our_codes_back(tmp_path, bits, group, sym):
    model = small_llama()
    codes = record_rtn(model, bits, group, sym)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the regrouping warning, checked above
        export_compressed_tensors(model, codes, None, tmp_path / "ct", scale_dtype=torch.float32)
    back = read_compressed_tensors(tmp_path / "ct")
    assert set(back.codes) == set(codes)
    for name, qw in codes.items():
        got = back.codes[name]
        assert torch.equal(got.codes, qw.codes) and torch.equal(got.dequantize(), qw.dequantize()), name
        if got.group_size == qw.group_size:  # else regrouped: finer groups, the same weights
            assert torch.equal(got.scales, qw.scales)
            assert (got.zeros is None) == sym and (sym or torch.equal(got.zeros, qw.zeros))
    state = model.state_dict()
    assert set(back.tensors) == {k for k in state if k.rsplit(".", 1)[0] not in codes}
    assert all(torch.equal(back.tensors[k], state[k]) for k in back.tensors)


def test_transformers_loads_our_fp32_export_bit_for_bit(tmp_path, tiny_tok):
    """The whole folder through ``from_pretrained`` (how vLLM users check a checkpoint on CPU):
    fp32 weights equal ours, so the logits do too. Symmetric: transformers 5.24 + compressed-tensors
    0.20.1 cannot load asymmetric pack-quantized folders at all, theirs included (llm-compressor#1618)."""
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM

    model = small_llama()
    model.config.tie_word_embeddings = True  # SmolLM2's shape: lm_head is the embedding, stored once
    model.lm_head.weight = model.model.embed_tokens.weight
    codes = record_rtn(model, 4, 128, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_compressed_tensors(model, codes, tiny_tok, tmp_path / "ct")
    assert layer_state(tmp_path / "ct", "lm_head") == {}  # tied: written once, as the embedding
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)  # the first forward de-compresses
    for name, qw in codes.items():
        assert torch.equal(loaded.get_submodule(name).weight, qw.dequantize()), name
    assert (tmp_path / "ct" / "tokenizer.json").is_file()


def test_bf16_export_rounds_only_the_scales(tmp_path):
    """Default scale dtype = the model's (bf16), as llm-compressor writes and transformers allocates:
    the served weight is ``bf16((q - z) * bf16(s))`` against our ``bf16((q - z) * s)``. Bound:
    ``|bf16(s) - s| <= u |s|`` and one rounding each side: ``|served - ours| <= 3u(1 + u) |(q - z) s|``,
    u = 2^-8."""
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM

    model = small_llama(torch.bfloat16)
    codes = record_rtn(model, 4, 64, True)
    export_compressed_tensors(model, codes, None, tmp_path / "ct")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.bfloat16)
    with torch.no_grad():
        loaded(torch.zeros(1, 1, dtype=torch.long))  # de-compress
    changed = 0
    for name, qw in codes.items():
        served = loaded.get_submodule(name).weight.float()
        index = torch.arange(qw.shape[1]) // qw.group_size
        expected = (qw.codes.float() * qw.scales.bfloat16().float()[:, index]).bfloat16().float()
        assert torch.equal(served, expected), name  # exactly the scale's rounding, nothing else
        exact = qw.dequantize()
        bound = 3 * BF16_U * (1 + BF16_U) * exact.abs()
        assert ((served - exact.bfloat16().float()).abs() <= bound).all(), name
        changed += int((served != exact.bfloat16().float()).sum())
    assert changed > 0  # the bound is not vacuous: bf16 scales do move some weights


def test_w8a8_is_int_quantized_with_dynamic_token_activations(tmp_path):
    """SmoothQuant's W8A8: int8 per-channel weights, 8-bit per-token activations -> "int-quantized"."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import IntQuantizationCompressor

    model = small_llama()
    codes = record_rtn(model, 8, -1, True)
    install_act_quant_({n: model.get_submodule(n) for n in codes}, 8)
    out = export_compressed_tensors(model, codes, None, tmp_path / "ct", scale_dtype=torch.float32)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "int-quantized" and qc["ignore"] == ["lm_head"]
    acts = qc["config_groups"]["group_0"]["input_activations"]
    assert acts["strategy"] == "token" and acts["dynamic"] is True and acts["num_bits"] == 8 and acts["symmetric"]
    for name, qw in codes.items():
        state = layer_state(out, name)
        assert state["weight"].dtype == torch.int8 and state["weight_scale"].shape == (qw.shape[0], 1)
        weight = IntQuantizationCompressor.decompress(state, ct_scheme(out, name))["weight"]
        assert torch.equal(weight, qw.dequantize()), name
    back = read_compressed_tensors(out)
    assert all(back.schemes[n] == CTScheme(8, None, True, act_bits=8) for n in codes)
    assert all(torch.equal(back.codes[n].codes, codes[n].codes) for n in codes)


# --- our reader reads compressed-tensors' own files ---------------------------------------------
def ct_written(tmp_path, scheme_kwargs: dict, acts: dict | None = None):
    """A folder written by compressed-tensors itself (llm-compressor's save path), with min-max scales."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    model = small_llama(torch.bfloat16)
    args = QuantizationArgs(**scheme_kwargs)
    scheme = QuantizationScheme(
        targets=["Linear"], weights=args, input_activations=QuantizationArgs(**acts) if acts else None
    )
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    expected = {}
    for name, lin in model.named_modules():
        if not hasattr(lin, "weight_scale"):
            continue
        w = lin.weight.detach()
        view = w.reshape(w.shape[0], -1, args.group_size) if args.group_size else w.unsqueeze(1)
        scale, zp = calculate_qparams(view.amin(-1), view.amax(-1), args)
        lin.weight_scale.data.copy_(scale.reshape(lin.weight_scale.shape))
        zero = None
        if not args.symmetric:
            lin.weight_zero_point.data.copy_(torch.round(zp).reshape(lin.weight_zero_point.shape))
            zero = lin.weight_zero_point
        q = quantize(w, lin.weight_scale, zero, args, dtype=torch.int8)  # its codes, signed
        expected[name] = (q, lin.weight_scale.detach().float().clone(), None if zero is None else zero.clone())
        lin.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(tmp_path / "theirs")
    compressor.update_config(tmp_path / "theirs")
    return tmp_path / "theirs", expected


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_bits=4, strategy="group", group_size=32, symmetric=True),
        dict(num_bits=4, strategy="group", group_size=64, symmetric=False),
        dict(num_bits=8, strategy="channel", symmetric=True),
    ],
)
def test_reader_gets_compressed_tensors_codes(tmp_path, kwargs):
    pytest.importorskip("compressed_tensors")
    folder, expected = ct_written(tmp_path, kwargs)
    back = read_compressed_tensors(folder)
    assert set(back.codes) == set(expected)
    offset = 0 if kwargs["symmetric"] else 2 ** (kwargs["num_bits"] - 1)
    for name, (q, scale, zero) in expected.items():
        got = back.codes[name]
        assert torch.equal(got.codes.to(torch.int64), q.to(torch.int64) + offset), name
        assert torch.equal(got.scales, scale.reshape(got.scales.shape)), name
        if zero is None:
            assert got.zeros is None
        else:
            assert torch.equal(got.zeros, zero.float().reshape(got.zeros.shape) + offset), name


def test_reader_gets_compressed_tensors_w8a8(tmp_path):
    pytest.importorskip("compressed_tensors")
    weights = dict(num_bits=8, strategy="channel", symmetric=True)
    acts = dict(num_bits=8, strategy="token", symmetric=True, dynamic=True)
    folder, expected = ct_written(tmp_path, weights, acts)
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["format"] == "int-quantized"
    back = read_compressed_tensors(folder)
    for name, (q, scale, _) in expected.items():
        assert back.schemes[name].act_bits == 8
        assert torch.equal(back.codes[name].codes, q) and torch.equal(back.codes[name].scales, scale), name


# --- refusals ----------------------------------------------------------------------------------
def test_refusals_name_the_layer(tmp_path, tiny):
    model = small_llama()
    codes = record_rtn(model, 4, 64, True)
    name = "model.layers.0.mlp.down_proj"
    with pytest.raises(SurefastError, match="did you mean") as err:
        export_compressed_tensors(model, {"model.layers.0.mlp.down_prj": codes[name]}, None, tmp_path / "a")
    assert "model.layers.0.mlp.down_prj" in err.value.message
    install_input_transform_(model.get_submodule(name), {"hadamard": True})
    with pytest.raises(SurefastError, match=f"{name} rotates its inputs online"):
        export_compressed_tensors(model, codes, None, tmp_path / "b")
    model = small_llama()
    codes = record_rtn(model, 4, 64, True)
    install_act_quant_({name: model.get_submodule(name)}, 8)
    with pytest.raises(SurefastError, match="W4A8"):
        export_compressed_tensors(model, codes, None, tmp_path / "c")
    model = small_llama()
    codes = record_rtn(model, 4, 64, True)
    model.get_submodule(name).weight.data[0, 0] += 1.0  # edited after quantization
    with pytest.raises(SurefastError, match=f"codes of {name} do not reproduce its weight"):
        export_compressed_tensors(model, codes, None, tmp_path / "d")
    tied = tiny("llama")
    tied.lm_head.weight = tied.model.embed_tokens.weight
    head = QuantizedWeight(torch.zeros(384, 64, dtype=torch.int8), torch.ones(384, 1), None, 8, 64)
    tied.lm_head.weight.data.zero_()
    with pytest.raises(SurefastError, match=r"lm_head shares its weight with model\.embed_tokens\.weight"):
        export_compressed_tensors(tied, {"lm_head": head}, None, tmp_path / "f")
    moe = tiny("qwen3_moe")
    with pytest.raises(SurefastError, match="mixture-of-experts"):
        export_compressed_tensors(moe, record_rtn(moe, 4, 32, True), None, tmp_path / "e")
    assert not any((tmp_path / d).exists() for d in "abcdef")  # refused before writing anything


def test_reader_refusals(tmp_path):
    with pytest.raises(SurefastError, match=r"config\.json does not exist"):
        read_compressed_tensors(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SurefastError, match="no compressed-tensors quantization_config"):
        read_compressed_tensors(tmp_path)
    qc = {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {}}}}
    qc["config_groups"]["g"]["weights"] = {"num_bits": 8, "type": "float", "strategy": "channel"}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))
    with pytest.raises(SurefastError, match=r"config_groups\.g: float weights are not supported"):
        read_compressed_tensors(tmp_path)


@pytest.mark.parametrize("method", ["rtn", "smoothquant"])
def test_a_compressed_tensors_folder_loads_as_our_packed_model(tmp_path, tiny, calib_ids, monkeypatch, method):
    """Our reader back to the same packed model: the same layers, formats and codes, the same logits."""
    from surefast.compress import compress_, make_config
    from surefast.compress.lowbit.import_ct import load_compressed_tensors
    from surefast.compress.lowbit.pack import model_codes, pack_, packed_report

    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    model = tiny("llama")
    options = {"bits": 4, "group_size": 32} if method == "rtn" else {}
    compress_(model, make_config(method, **options), calib_ids)
    codes = model_codes(model)
    export_compressed_tensors(model, codes, None, tmp_path / "ct")  # an fp32 model: fp32 scales, exact
    pack_(model)
    back, _ = load_compressed_tensors(tmp_path / "ct", dtype=torch.float32)
    assert packed_report(back).count() == packed_report(model).count() == {"int4" if method == "rtn" else "w8a8": 14}
    for name, qw in model_codes(back).items():
        assert torch.equal(qw.codes, codes[name].codes) and torch.equal(qw.dequantize(), codes[name].dequantize())
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)
