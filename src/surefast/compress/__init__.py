"""Compression (quantization and pruning) of Hugging Face causal LMs, in place.

``compress_(model, config, calibration=...)`` with one frozen ``*Config`` per method; see
:mod:`surefast.compress.api` for the registry and how a method plugs into the shared
layer-sequential pipeline (:mod:`surefast.compress.calibrate`).
"""

# The built-in methods: importing the packages runs each method file's registration (and a
# broken file raises its own ImportError here, not "unknown method" later).
from surefast.compress import prune, quant
from surefast.compress.api import (
    CompressionConfig,
    CompressionResult,
    Method,
    compress_,
    config_class,
    make_config,
    method_names,
    register,
)
from surefast.compress.calibrate import BlockContext, LinearStats, ModelContext
from surefast.compress.calibration_data import CalibrationConfig, heldout_text
from surefast.compress.saved import apply_saved_compression_, read_compression, save_compressed

__all__ = [
    "BlockContext",
    "CalibrationConfig",
    "CompressionConfig",
    "CompressionResult",
    "LinearStats",
    "Method",
    "ModelContext",
    "apply_saved_compression_",
    "compress_",
    "config_class",
    "heldout_text",
    "make_config",
    "method_names",
    "prune",
    "quant",
    "read_compression",
    "register",
    "save_compressed",
]
