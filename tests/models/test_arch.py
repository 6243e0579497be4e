"""models/arch.py: every structural lookup and every row of the facts table, on every tiny architecture."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn

from surefast.errors import SurefastError
from surefast.models.arch import (
    ARCH_FACTS,
    DEFAULT_MAX_LENGTH,
    ArchFacts,
    arch_facts,
    decoder_body,
    decoder_layers,
    decoder_prefix,
    final_norm,
    get,
    model_max_length,
    output_head,
    text_config,
)
from surefast.models.tiny import _TEXT, TEXT_ARCHITECTURES, TINY_ARCHITECTURES, VLM_ARCHITECTURES

IDS = torch.tensor([[5, 17, 100, 33, 200, 7, 64, 9]])


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    from surefast.models.tiny import tiny_model

    return {arch: tiny_model(arch) for arch in TINY_ARCHITECTURES}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_text_config_language_model_blocks_norm_and_head(models, arch) -> None:  # type: ignore[no-untyped-def]
    model = models[arch]
    vlm = arch in VLM_ARCHITECTURES
    # Where a VLM keeps its text decoder (transformers 5): model.model.language_model, beside the vision tower.
    body = model.model.language_model if vlm else model.model
    assert text_config(model) is (model.config.text_config if vlm else model.config)
    assert decoder_body(model) is body
    assert decoder_layers(model) is body.layers  # not the vision tower's blocks
    assert len(body.layers) == text_config(model).num_hidden_layers
    assert decoder_prefix(model) == ("model.language_model.layers" if vlm else "model.layers")
    assert final_norm(model) is body.norm
    assert output_head(model) is model.lm_head
    assert model_max_length(model) == _TEXT["max_position_embeddings"]


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_final_norm_makes_the_hidden_states_the_head_reads(models, arch) -> None:  # type: ignore[no-untyped-def]
    model, seen = models[arch], []
    handle = final_norm(model).register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        with torch.no_grad():
            hidden = decoder_body(model)(input_ids=IDS).last_hidden_state  # [1, S, H]
            logits = model(input_ids=IDS).logits  # [1, S, V]
    finally:
        handle.remove()
    assert torch.equal(seen[0], hidden)
    assert torch.allclose(output_head(model)(hidden), logits, atol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_facts_name_real_modules_in_every_block(models, arch) -> None:  # type: ignore[no-untyped-def]
    model = models[arch]
    facts = arch_facts(model)
    assert facts.model_type == text_config(model).model_type
    if arch in TEXT_ARCHITECTURES or arch == "llava_onevision":  # qwen2_5_vl_text: the llama defaults fit
        assert facts.model_type in ARCH_FACTS
    for block in decoder_layers(model):
        for path in (facts.attn_norm, facts.mlp_norm, *facts.post_norms):
            assert get(block, path) is not None, path
        attn, mlp = get(block, facts.attn), get(block, facts.mlp)
        for proj in (facts.q, facts.k, facts.v, facts.o):
            assert isinstance(get(attn, proj), nn.Linear), proj
        projections = ("experts",) if arch == "qwen3_moe" else (facts.gate, facts.up, facts.down)
        for proj in projections:
            assert get(mlp, proj) is not None, proj


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_norm_offset_says_whether_a_zero_weight_norm_passes_x(models, arch) -> None:  # type: ignore[no-untyped-def]
    # RMSNorm scales by (offset + w): with w = 0, Gemma's (offset 1) passes the normalised x, the others give 0.
    import copy

    facts = arch_facts(models[arch])
    norm = copy.deepcopy(get(decoder_layers(models[arch])[0], facts.attn_norm))
    with torch.no_grad():
        norm.weight.zero_()
        out = norm(torch.randn(3, norm.weight.shape[0]))
    assert bool(out.abs().max() > 0) == (facts.norm_offset == 1.0)


@pytest.mark.parametrize(
    ("model_type", "attr", "value"), [("granite", "logits_scaling", 4.0), ("cohere", "logit_scale", 0.25)]
)
def test_logit_scale_rows_match_the_head(model_type, attr, value) -> None:  # type: ignore[no-untyped-def]
    config = transformers.AutoConfig.for_model(model_type, **_TEXT, eos_token_id=None, **{attr: value})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    facts = arch_facts(model)
    assert facts.logit_scale is not None and facts.logit_scale[1] == attr
    with torch.no_grad():
        z = decoder_body(model)(input_ids=IDS).last_hidden_state @ output_head(model).weight.T  # [1, S, V]
        full = model(input_ids=IDS).logits
    scaled = z * value if facts.logit_scale[0] == "mul" else z / value
    assert torch.allclose(scaled, full, atol=1e-5) and not torch.allclose(z, full, atol=1e-3)


def test_unknown_types_get_the_llama_defaults() -> None:
    phi = arch_facts(SimpleNamespace(config=SimpleNamespace(model_type="phi3")))  # type: ignore[arg-type]
    assert phi == ArchFacts("phi3") and phi.logit_scale is None and phi.norm_offset == 0.0
    assert arch_facts(nn.Linear(2, 2)).model_type == "unknown"
    assert model_max_length(SimpleNamespace(config=SimpleNamespace())) == DEFAULT_MAX_LENGTH


def test_what_cannot_be_found_is_one_line() -> None:
    with pytest.raises(SurefastError, match="cannot find the decoder blocks of Linear"):
        decoder_layers(nn.Linear(2, 2))
    with pytest.raises(SurefastError, match="cannot find the decoder body of Linear"):
        decoder_body(nn.Linear(2, 2))
    with pytest.raises(SurefastError, match="Linear has no output embedding"):
        output_head(nn.Linear(2, 2))


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_the_speculative_adapter_and_the_pruner_read_the_same_structure(models, arch) -> None:  # type: ignore[no-untyped-def]
    from surefast.speculate.model import HFCausalLM
    from surefast.speculate.vlm.prune import _language_model

    model = models[arch]
    lm = HFCausalLM(model)
    assert lm.config is text_config(model) and lm.vocab_size == output_head(model).weight.shape[0]
    assert _language_model(model) is decoder_body(model)
