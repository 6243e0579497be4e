"""Real low-bit weights: the integer codes a quantizer chose, packed formats, kernels, export.

A quantizer that rounds weights onto a per-group integer grid (RTN, GPTQ, AWQ, the weight part
of QuaRot/SpinQuant) can record what it chose as a :class:`~.codes.QuantizedWeight`. Packing
turns those into modules that hold packed codes and scales and run low-bit kernels; fake-quant
(the de-quantized bf16 weights) stays the reference every packed path is tested against.
"""

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.formats import FORMATS, PackedFormat, get_format
from surefast.compress.lowbit.int4 import pack_int4, unpack_int4
from surefast.compress.lowbit.int8 import pack_int8, unpack_int8
from surefast.compress.lowbit.kernels import KERNELS, Kernel
from surefast.compress.lowbit.linear import PackedLinear, PackedSpec
from surefast.compress.lowbit.w8a8 import ActQuant

__all__ = [
    "FORMATS",
    "KERNELS",
    "ActQuant",
    "Kernel",
    "PackedFormat",
    "PackedLinear",
    "PackedSpec",
    "QuantizedWeight",
    "get_format",
    "pack_int4",
    "pack_int8",
    "unpack_int4",
    "unpack_int8",
]
