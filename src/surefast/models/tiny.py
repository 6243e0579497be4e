"""Tiny, seeded, randomly initialised models for every supported architecture (no downloads).

Tests across the package build models here (the pytest fixture ``tiny`` wraps
:func:`tiny_model`), so every module is exercised on llama, qwen2, qwen3, qwen3-moe, gemma3
and the VLMs llava-onevision and qwen2.5-vl. The same seed always gives the same weights.

The tokenizer is byte-level BPE with a handful of merges: every byte is one token, and so are
``" A"`` .. ``" F"`` (as in real tokenizers, where a space-prefixed letter is its own token),
plus chat and vision special tokens.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_VOCAB = 384  # model vocabulary; the tokenizer uses the first ~290 ids
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<image>",
    "<video>",
)
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TEXT = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    initializer_range=0.1,
    tie_word_embeddings=False,
)
# A wide initializer gives peaked next-token distributions, so greedy ties are vanishingly rare.

TINY_ARCHITECTURES: tuple[str, ...] = (
    "llama",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "gemma3",
    "llava_onevision",
    "qwen2_5_vl",
)
TEXT_ARCHITECTURES = TINY_ARCHITECTURES[:5]
VLM_ARCHITECTURES = TINY_ARCHITECTURES[5:]


def tiny_tokenizer() -> Any:
    """A real ``PreTrainedTokenizerFast`` built in memory (no files, no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = [("Ġ", letter) for letter in "ABCDEF"]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    bpe = models.BPE(vocab=vocab, merges=merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        chat_template=_CHAT_TEMPLATE,
    )
    assert len(fast) <= TINY_VOCAB
    return fast


def _special(name: str) -> int:
    return 256 + 6 + SPECIAL_TOKENS.index(name)  # bytes, then the six merges, then specials


def tiny_config(arch: str) -> Any:
    """The config of the tiny model of ``arch`` (one of :data:`TINY_ARCHITECTURES`)."""
    from transformers import AutoConfig

    eos, pad = _special("<|im_end|>"), _special("<|pad|>")
    ids = dict(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    if arch in ("llama", "qwen2", "qwen3"):
        return AutoConfig.for_model(arch, **_TEXT, **ids, head_dim=16)
    if arch == "qwen3_moe":
        return AutoConfig.for_model(
            arch,
            **_TEXT,
            **ids,
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
    if arch == "gemma3":
        return AutoConfig.for_model(
            "gemma3_text",
            **_TEXT,
            **ids,
            head_dim=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=16,
        )
    if arch == "llava_onevision":
        vision = dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        )
        return AutoConfig.for_model(
            "llava_onevision",
            text_config=dict(model_type="qwen2", **_TEXT, **ids),
            vision_config=vision,
            image_token_index=_special("<image>"),
            video_token_index=_special("<video>"),
            vision_feature_layer=-1,
            vision_aspect_ratio="anyres_max_9",
            image_grid_pinpoints=[[28, 28], [28, 56]],
        )
    if arch == "qwen2_5_vl":
        text = dict(_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        return AutoConfig.for_model(
            "qwen2_5_vl",
            text_config=dict(model_type="qwen2_5_vl_text", **text, **ids),
            vision_config=vision,
            image_token_id=_special("<|image_pad|>"),
            video_token_id=_special("<|video_pad|>"),
            vision_start_token_id=_special("<|vision_start|>"),
            vision_end_token_id=_special("<|vision_end|>"),
            **ids,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; choose from {TINY_ARCHITECTURES}")


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A freshly initialised tiny model of ``arch``: same seed, same weights. Eval mode."""
    import transformers

    config = tiny_config(arch)
    cls = {
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
    }.get(arch, transformers.AutoModelForCausalLM)
    devnull = torch.Generator().manual_seed(seed)  # keep the caller's global RNG stream untouched
    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=devnull)))
    try:
        model = (
            cls.from_config(config, dtype=torch.float32) if cls is transformers.AutoModelForCausalLM else cls(config)
        )
    finally:
        torch.random.set_rng_state(state)
    return model.to(dtype).eval()
