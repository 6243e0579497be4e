"""``pack_``: the packed model computes the fake-quant model's logits (bit for bit with ``dequant-matmul``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from surefast.compress import compress_, make_config
from surefast.compress.lowbit import PackedLinear
from surefast.compress.lowbit.pack import HEADS, pack_, packable, packed_report, recorded_codes
from surefast.compress.quant.fake import HOOK_ATTR, input_transforms
from surefast.errors import SurefastError
from surefast.models.arch import decoder_layers
from surefast.models.tiny import TEXT_ARCHITECTURES, TINY_ARCHITECTURES

# method -> options; the format every packed layer gets by default
CASES = {
    "rtn": (dict(bits=4, group_size=32), "int4"),
    "gptq": (dict(bits=4, group_size=32), "int4"),
    "awq": (dict(bits=4, group_size=32), "int4"),
    "smoothquant": (dict(), "w8a8"),
    "quarot": (dict(bits=4, act_bits=8), "int4"),  # W4A8 with online Hadamards
}


def _compressed(tiny, calib_ids, arch, method, dtype=torch.bfloat16):  # type: ignore[no-untyped-def]
    model = tiny(arch, dtype=dtype)
    compress_(model, make_config(method, **CASES[method][0]), calib_ids)
    return model


def _logits(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize(
    ("arch", "method"),
    [(arch, method) for arch in TEXT_ARCHITECTURES for method in CASES]
    + [(arch, "rtn") for arch in TINY_ARCHITECTURES if arch not in TEXT_ARCHITECTURES],
)
def test_packed_equals_fake_quant_with_dequant_matmul(tiny, calib_ids, probe_ids, monkeypatch, arch, method) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    model = _compressed(tiny, calib_ids, arch, method)
    ref = _logits(model, probe_ids)
    blocks = decoder_layers(model)  # found by their nn.Linear layers, so before packing
    report = pack_(model)
    assert report.layers and set(report.count()) == {CASES[method][1]}
    assert not [m for m in blocks.modules() if isinstance(m, nn.Linear)]  # every one packed
    assert torch.equal(_logits(model, probe_ids), ref)  # bf16 rounding of the same weights: no difference at all


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_packed_is_close_with_the_chosen_kernel(tiny, calib_ids, probe_ids, arch, method) -> None:  # type: ignore[no-untyped-def]
    # the automatic choice (int4-cpu, dense or dequant-matmul here) rounds in bf16 in its own
    # order: each layer is held to the kernel bound at choice time, the logits to a few bf16 steps
    model = _compressed(tiny, calib_ids, arch, method)
    ref = _logits(model, probe_ids)
    pack_(model)
    assert (_logits(model, probe_ids) - ref).abs().max() <= 0.05 * ref.abs().max()


def test_w8a8_int_mm_equals_fake_quant_in_fp32(tiny, calib_ids, probe_ids, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # int8 x int8 accumulates exactly; only the fp32 rescaling rounds differently from the fake matmul
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "int-mm")
    model = _compressed(tiny, calib_ids, "llama", "smoothquant", torch.float32)
    ref = _logits(model, probe_ids)
    pack_(model)
    assert (_logits(model, probe_ids) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_activation_grids_move_into_the_packed_layers_and_hadamards_stay(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = _compressed(tiny, calib_ids, "llama", "quarot")
    before = input_transforms(model)
    assert all(spec["act_bits"] == 8 for spec in before.values())
    pack_(model)
    after = input_transforms(model)
    assert set(after) == {n for n, s in before.items() if s.get("hadamard")} and len(after) == 4  # o, down x 2
    assert all(spec.get("act_bits", 16) == 16 for spec in after.values())
    packed = {n: m for n, m in model.named_modules() if isinstance(m, PackedLinear)}
    assert len(packed) == 14 and all(m.act is not None and m.act.bits == 8 for m in packed.values())


def test_a_forced_format_that_would_change_the_model_is_refused(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    sq = _compressed(tiny, calib_ids, "llama", "smoothquant")
    with pytest.raises(SurefastError, match=r"cannot pack model\.layers\.0\.self_attn\.q_proj: .*at most 4 bits"):
        pack_(sq, "int4")
    rtn = _compressed(tiny, calib_ids, "llama", "rtn")
    with pytest.raises(SurefastError, match=r"as w8a8: it needs 8-bit symmetric per-channel weights"):
        pack_(rtn, "w8a8")
    with pytest.raises(SurefastError, match="unknown packed format 'int5'") as err:
        pack_(rtn, "int5")
    assert err.value.hint and "int8" in err.value.hint
    assert not packed_report(rtn).layers  # a refusal changes nothing
    assert set(pack_(sq, "int8").count()) == {"int8"}  # weight-only int8, the activation grid kept in the layer


def test_a_model_without_recorded_codes_is_refused(tiny, tiny_tok, calib_ids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from surefast.compress import save_compressed
    from surefast.models import load_model

    with pytest.raises(SurefastError, match="no recorded quantization codes") as err:
        pack_(tiny("llama"))
    assert err.value.hint and "--pack" in err.value.hint
    model = tiny("llama")
    result = compress_(model, make_config("rtn", bits=4, group_size=32))
    save_compressed(model, tiny_tok, result, tmp_path / "fake")
    with pytest.raises(SurefastError, match="no recorded quantization codes"):  # floats are never re-derived
        pack_(load_model(str(tmp_path / "fake"), device="cpu").model)
    pack_(model)
    with pytest.raises(SurefastError, match="already packed"):
        pack_(model)


def test_a_weight_changed_after_quantization_is_refused(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = _compressed(tiny, calib_ids, "llama", "rtn")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1
    with pytest.raises(SurefastError, match=r"cannot pack model\.layers\.1\.mlp\.down_proj: its weight changed"):
        pack_(model)


def test_gptq_with_dynamic_groups_is_refused(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    config = make_config("gptq", bits=4, group_size=32, static_groups=False)
    refusal = packable(config)
    assert refusal is not None and "g_idx" in refusal[0]
    model = tiny("llama")
    compress_(model, config, calib_ids)
    with pytest.raises(SurefastError, match="no contiguous group grid"):
        pack_(model)
    with pytest.raises(SurefastError, match="no contiguous group grid"):
        recorded_codes(model)


@pytest.mark.parametrize(
    ("method", "options", "says"),
    [
        ("wanda", {}, "does not quantize weights"),
        ("awq", dict(quantize=False), "quantize=False"),
        ("rtn", dict(bits=8, symmetric=False), "8-bit asymmetric"),
        ("rtn", dict(bits=4), None),
        ("gptq", dict(act_order=False, static_groups=False), None),  # without act-order the groups are contiguous
    ],
)
def test_packable_reads_the_config(method, options, says) -> None:  # type: ignore[no-untyped-def]
    refusal = packable(make_config(method, **options))
    assert (refusal is None) if says is None else (refusal is not None and says in refusal[0])


def test_packing_keeps_the_codes_and_saves_memory(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = _compressed(tiny, calib_ids, "llama", "gptq")
    codes = recorded_codes(model)
    report = pack_(model)
    assert [layer.name for layer in report.layers] == list(codes)
    for name, module in model.named_modules():
        if isinstance(module, PackedLinear):
            back = module.to_quantized()
            assert torch.equal(back.codes, codes[name].codes) and torch.equal(back.scales, codes[name].scales)
            assert not hasattr(module, "weight") and not getattr(module, HOOK_ATTR, None)
    # 4-bit codes + one fp32 scale per 32 weights = 5 bits a weight, against 16
    assert report.weight_bytes == pytest.approx(report.dense_bytes * 5 / 16, rel=0.01)


@pytest.mark.parametrize(("head", "tied"), [("int8", False), ("int4", False), ("int8", True)])
def test_the_head_packs_on_request_as_its_rtn_rounding(  # type: ignore[no-untyped-def]
    tiny, tiny_tok, calib_ids, probe_ids, monkeypatch, tmp_path, head, tied
) -> None:
    from surefast.compress import save_compressed
    from surefast.compress.quant.fake import fake_quant_weight
    from surefast.models import load_model

    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    model = tiny("llama")
    if tied:  # one tensor for the embedding and the head, as many small models ship
        model.lm_head.weight = model.get_input_embeddings().weight
        model.config.tie_word_embeddings = True
    result = compress_(model, make_config("rtn", bits=4, group_size=32))
    ref = copy.deepcopy(model)
    bits, group = HEADS[head]
    with torch.no_grad():  # the reference: the head's weight replaced by its round-to-nearest rounding
        ref.lm_head.weight = torch.nn.Parameter(fake_quant_weight(ref.lm_head.weight.float(), bits, group, True))
        want = ref(probe_ids).logits
    embedding = model.get_input_embeddings().weight.detach().clone()
    report = pack_(model, head=head)
    assert isinstance(model.lm_head, PackedLinear) and model.lm_head.spec.bits == bits
    assert report.count() == {"int4": 14 + (head == "int4"), **({"int8": 1} if head == "int8" else {})}
    assert torch.equal(model.get_input_embeddings().weight, embedding)  # a tied embedding stays float
    with torch.no_grad():
        assert torch.equal(model(probe_ids).logits, want)
    save_compressed(model, tiny_tok, result, tmp_path / "m")
    back = load_model(str(tmp_path / "m"), dtype="fp32", device="cpu").model
    with torch.no_grad():
        assert torch.equal(back(probe_ids).logits, want)


def test_an_unknown_head_format_is_refused(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SurefastError, match="unknown head format 'int9'"):
        pack_(tiny("llama"), head="int9")
