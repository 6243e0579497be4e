"""The pruning methods through the shared compress_ API and calibration pipeline."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from surefast.compress import compress_, make_config
from surefast.compress.prune import wanda
from surefast.compress.saved import save_compressed
from surefast.models.tiny import TEXT_ARCHITECTURES

IDS = torch.randint(0, 300, (8, 32), generator=torch.Generator().manual_seed(3))


def _linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
@pytest.mark.parametrize("name", ["magnitude", "wanda", "sparsegpt"])
def test_unstructured_exact_sparsity(tiny, arch: str, name: str) -> None:
    model = tiny(arch)
    result = compress_(model, make_config(name, sparsity=0.5), IDS)
    lins = _linears(model)
    assert len(result.layers) == len(lins) > 0
    for lin in lins.values():
        zeros = (lin.weight == 0).sum(1)
        assert int(zeros.sum()) == lin.weight.numel() // 2  # per layer: magnitude, SparseGPT
        if name == "wanda":  # per row
            assert (zeros == lin.in_features // 2).all()
    assert all(v["sparsity"] == 0.5 for v in result.layers.values())
    stats = result.recipe["stats"]
    assert stats["pruned_layers_sparsity"] == 0.5 and stats["params_after"] == stats["params_before"]
    assert stats["zeros_after"] - stats["zeros_before"] == sum(lin.weight.numel() for lin in lins.values()) // 2
    assert result.fingerprint and torch.isfinite(model(IDS).logits).all()


@pytest.mark.parametrize("name", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("nm", ["2:4", "4:8"])
def test_nm_through_pipeline(tiny, name: str, nm: str) -> None:
    model = tiny("qwen2")
    compress_(model, make_config(name, nm=nm), IDS)
    n, m = (int(v) for v in nm.split(":"))
    for lin in _linears(model).values():
        groups = (lin.weight != 0).reshape(lin.out_features, -1, m).sum(-1)
        assert (groups <= n).all() and (groups == n).float().mean() > 0.99  # exact zeros in kept slots are rare


def test_wanda_pipeline_uses_the_layer_inputs(tiny) -> None:
    """Block 0's q_proj pruned by the pipeline == the pure core on inputs captured by hand."""
    model = tiny("llama")
    captured = []
    q = model.model.layers[0].self_attn.q_proj
    handle = q.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach().reshape(-1, 64)))
    with torch.no_grad():
        model(IDS)
    handle.remove()
    X = torch.cat(captured)  # [N * S, in]
    expected, _ = wanda.prune(q.weight.detach(), (X**2).sum(0), wanda.WandaConfig(sparsity=0.5))
    compress_(model, make_config("wanda", sparsity=0.5), IDS)
    assert torch.equal(q.weight == 0, expected == 0)


@pytest.mark.parametrize("name,kw", [("llm-pruner", dict(ratio=0.5)), ("slicegpt", dict(ratio=0.25))])
@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_structured_compress_save_reload(tiny, tiny_tok, tmp_path, name: str, kw: dict, arch: str) -> None:
    model = tiny(arch)
    before = sum(p.numel() for p in model.parameters())
    result = compress_(model, make_config(name, **kw), IDS)
    stats = result.recipe["stats"]
    assert stats["params_before"] == before and stats["params_after"] == sum(p.numel() for p in model.parameters())
    assert stats["params_after"] < before
    out = model(IDS).logits
    save_compressed(model, tiny_tok, result, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(IDS).logits, out)


def test_configs_roundtrip_and_registry() -> None:
    from surefast.compress import method_names
    from surefast.compress.api import config_from_dict

    for name, kw in [
        ("magnitude", dict(per="row")),
        ("wanda", dict(nm="4:8")),
        ("sparsegpt", dict(block_size=64)),
        ("llm-pruner", dict(ratio=0.3)),
        ("slicegpt", dict(ratio=0.1)),
    ]:
        assert name in method_names()
        config = make_config(name, **kw)
        assert config_from_dict(config.to_dict()) == config


def test_saved_structured_folder_reapplies(tiny, tiny_tok, tmp_path) -> None:
    from surefast.compress.saved import apply_saved_compression_

    model = tiny("qwen2")
    result = compress_(model, make_config("llm-pruner", ratio=0.5), IDS)
    save_compressed(model, tiny_tok, result, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    data = apply_saved_compression_(reloaded, tmp_path)
    assert data is not None and data["config"]["method"] == "llm-pruner"
    assert data["recipe"]["stats"]["params_after"] == sum(p.numel() for p in reloaded.parameters())
