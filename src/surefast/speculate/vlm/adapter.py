"""LLaVA-OneVision and Qwen2.5-VL as the engine's :class:`~surefast.speculate.model.CausalLM`.

A VLM adapter is bound to one prompt's :class:`~.inputs.VisualInputs`. Its ``prefill`` runs the
vision path once (the vision tensors go in with the prompt ids; the model puts the visual
features in place of the placeholder tokens) and, for a draft with a :class:`~.prune.PruneConfig`,
then drops visual tokens from its own cache. Every later ``forward`` (draft levels, target tree
verification) is text-only and inherits :class:`~surefast.speculate.model.HFCausalLM`'s 4D tree
masks: the language models under both VLMs take them as they are.

Positions: LLaVA-OneVision uses plain 1D positions (nothing to map). Qwen2.5-VL's M-RoPE needs
3D ids; the prompt's come from :func:`~.mrope.mrope_positions` and a tree node at engine
position ``p`` gets ``p + rope_delta`` on all three axes (:mod:`.mrope`).
"""

from __future__ import annotations

from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.speculate.cache import KVCache
from surefast.speculate.model import HFCausalLM
from surefast.speculate.vlm.inputs import VisualInputs, architecture
from surefast.speculate.vlm.mrope import MRopeConfig, mrope_positions, text_positions
from surefast.speculate.vlm.prune import PruneConfig, PruneReport, prune_visual_cache_


class VisionLM(HFCausalLM):
    """A Hugging Face VLM bound to one prompt's visual inputs (batch size 1)."""

    def __init__(self, model: Any, inputs: VisualInputs | None = None, prune: PruneConfig | None = None) -> None:
        super().__init__(model)
        self.arch = architecture(model)
        self.prune = prune or PruneConfig()
        self.inputs: VisualInputs | None = None
        self.last_prune: PruneReport | None = None  # set by every prefill with ratio > 0
        if inputs is not None:
            self.bind(inputs)

    def bind(self, inputs: VisualInputs) -> VisionLM:
        """Use ``inputs`` for the next prefills (their ``input_ids`` must be the prompt given to the engine)."""
        self.inputs = inputs.to(self.device)
        return self

    def _prefill_kwargs(self) -> dict[str, Any]:
        assert self.inputs is not None
        return dict(self.inputs.vision)

    def prompt_position_ids(self, index: int) -> torch.Tensor:
        """The model's position ids of prompt slot ``index`` (``[1, 1]``; Qwen2.5-VL: ``[3, 1, 1]``)."""
        return torch.tensor([[index]])

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run the prompt with its images / video into an empty ``cache``; last logits ``[V]``."""
        if self.inputs is None:
            raise SurefastError("the VLM adapter has no visual inputs bound", "call bind(prepare_inputs(...)) first")
        ids = ids.reshape(1, -1)
        if len(cache):
            raise SurefastError("a VLM prompt must be prefilled into an empty cache")
        if not torch.equal(ids.cpu(), self.inputs.input_ids.cpu()):
            raise SurefastError("the prompt differs from the bound visual inputs' input_ids")
        out = self.model(
            input_ids=ids.to(self.device),
            past_key_values=cache.hf,
            use_cache=True,
            logits_to_keep=1,
            **self._prefill_kwargs(),
        )
        cache.append_positions(torch.arange(ids.shape[1]))
        logits = out.logits[0, -1]  # [V]
        self.last_prune = None
        if self.prune.ratio > 0:
            self.last_prune = prune_visual_cache_(self, cache, ids.cpu(), self.inputs.visual_mask.cpu(), self.prune)
        return logits


class LlavaOnevisionLM(VisionLM):
    """LLaVA-OneVision: 1D positions; anyres image tiles / pooled video frames enter at prefill."""


class Qwen25VLM(VisionLM):
    """Qwen2.5-VL: 3D M-RoPE positions for the prompt, ``p + rope_delta`` on all axes after it."""

    def __init__(self, model: Any, inputs: VisualInputs | None = None, prune: PruneConfig | None = None) -> None:
        self.mrope = MRopeConfig.from_model(model)
        self.rope_delta = 0
        self.prompt_positions = torch.zeros(3, 0, dtype=torch.long)  # [3, S]
        super().__init__(model, inputs, prune)

    def bind(self, inputs: VisualInputs) -> VisionLM:
        super().bind(inputs)
        v = inputs.vision
        self.prompt_positions, self.rope_delta = mrope_positions(
            inputs.input_ids.cpu(),
            self.mrope,
            v.get("image_grid_thw"),
            v.get("video_grid_thw"),
            v.get("second_per_grid_ts"),
        )
        return self

    def position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        return text_positions(positions, self.rope_delta)  # [1, T] -> [3, 1, T]

    def prompt_position_ids(self, index: int) -> torch.Tensor:
        return self.prompt_positions[:, None, index : index + 1]  # [3, 1, 1]

    def _prefill_kwargs(self) -> dict[str, Any]:
        return {**super()._prefill_kwargs(), "position_ids": self.prompt_positions[:, None, :].to(self.device)}


def vision_lm(model: Any, inputs: VisualInputs | None = None, prune: PruneConfig | None = None) -> VisionLM:
    """The adapter of ``model``'s architecture (LLaVA-OneVision or Qwen2.5-VL), optionally bound and pruning."""
    cls = Qwen25VLM if architecture(model) == "qwen2_5_vl" else LlavaOnevisionLM
    return cls(model, inputs, prune)
