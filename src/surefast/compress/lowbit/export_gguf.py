"""Export to GGUF (llama.cpp, Ollama): Q8_0 and Q4_0 through the ``gguf`` package.

GGUF's blocks (``ggml-common.h``; ``gguf.quants`` implements them in numpy): 32 consecutive
inputs of a row share one fp16 scale ``d``. **Q8_0**: 32 int8 codes, ``w = q d``. **Q4_0**: 16
bytes of nibbles ``n`` in ``0..15`` with an implicit offset of 8, ``w = (n - 8) d``; byte ``j``
holds element ``j`` in its low nibble and element ``j + 16`` in its high one.

Our codes go in as they are when the grids agree: symmetric codes, at most 4 bits (Q4_0,
``n = q + 8``) or 8 bits (Q8_0, ``q`` itself), in groups that are whole multiples of 32 (a
group of 64 or 128 is 2 or 4 blocks with the same scale; per channel works when ``in`` is a
multiple of 32). The only change is the scale's rounding to fp16: ``|q fp16(s) - q s| <= |q|
max(2^-11 |s|, 2^-25)`` (fp16's unit roundoff, and half its smallest subnormal step for scales
under 2^-14), i.e. at most 2^-11 of the weight for normal scales. Any other layout (asymmetric
zero points, groups of 16 or a partial one, 8-bit codes into Q4_0) is **re-quantized** from the
de-quantized weights with ``gguf.quants`` (llama.cpp's own rounding) and warned about: that is
a second rounding, not the model surefast certified.

Everything else follows llama.cpp's ``convert_hf_to_gguf.py`` for llama-family models: tensor
names from ``gguf.get_tensor_name_map``; 1-D tensors (norms, biases) in F32; other 2-D tensors
(embeddings, an unquantized ``lm_head``) in the model's own float type (F32, F16 or BF16: no
rounding); llama's q/k rows permuted for its rotary layout (``LlamaModel.permute``; Qwen uses
the NeoX layout and is left as is); no ``output.weight`` when the embeddings are tied; the
GPT-2-style BPE vocabulary padded to ``vocab_size`` with ``[PAD<i>]`` tokens (``get_vocab_base``).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from surefast.atomic import tmp_path, write_errors
from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.export_ct import checked_codes
from surefast.errors import SurefastError
from surefast.registry import suggestion

BLOCK = 32  # inputs per GGUF block for both types
TYPES = ("Q8_0", "Q4_0")
MAX_BITS = {"Q8_0": 8, "Q4_0": 4}
ARCHS = ("llama", "qwen2", "qwen3")  # llama-family decoders whose tensors and keys are the standard ones
FP16_MAX = 65504.0

# Pre-tokenizers in tokenizer.json -> llama.cpp's ``tokenizer.ggml.pre`` (the split regexes are the
# ones transformers' GGUF loader maps these names back to; "smollm" splits digits one by one).
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _gguf() -> Any:
    import gguf  # a dependency, imported late: the lowbit package loads without it until an export

    return gguf


# --- pure encodings -------------------------------------------------------------------------
def why_not_exact(qw: QuantizedWeight, type: str) -> str | None:
    """None when ``qw``'s codes fit GGUF ``type`` as they are, else the reason they do not."""
    if not qw.symmetric:
        return "asymmetric zero points"
    if qw.bits > MAX_BITS[type]:
        return f"{qw.bits}-bit codes"
    if qw.group_size % BLOCK or qw.shape[1] % BLOCK:
        return f"groups of {qw.group_size} over {qw.shape[1]} inputs are not whole blocks of {BLOCK}"
    return None


def block_scales(qw: QuantizedWeight) -> torch.Tensor:
    """fp32 ``[out, in / 32]``: the scale of each block (a group spans ``group_size / 32`` blocks)."""
    index = torch.arange(0, qw.shape[1], BLOCK) // qw.group_size  # [blocks]: the group of each block
    return qw.scales[:, index]


def encode_exact(qw: QuantizedWeight, type: str) -> np.ndarray:
    """The GGUF bytes ``uint8 [out, in / 32 * type_size]`` of ``qw``'s own codes (see :func:`why_not_exact`)."""
    out = qw.shape[0]
    scales = block_scales(qw)
    if scales.abs().max() > FP16_MAX:
        raise SurefastError(f"a scale of {scales.abs().max():.3g} overflows GGUF's fp16 block scales")
    d = scales.to(torch.float16).numpy().reshape(out, -1, 1).view(np.uint8)  # [out, blocks, 2]
    q = qw.codes.numpy().reshape(out, -1, BLOCK)  # [out, blocks, 32] int8
    qs: np.ndarray
    if type == "Q8_0":
        qs = q.view(np.uint8)
    else:
        n = (q.astype(np.int16) + 8).astype(np.uint8)  # nibbles 0..15
        qs = n[..., :16] | (n[..., 16:] << 4)  # [out, blocks, 16]
    return np.concatenate([d, qs], axis=-1).reshape(out, -1)


def encode(qw: QuantizedWeight, type: str) -> tuple[np.ndarray, str | None]:
    """GGUF bytes of one linear and None: its own codes; or llama.cpp's rounding of ``W_hat`` and the
    reason its codes did not fit (a second rounding, which the exporter warns about)."""
    reason = why_not_exact(qw, type)
    if reason is None:
        return encode_exact(qw, type), None
    gguf = _gguf()
    return gguf.quants.quantize(qw.dequantize().numpy(), getattr(gguf.GGMLQuantizationType, type)), reason


def permute_rows(n_rows: int, n_head: int) -> torch.Tensor:
    """The row order llama.cpp's ``LlamaModel.permute`` gives q/k (``[heads, 2, d/2] -> [heads, d/2, 2]``):
    HF's rotary pairs ``(i, i + d/2)`` become llama.cpp's adjacent pairs ``(2i, 2i + 1)``."""
    rows = torch.arange(n_rows)
    return rows.reshape(n_head, 2, n_rows // n_head // 2).transpose(1, 2).reshape(-1)


def permute_codes(qw: QuantizedWeight, order: torch.Tensor) -> QuantizedWeight:
    """Rows of ``qw`` in ``order``: blocks run along the inputs, so each row keeps its codes and scales."""
    zeros = None if qw.zeros is None else qw.zeros[order]
    return QuantizedWeight(qw.codes[order], qw.scales[order], zeros, qw.bits, qw.group_size)


# --- tokenizer and hyperparameters ----------------------------------------------------------
def tokenizer_pre(tokenizer: Any) -> str | None:
    """llama.cpp's pre-tokenizer name for ``tokenizer``'s split rules, or None when we know no match."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        return {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}.get(regex)
    return None


def vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types, llama.cpp's ``get_vocab_base``: ids past the tokenizer are ``[PAD<i>]`` (unused)."""
    gguf = _gguf()
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif reverse[i] in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _write_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    gguf = _gguf()
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec.get("model", {}).get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise SurefastError(
            "the tokenizer is not a byte-level BPE (GPT-2 style) tokenizer", "GGUF export writes BPE vocabularies only"
        )
    if max(tokenizer.get_vocab().values()) >= vocab_size:
        raise SurefastError(f"the tokenizer has ids past the model's vocab_size {vocab_size}")
    tokens, types = vocab(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    pre = tokenizer_pre(tokenizer)
    if pre is None:
        warnings.warn(
            "the tokenizer's pre-tokenizer matches no llama.cpp name: tokenizer.ggml.pre is left out "
            "(llama.cpp then splits text with its 'default' rules)",
            stacklevel=3,
        )
    else:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as tmp:  # SpecialVocab reads merges, special ids and the template from files
        tokenizer.save_pretrained(tmp)
        gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise SurefastError(f"rope_type {kind!r} is not supported by the GGUF export", "models with plain RoPE only")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise SurefastError("the model's config has no rope_theta")
    return float(theta)


def _write_hparams(writer: Any, config: Any, arch: str, type: str) -> None:
    gguf = _gguf()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(str(getattr(config, "_name_or_path", "") or f"surefast {arch} {type}"))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(int(head_dim))
    writer.add_value_length(int(head_dim))
    if arch == "llama":
        writer.add_vocab_size(int(config.vocab_size))
        writer.add_rope_dimension_count(int(head_dim))
    file_type = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[type]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


# --- the file -------------------------------------------------------------------------------
def _float_tensor(t: torch.Tensor) -> tuple[np.ndarray, Any]:
    """A float tensor as GGUF stores it: 1-D in F32 (llama.cpp's norms and biases), 2-D in its own type."""
    gguf = _gguf()
    if t.dim() == 1 or t.dtype == torch.float32:
        return t.float().numpy(), None
    if t.dtype == torch.float16:
        return t.numpy(), None
    if t.dtype == torch.bfloat16:  # numpy has no bf16: the raw 16 bits, typed by raw_dtype
        return t.contiguous().view(torch.int16).numpy().view(np.uint8), gguf.GGMLQuantizationType.BF16
    return t.float().numpy(), None


def export_gguf(
    model: nn.Module,
    codes: Mapping[str, QuantizedWeight],
    tokenizer: Any,
    out_path: str | Path,
    type: str = "Q8_0",
) -> Path:
    """Write ``out_path`` (one ``.gguf`` file): the quantized linears of ``codes`` in ``type``, the rest in float.

    ``codes``: linear module name -> the :class:`QuantizedWeight` its quantizer recorded (see the
    module docstring for when they go in unchanged and when they are re-quantized).
    """
    if type not in TYPES:
        raise SurefastError(f"unknown GGUF type {type!r}", suggestion(type, TYPES))
    hf: Any = model  # a transformers model: its config and submodules are untyped here
    config = hf.config
    arch = str(getattr(config, "model_type", ""))
    if arch not in ARCHS:
        raise SurefastError(
            f"GGUF export does not support {arch or 'this'} models yet", f"supported: {', '.join(ARCHS)}"
        )
    if tokenizer is None:
        raise SurefastError("GGUF export needs the tokenizer", "llama.cpp reads the vocabulary from the file")
    checked_codes(model, codes)
    gguf = _gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(config.num_hidden_layers))
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)

    def rows(module: str) -> torch.Tensor | None:  # llama's q/k permutation, None elsewhere
        if arch != "llama" or not module.endswith(("q_proj", "k_proj")):
            return None
        n = heads if module.endswith("q_proj") else kv_heads
        return permute_rows(int(hf.get_submodule(module).out_features), n)

    rounded_again: dict[str, list[str]] = {}  # why a layer's codes did not fit -> those layers

    def quantized(module: str, qw: QuantizedWeight) -> tuple[str, np.ndarray, Any]:
        order = rows(module)
        qw = qw if order is None else permute_codes(qw, order)
        name = f"{gguf_name(module)}.weight"
        if qw.shape[1] % BLOCK:  # no whole blocks: llama.cpp's converter keeps such tensors in float too
            rounded_again.setdefault(f"{qw.shape[1]} inputs are not whole blocks of {BLOCK}", []).append(module)
            return (name, *_float_tensor(qw.dequantize().to(dtype)))
        data, reason = encode(qw, type)
        if reason is not None:
            rounded_again.setdefault(reason, []).append(module)
        return name, data, getattr(gguf.GGMLQuantizationType, type)

    def gguf_name(module: str) -> str:
        found = names.get_name(module)
        if found is None:
            raise SurefastError(f"{module} has no GGUF tensor name for {arch}")
        return str(found)

    dtype = next(model.parameters()).dtype
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors: list[tuple[str, np.ndarray, Any]] = []  # (name, data, GGML type or None to infer), in model order
    done: set[str] = set()
    for key, t in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in codes and leaf != "bias":  # the weight (or a packed module's buffers): its codes, once
            if module not in done:
                tensors.append(quantized(module, codes[module]))
                done.add(module)
            continue
        if tied and key == "lm_head.weight":  # llama.cpp reuses token_embd
            continue
        order = rows(module)
        tensors.append(
            (f"{gguf_name(module)}.{leaf}", *_float_tensor(t.detach() if order is None else t.detach()[order]))
        )
    tensors += [quantized(m, qw) for m, qw in codes.items() if m not in done]
    for reason, modules in rounded_again.items():
        kept = "written de-quantized in float" if "blocks" in reason else f"re-quantized to {type} (a second rounding)"
        warnings.warn(f"{len(modules)} layers (the first: {modules[0]}): {reason}; {kept}", stacklevel=2)

    out = Path(out_path)
    tmp = tmp_path(out)
    with write_errors(out.parent, "choose a writable output folder"):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.upper()]])
            _write_hparams(writer, config, arch, type)
            _write_tokenizer(writer, tokenizer, int(config.vocab_size))
            for name, data, raw in tensors:
                writer.add_tensor(name, data, raw_dtype=raw)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            os.replace(tmp, out)  # readers see the whole file or none
        finally:
            tmp.unlink(missing_ok=True)
    return out
