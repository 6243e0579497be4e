"""SAGE speculative decoding: entropy-guided adaptive draft trees, verified losslessly by the target.

Start with :func:`speculative_generate` (every method, one harness) or :class:`SpeculativeDecoder`
(streaming); :mod:`.policies` documents the SAGE formulas, :mod:`.verify` the lossless sampling,
:mod:`.engine` the loop, ``docs/speculate.md`` all of it.
"""

from surefast.speculate.api import METHODS, load_pair, speculative_generate, stream_text
from surefast.speculate.cache import KVCache
from surefast.speculate.engine import SpecOutput, SpeculativeDecoder
from surefast.speculate.model import CausalLM, HFCausalLM, as_causal_lm
from surefast.speculate.policies import (
    DEFAULT_STATIC_TREE,
    POLICY_CONFIGS,
    ChainConfig,
    DynamicTreeConfig,
    SageConfig,
    StaticTreeConfig,
    make_policy,
    normalized_topk_entropy,
    policy_config,
)
from surefast.speculate.stats import SpecStats, StepRecord, TreeShape
from surefast.speculate.tune import BudgetReport, tune_budget
from surefast.speculate.verify import GREEDY, SamplingConfig

__all__ = [
    "DEFAULT_STATIC_TREE",
    "GREEDY",
    "METHODS",
    "POLICY_CONFIGS",
    "BudgetReport",
    "CausalLM",
    "ChainConfig",
    "DynamicTreeConfig",
    "HFCausalLM",
    "KVCache",
    "SageConfig",
    "SamplingConfig",
    "SpecOutput",
    "SpecStats",
    "SpeculativeDecoder",
    "StaticTreeConfig",
    "StepRecord",
    "TreeShape",
    "as_causal_lm",
    "load_pair",
    "make_policy",
    "normalized_topk_entropy",
    "policy_config",
    "speculative_generate",
    "stream_text",
    "tune_budget",
]
