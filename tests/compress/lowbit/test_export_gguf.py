"""GGUF export: read back with ``gguf.GGUFReader`` + ``gguf.quants.dequantize`` and with transformers.

The rounding bound for codes that go in unchanged: only the block scale is rounded (to fp16), so
``|w_gguf - w| = |q| |fp16(s) - s| <= |q| max(2^-11 |s|, 2^-25)``: fp16's unit roundoff for normal
scales, half the subnormal step (2^-24) below 2^-14.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.export_gguf import (
    block_scales,
    encode,
    encode_exact,
    export_gguf,
    permute_rows,
    tokenizer_pre,
    why_not_exact,
)
from surefast.errors import SurefastError

from .test_export_ct import record_rtn, small_llama

FP16_U = 2.0**-11
GGUF_LEAF = {  # HF linear -> llama.cpp tensor (gguf's tensor_mapping)
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def codes_of(out: int, inn: int, bits: int, group: int, symmetric: bool = True, seed: int = 0) -> QuantizedWeight:
    """Random codes on a grid with random positive scales (some tiny, to reach fp16's subnormals)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if symmetric else (0, 2**bits)
    q = torch.randint(lo, hi, (out, inn), generator=g).to(torch.int8)
    n = -(-inn // group)
    scales = torch.rand(out, n, generator=g) * 0.05 + 1e-4
    scales[0, 0] = 3e-7  # below fp16's normal range (2^-14 ~ 6.1e-5)
    zeros = None if symmetric else torch.randint(0, 2**bits, (out, n), generator=g).float()
    return QuantizedWeight(q, scales, zeros, bits, group)


def from_gguf(data: np.ndarray, type: str) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, type)).copy())


def assert_scale_rounding_only(got: torch.Tensor, qw: QuantizedWeight) -> None:
    """``got`` is exactly ``q * fp16(block scale)``, within the stated bound of ``dequantize()``."""
    blocks = block_scales(qw).to(torch.float16).float()  # [out, in / 32]
    expected = qw.codes.float() * blocks.repeat_interleave(32, dim=1)
    assert torch.equal(got, expected)
    step = torch.maximum(FP16_U * block_scales(qw), torch.tensor(2.0**-25)).repeat_interleave(32, dim=1)
    assert ((got - qw.dequantize()).abs() <= qw.codes.float().abs() * step).all()


# --- block encodings against gguf.quants (llama.cpp's reference in numpy) ------------------------
def test_q4_0_block_layout_by_hand():
    """One block: fp16 scale, then byte j = (q_j + 8) | (q_{j+16} + 8) << 4."""
    q = torch.arange(-8, 8).repeat(2).reshape(1, 32).to(torch.int8)  # -8..7, twice
    qw = QuantizedWeight(q, torch.tensor([[0.5]]), None, 4, 32)
    data = encode_exact(qw, "Q4_0")
    assert data.shape == (1, 18) and data.dtype == np.uint8
    assert data[0, :2].view(np.float16)[0] == 0.5
    n = (q[0].numpy().astype(np.int16) + 8).astype(np.uint8)
    assert (data[0, 2:] == (n[:16] | (n[16:] << 4))).all()
    assert torch.equal(from_gguf(data, "Q4_0"), qw.dequantize())  # 0.5 is exact in fp16


@pytest.mark.parametrize(
    ("type", "bits", "group"),
    [
        ("Q4_0", 4, 32),
        ("Q4_0", 4, 64),
        ("Q4_0", 4, 128),
        ("Q4_0", 3, 32),
        ("Q4_0", 4, 256),
        ("Q8_0", 8, 32),
        ("Q8_0", 8, 128),
        ("Q8_0", 8, 256),
        ("Q8_0", 4, 64),
    ],
)
def test_matching_grids_go_in_unchanged(type, bits, group):
    """Symmetric codes in whole multiples of 32 (group 256 = per channel here): only the scale rounds."""
    qw = codes_of(6, 256, bits, group)
    assert why_not_exact(qw, type) is None
    data, reason = encode(qw, type)
    assert reason is None
    assert_scale_rounding_only(from_gguf(data, type), qw)


@pytest.mark.parametrize(
    ("type", "bits", "group", "symmetric", "reason"),
    [
        ("Q4_0", 4, 32, False, "asymmetric zero points"),
        ("Q4_0", 8, 32, True, "8-bit codes"),
        ("Q4_0", 4, 16, True, "groups of 16"),
        ("Q8_0", 8, 48, True, "groups of 48"),
    ],
)
def test_other_layouts_are_requantized(type, bits, group, symmetric, reason):
    qw = codes_of(4, 96, bits, group, symmetric)
    assert reason in why_not_exact(qw, type)
    data, why = encode(qw, type)
    assert why == why_not_exact(qw, type)
    expected = gguf.quants.quantize(qw.dequantize().numpy(), getattr(gguf.GGMLQuantizationType, type))
    assert np.array_equal(data, expected)  # llama.cpp's own rounding of W_hat


def test_llama_permutation_is_llama_cpp_permute():
    """``LlamaModel.permute`` of convert_hf_to_gguf.py, and transformers' reverse_permute undoes it."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(32, 8)  # 4 heads of 8 rows
    theirs = w.reshape(4, 2, 4, 8).swapaxes(1, 2).reshape(32, 8)  # llama.cpp, written out
    assert torch.equal(w[permute_rows(32, 4)], theirs)
    back = LlamaTensorProcessor()._reverse_permute_weights(theirs.numpy(), 4, 4)
    assert np.array_equal(back, w.numpy())


# --- whole files ------------------------------------------------------------------------------
def read(path):
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}

    def field(key):
        f = reader.fields[key]
        return f.contents()

    return tensors, field


def unpermuted(name: str, w: torch.Tensor, model) -> torch.Tensor:
    """Undo llama's q/k row order so a read-back weight compares with the model's."""
    if not name.endswith(("q_proj", "k_proj")):
        return w
    heads = model.config.num_attention_heads if name.endswith("q_proj") else model.config.num_key_value_heads
    return w[torch.argsort(permute_rows(w.shape[0], heads))]


@pytest.mark.parametrize("type", ["Q4_0", "Q8_0"])
def test_llama_file_reads_back(tmp_path, tiny_tok, type):
    model = small_llama()
    codes = record_rtn(model, 4 if type == "Q4_0" else 8, 64, True)
    path = export_gguf(model, codes, tiny_tok, tmp_path / "m.gguf", type)
    tensors, field = read(path)
    n = model.config.num_hidden_layers
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(tensors) == {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{p}.weight" for i in range(n) for p in per_block
    }
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F32  # an fp32 model: as it is
    for name, qw in codes.items():
        block, leaf = name.split(".")[2], name.rsplit(".", 1)[1]
        t = tensors[f"blk.{block}.{GGUF_LEAF[leaf]}.weight"]
        assert t.tensor_type == getattr(gguf.GGMLQuantizationType, type), name
        got = unpermuted(name, from_gguf(t.data, type), model)
        assert_scale_rounding_only(got, qw)
    assert field("general.architecture") == "llama"
    assert field("general.file_type") == int(getattr(gguf.LlamaFileType, f"MOSTLY_{type}"))
    assert field("llama.block_count") == n and field("llama.attention.head_count_kv") == 2
    assert field("llama.rope.dimension_count") == 64 and field("llama.embedding_length") == 256
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == model.config.vocab_size and tokens[-1] == f"[PAD{model.config.vocab_size - 1}]"
    assert (
        tokens[tiny_tok.eos_token_id] == "<|im_end|>" and field("tokenizer.ggml.eos_token_id") == tiny_tok.eos_token_id
    )


@pytest.mark.parametrize(("arch", "type"), [("llama", "Q4_0"), ("llama", "Q8_0"), ("qwen2", "Q4_0")])
def test_transformers_loads_the_gguf(tmp_path, tiny, tiny_tok, arch, type):
    """``from_pretrained(folder, gguf_file=...)``, how our registry models load: the same tokens, the
    GGUF's weights exactly (so its q/k order is undone right), and our logits within the scale rounding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny(arch)
    codes = record_rtn(model, 4 if type == "Q4_0" else 8, 32, True)
    export_gguf(model, codes, tiny_tok, tmp_path / "m.gguf", type)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    text = "The answer is (B) 42.<|im_end|>\n A C"
    assert tok(text).input_ids == tiny_tok(text).input_ids
    tensors, _ = read(tmp_path / "m.gguf")
    reference = tiny(arch)  # ours, with exactly the GGUF's de-quantized weights
    reference.load_state_dict(model.state_dict())
    for name, qw in codes.items():
        got = loaded.get_submodule(name).weight
        block, leaf = name.split(".")[2], name.rsplit(".", 1)[1]
        stored = from_gguf(tensors[f"blk.{block}.{GGUF_LEAF[leaf]}.weight"].data, type)
        assert torch.equal(got, unpermuted(name, stored, model) if arch == "llama" else stored), name
        assert_scale_rounding_only(got, qw)
        reference.get_submodule(name).weight.data.copy_(got)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs, ref, ours = loaded(ids).logits, reference(ids).logits, model(ids).logits
    assert torch.equal(theirs, ref)  # the file holds our model, nothing else changed
    assert (theirs - ours).abs().max() <= 8 * FP16_U * ours.abs().max()  # weights moved <= 2^-11 relative


def test_asymmetric_model_is_requantized_with_one_warning(tmp_path, tiny, tiny_tok):
    model = tiny("llama")
    codes = record_rtn(model, 4, 32, False)
    with pytest.warns(UserWarning) as caught:
        path = export_gguf(model, codes, tiny_tok, tmp_path / "m.gguf", "Q4_0")
    assert [str(w.message) for w in caught] == [
        "14 layers (the first: model.layers.0.self_attn.q_proj): asymmetric zero points; "
        "re-quantized to Q4_0 (a second rounding)"
    ]
    tensors, _ = read(path)
    qw = codes["model.layers.1.mlp.down_proj"]
    expected = gguf.quants.quantize(qw.dequantize().numpy(), gguf.GGMLQuantizationType.Q4_0)
    assert np.array_equal(tensors["blk.1.ffn_down.weight"].data, expected)  # llama.cpp's rounding of W_hat


def test_tied_bf16_model(tmp_path, tiny_tok):
    """SmolLM2's shape: tied embeddings (no output.weight) and bf16 floats written as BF16, unrounded."""
    model = small_llama(torch.bfloat16)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    codes = record_rtn(model, 4, 128, True)
    tensors, _ = read(export_gguf(model, codes, tiny_tok, tmp_path / "m.gguf", "Q4_0"))
    assert "output.weight" not in tensors
    embed = tensors["token_embd.weight"]
    assert embed.tensor_type == gguf.GGMLQuantizationType.BF16
    got = from_gguf(embed.data, "BF16").reshape(model.model.embed_tokens.weight.shape)
    assert torch.equal(got, model.model.embed_tokens.weight.float())
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_qwen3_norms_are_named(tmp_path, tiny, tiny_tok):
    model = tiny("qwen3")
    codes = record_rtn(model, 8, 32, True)
    tensors, field = read(export_gguf(model, codes, tiny_tok, tmp_path / "m.gguf", "Q8_0"))
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= set(tensors)
    assert field("general.architecture") == "qwen3" and field("qwen3.attention.key_length") == 16


def test_pre_tokenizer_names():
    """The split rules transformers' GGUF loader maps these names back to give the same names here."""
    from tokenizers import Regex, pre_tokenizers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from surefast.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()  # a fresh one: its pre-tokenizer is replaced below
    assert tokenizer_pre(tok) == "gpt-2"
    for name in ("qwen2", "llama-bpe"):
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GGUF_PRE_TOKENIZER_SPLITS[name]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        assert tokenizer_pre(tok) == name
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    assert tokenizer_pre(tok) == "smollm"
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    assert tokenizer_pre(tok) is None


def test_refusals(tmp_path, tiny, tiny_tok):
    model = tiny("llama")
    codes = record_rtn(model, 4, 32, True)
    with pytest.raises(SurefastError, match="unknown GGUF type 'Q4_O'") as err:
        export_gguf(model, codes, tiny_tok, tmp_path / "a.gguf", "Q4_O")
    assert err.value.hint == "did you mean 'Q4_0'?"
    with pytest.raises(SurefastError, match="needs the tokenizer"):
        export_gguf(model, codes, None, tmp_path / "b.gguf")
    model.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    with pytest.raises(SurefastError, match="rope_type 'llama3'"):
        export_gguf(model, codes, tiny_tok, tmp_path / "c.gguf")
    gemma = tiny("gemma3")
    with pytest.raises(SurefastError, match="does not support gemma3_text models"):
        export_gguf(gemma, record_rtn(gemma, 4, 32, True), tiny_tok, tmp_path / "d.gguf")
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial file
