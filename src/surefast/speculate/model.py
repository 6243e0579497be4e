"""The narrow model interface of the speculative engine, and its adapter over HF causal LMs.

The engine needs only ``forward(ids, positions, cache, mask) -> logits`` (plus a prefill and a
fresh cache). Nothing here knows about trees: a tree is just a boolean mask saying which cached
and new slots each new token may attend to. A vision-language wrapper plugs in by implementing
the same protocol (typically overriding :meth:`HFCausalLM.prefill` to feed images, and mapping
positions); the engine never changes.

How the mask reaches the model (checked in transformers 5.23 ``masking_utils.py``): a 4D tensor
``[B, 1, T, past + T]`` passed as ``attention_mask`` is returned as-is by
``create_causal_mask`` / ``create_sliding_window_causal_mask`` and handed to the attention
function. Eager attention *adds* the mask to the scores, so it must be an additive float mask
(0 / dtype-min); SDPA accepts bool or additive float. We always pass additive float in the
model's dtype, which both honour. Models with sliding-window layers (Gemma-3, Qwen2 with
``use_sliding_window``) read a dict ``{layer_type: mask}``: the sliding entry gets the extra
window condition ``q_pos - k_pos < window`` (transformers' ``sliding_window_overlay``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from surefast.errors import SurefastError
from surefast.models.arch import cache_kwarg, output_head, text_config
from surefast.speculate.cache import KVCache

_ATTENTION_TYPES = {"full_attention", "sliding_attention"}


@runtime_checkable
class CausalLM(Protocol):
    """What the engine needs from a model (target or draft). Batch size is always 1."""

    vocab_size: int

    @property
    def device(self) -> torch.device: ...

    def new_cache(self) -> KVCache: ...

    def prefill(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run the prompt ``ids [1, S]`` (positions from ``len(cache)``) and return the last logits ``[V]``."""
        ...

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[T, V]`` for ``ids [1, T]`` at ``positions [1, T]``; the T new slots are appended to ``cache``.

        ``mask [T, len(cache) + T]`` (bool) says which cached slots and new tokens each new
        token attends to; ``cache.positions`` holds the position of every cached slot.
        """
        ...


def causal_mask(past: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[T, past + T]`` bool: every new token sees the whole past and the new tokens up to itself."""
    new = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return torch.cat([torch.ones(length, past, dtype=torch.bool, device=device), new], dim=1)


class HFCausalLM:
    """Adapter over a Hugging Face ``*ForCausalLM`` (llama, qwen2/3, qwen3-moe, gemma3, mistral, ...).

    Calls ``model(input_ids=[1, T], position_ids=[1, T], attention_mask=<4D additive>,
    cache=cache, use_cache=True)`` (``past_key_values=`` before transformers 5.24).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        config = text_config(model)  # a VLM's text_config: layer types, window and EOS live there
        self.config = config
        self.vocab_size = int(output_head(model).weight.shape[0])
        layer_types = getattr(config, "layer_types", None)
        unknown = set(layer_types or ()) - _ATTENTION_TYPES
        if unknown:
            raise SurefastError(
                f"{config.model_type} has {sorted(unknown)} layers, which the speculative engine cannot roll back",
                "use a pure-attention model (llama, qwen2/3, qwen3-moe, gemma3, mistral)",
            )
        self.window: int | None = getattr(config, "sliding_window", None)
        # Dict masks only for models that read them; plain tensor models with a window apply it to every layer.
        self.mask_keys: tuple[str, ...] | None = None
        if layer_types and "sliding_attention" in layer_types:
            self.mask_keys = tuple(sorted(set(layer_types)))
        self.window_everywhere = layer_types is None and self.window is not None
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        eos = getattr(config, "eos_token_id", None) if eos is None else eos
        self.eos_token_ids: tuple[int, ...] = () if eos is None else ((eos,) if isinstance(eos, int) else tuple(eos))
        self.cache_kwarg = cache_kwarg(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def new_cache(self) -> KVCache:
        return KVCache()

    def position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """The ``position_ids`` the model is called with for engine positions ``[1, T]`` (identity here).

        Subclasses map them when the model's positions are not plain indices (Qwen2.5-VL's
        3D M-RoPE: :mod:`surefast.speculate.vlm.mrope`).
        """
        return positions

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        # [T, S+T] bool -> [1, 1, T, S+T] additive float: 0 where allowed, dtype-min elsewhere
        out = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return out.masked_fill_(~allowed.to(self.device), torch.finfo(self.dtype).min)[None, None]

    def _masks(self, positions: torch.Tensor, cache: KVCache, mask: torch.Tensor) -> Any:
        windowed = mask
        if self.window is not None and (self.mask_keys is not None or self.window_everywhere):
            q = positions[0].cpu()  # [T]
            k = torch.cat([cache.positions, q])  # [S+T]: the position of every key
            windowed = mask & ((q[:, None] - k[None, :]) < self.window).to(mask.device)
        if self.mask_keys is not None:
            return {key: self._additive(windowed if key == "sliding_attention" else mask) for key in self.mask_keys}
        return self._additive(windowed)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        mask: torch.Tensor,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        past = len(cache)
        if mask.shape != (ids.shape[1], past + ids.shape[1]):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != (T, past + T) = ({ids.shape[1]}, {past + ids.shape[1]})"
            )
        out = self.model(
            input_ids=ids.to(self.device),
            position_ids=self.position_ids(positions).to(self.device),
            attention_mask=self._masks(positions, cache, mask),
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **{self.cache_kwarg: cache.hf},
        )
        cache.append_positions(positions)
        return out.logits[0]  # [T, V] (or fewer rows with logits_to_keep)

    def prefill(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        past, length = len(cache), ids.shape[1]
        positions = torch.arange(past, past + length).unsqueeze(0)
        return self.forward(ids, positions, cache, causal_mask(past, length), logits_to_keep=1)[-1]


def as_causal_lm(model: Any) -> CausalLM:
    """``model`` if it already speaks the engine's protocol, else an :class:`HFCausalLM` around it."""
    if isinstance(model, CausalLM):
        return model
    return HFCausalLM(model)
