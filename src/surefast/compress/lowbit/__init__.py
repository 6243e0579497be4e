"""Real low-bit weights: the integer codes a quantizer chose, packed formats, kernels, export.

A quantizer that rounds weights onto a per-group integer grid (RTN, GPTQ, AWQ, the weight part
of QuaRot/SpinQuant) can record what it chose as a :class:`~.codes.QuantizedWeight`. Packing
turns those into modules that hold packed codes and scales and run low-bit kernels; fake-quant
(the de-quantized bf16 weights) stays the reference every packed path is tested against.
"""

from surefast.compress.lowbit.codes import QuantizedWeight

__all__ = ["QuantizedWeight"]
