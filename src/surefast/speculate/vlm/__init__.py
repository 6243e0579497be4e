"""SAGE speculative decoding for vision-language models: LLaVA-OneVision and Qwen2.5-VL, images and video.

Start with :func:`vlm_speculative_generate` (text + images / video in, :class:`VLMSpecOutput`
out). The pieces: :mod:`.inputs` (processor or hand-built inputs), :mod:`.adapter` (the VLMs
as the engine's ``CausalLM``), :mod:`.mrope` (Qwen2.5-VL's 3D positions for tree nodes),
:mod:`.prune` (draft-side visual-token pruning), :mod:`.datasets` (the paper's benchmarks).
``docs/speculate_vlm.md`` explains all of it.
"""

from surefast.speculate.vlm.adapter import LlavaOnevisionLM, Qwen25VLM, VisionLM, vision_lm
from surefast.speculate.vlm.generate import (
    VLMSpecOutput,
    load_processor,
    vlm_decoder,
    vlm_methods,
    vlm_speculative_generate,
    vlm_target_generate,
)
from surefast.speculate.vlm.inputs import VLM_ARCHITECTURES, VisualInputs, prepare_inputs
from surefast.speculate.vlm.mrope import MRopeConfig, mrope_positions
from surefast.speculate.vlm.prune import PruneConfig, PruneReport, select_kept

__all__ = [
    "VLM_ARCHITECTURES",
    "LlavaOnevisionLM",
    "MRopeConfig",
    "PruneConfig",
    "PruneReport",
    "Qwen25VLM",
    "VLMSpecOutput",
    "VisionLM",
    "VisualInputs",
    "load_processor",
    "mrope_positions",
    "prepare_inputs",
    "select_kept",
    "vision_lm",
    "vlm_decoder",
    "vlm_methods",
    "vlm_speculative_generate",
    "vlm_target_generate",
]
