"""Quantization methods (simulated: weights, and activations where the scheme says so, are
quantized and de-quantized in the forward pass). One file per method; importing a file registers
its config with :func:`surefast.compress.api.register`, so each built-in method is imported here by
name (a broken file fails with its own ImportError, not "unknown compression method")."""

from surefast.compress.quant.awq import AWQConfig
from surefast.compress.quant.gptq import GPTQConfig
from surefast.compress.quant.quarot import QuaRotConfig
from surefast.compress.quant.rtn import RTNConfig
from surefast.compress.quant.smoothquant import SmoothQuantConfig
from surefast.compress.quant.spinquant import SpinQuantConfig

__all__ = ["AWQConfig", "GPTQConfig", "QuaRotConfig", "RTNConfig", "SmoothQuantConfig", "SpinQuantConfig"]
