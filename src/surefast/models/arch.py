"""One home for reading a model's structure: decoder blocks, text config, language model, final norm, head.

No modeling files are copied. What can be found generically is found generically, the same way
for a text model and a vision-language model (VLM):

==================  =========================================================================
text config         ``config.get_text_config(decoder=True)``: a VLM's ``text_config``, else
                    the config itself (:func:`text_config`)
language model      ``get_decoder()``: ``LlamaModel``, a VLM's ``model.language_model``; the
                    module mapping ids to final normed hidden states (:func:`decoder_body`)
decoder blocks      the ``nn.ModuleList`` of identical modules holding the most weights, so a
                    VLM's vision tower is passed over (:func:`decoder_layers`)
final norm          the language model's :attr:`ArchFacts.final_norm` (:func:`final_norm`)
output head         ``get_output_embeddings()``, else ``lm_head`` (:func:`output_head`)
==================  =========================================================================

What cannot be discovered safely (which norm feeds which projections, whether a norm multiplies
by ``w`` or ``1 + w``, sandwich post-norms, what a head does after its matmul) lives in the small
:data:`ARCH_FACTS` table, keyed by the text config's ``model_type``; ``tests/models/test_arch.py``
checks every row and every function above against the tiny model of every supported
architecture (:data:`surefast.models.tiny.TINY_ARCHITECTURES`, the VLMs included).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from surefast.errors import SurefastError

DEFAULT_MAX_LENGTH = 4096  # context length of a model whose config names none


@dataclass(frozen=True)
class ArchFacts:
    model_type: str
    attn_norm: str = "input_layernorm"  # the norm whose output feeds q/k/v
    mlp_norm: str = "post_attention_layernorm"  # the norm whose output feeds gate/up (or the router)
    post_norms: tuple[str, ...] = ()  # norms applied to a sub-layer's output before the residual add
    norm_offset: float = 0.0  # RMSNorm scales by (offset + w): 1.0 for Gemma
    attn: str = "self_attn"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    mlp: str = "mlp"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    final_norm: str = "norm"  # on the language model (decoder_body)
    embed_scale: bool = False  # embeddings multiplied by a constant (Gemma): linear, so harmless
    # What the head does after ``hidden @ W.T`` (+ bias): ("mul" or "div", config attribute), applied
    # when the text config sets it. The gemma family's soft-cap needs no row: it is read from
    # ``final_logit_softcapping`` whenever set (None in Gemma-3, 30.0 in Gemma-2).
    logit_scale: tuple[str, str] | None = None


_GEMMA = ArchFacts(
    "gemma3_text",
    mlp_norm="pre_feedforward_layernorm",
    post_norms=("post_attention_layernorm", "post_feedforward_layernorm"),
    norm_offset=1.0,
    embed_scale=True,
)
ARCH_FACTS: dict[str, ArchFacts] = {
    "llama": ArchFacts("llama"),
    "mistral": ArchFacts("mistral"),
    "qwen2": ArchFacts("qwen2"),
    "qwen3": ArchFacts("qwen3"),
    "qwen3_moe": ArchFacts("qwen3_moe"),
    "gemma3_text": _GEMMA,
    "gemma3": _GEMMA,
    "gemma2": _GEMMA,
    # Heads that rescale their logits (scoring reads these rows; compression has no checked facts
    # for these models beyond the llama defaults).
    **{name: ArchFacts(name, logit_scale=("mul", "logit_scale")) for name in ("cohere", "cohere2")},
    **{
        name: ArchFacts(name, logit_scale=("div", "logits_scaling"))
        for name in ("granite", "granitemoe", "granitemoeshared", "granitemoehybrid")
    },
}


def text_config(model: Any) -> Any:
    """The config of the text decoder: a VLM's ``text_config``, else ``model.config`` itself."""
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def arch_facts(model: nn.Module) -> ArchFacts:
    """The facts for ``model``; unknown llama-like models get the llama defaults if they fit."""
    config = getattr(model, "config", None)
    model_type = str(getattr(text_config(model), "model_type", "") or "") if config is not None else ""
    if model_type in ARCH_FACTS:
        return ARCH_FACTS[model_type]
    return ArchFacts(model_type or "unknown")


def decoder_body(model: Any) -> Any:
    """The module that maps ids to final (normed) hidden states: ``LlamaModel``, a VLM's language model."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if body is None or body is model:
        body = getattr(model, "model", None) or getattr(model, "base_model", None)
    if body is None or body is model or not hasattr(body, "forward"):
        raise SurefastError(
            f"cannot find the decoder body of {type(model).__name__}",
            "scoring needs a causal LM whose get_decoder() returns the transformer body",
        )
    return body


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the ``ModuleList`` of same-class non-linear modules holding the most weights."""
    best, best_size = None, -1
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(m) for m in module}
            if (
                len(kinds) == 1
                and not isinstance(module[0], nn.Linear)
                and any(isinstance(x, nn.Linear) for x in module[0].modules())
            ):
                size = sum(p.numel() for p in module.parameters())
                if size > best_size:
                    best, best_size = module, size
    if best is None:
        raise SurefastError(
            f"cannot find the decoder blocks of {type(model).__name__}",
            "surefast compresses decoder-only transformers (llama, qwen2/3, qwen3-moe, gemma3)",
        )
    return best


def decoder_prefix(model: nn.Module) -> str:
    """The qualified name of :func:`decoder_layers` (``model.layers``, ``model.language_model.layers``)."""
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    return ""


def final_norm(model: Any) -> Any:
    """The norm after the last block, on the language model (None if the facts name none there)."""
    return get(decoder_body(model), arch_facts(model).final_norm)


def output_head(model: Any) -> Any:
    """The output embedding (``lm_head``) that turns final hidden states into logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        head = getattr(model, "lm_head", None)
    if head is None:
        raise SurefastError(f"{type(model).__name__} has no output embedding (lm_head) to score letters with")
    return head


def model_max_length(model: Any) -> int:
    """The context length the text config allows (``max_position_embeddings``), else 4096."""
    return int(getattr(text_config(model), "max_position_embeddings", None) or DEFAULT_MAX_LENGTH)


def get(module: Any, path: str) -> Any:
    """``module.a.b.c`` for ``path`` ``"a.b.c"``, or None where a step is missing."""
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def cache_kwarg(module: Any) -> str:
    """The forward's cache keyword: ``cache`` from transformers 5.24 (``past_key_values`` warns there).

    Read off the class's forward: an instance's may be wrapped (hooks, tests) behind ``*args, **kwargs``.
    """
    return "cache" if "cache" in inspect.signature(type(module).forward).parameters else "past_key_values"
