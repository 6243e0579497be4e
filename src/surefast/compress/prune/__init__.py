"""Pruning: unstructured and N:M (magnitude, Wanda, SparseGPT) and structured (LLM-Pruner, SliceGPT).

Each method is one file with a frozen ``*Config`` and a pure core; importing a file registers its
config with :func:`surefast.compress.api.register` (for :func:`~surefast.compress.api.compress_`),
so every built-in method file is imported here by name. See ``docs/prune.md``.
"""

from surefast.compress.prune.llm_pruner import LLMPrunerConfig, llm_prune_
from surefast.compress.prune.magnitude import MagnitudeConfig
from surefast.compress.prune.masks import achieved_sparsity, layer_mask, nm_mask, parse_nm, row_mask, sparsity_mask
from surefast.compress.prune.slicegpt import SliceGPTConfig, slice_
from surefast.compress.prune.sparsegpt import SparseGPTConfig
from surefast.compress.prune.wanda import WandaConfig

__all__ = [
    "LLMPrunerConfig",
    "MagnitudeConfig",
    "SliceGPTConfig",
    "SparseGPTConfig",
    "WandaConfig",
    "achieved_sparsity",
    "layer_mask",
    "llm_prune_",
    "nm_mask",
    "parse_nm",
    "row_mask",
    "slice_",
    "sparsity_mask",
]
