"""Export a quantized model by format name: what ``surefast compress --export FORMAT OUT`` runs.

=======================  =======================================================================
``compressed-tensors``   a folder for vLLM / llm-compressor (:mod:`.export_ct`): ``OUT`` is the folder
``gguf``                 one ``.gguf`` file for llama.cpp / Ollama (:mod:`.export_gguf`): Q4_0 when
                         every code has at most 4 bits, else Q8_0
``gguf-q4-0``            the same, Q4_0 forced (8-bit codes are then re-quantized, with a warning)
``gguf-q8-0``            the same, Q8_0 forced
=======================  =======================================================================

For ``gguf``, an ``OUT`` that does not end in ``.gguf`` is a folder: the file goes in it as
``model-<TYPE>.gguf`` (``gguf-q4_0`` is read as ``gguf-q4-0``). The codes come from :func:`~.pack.model_codes` (packed layers or the
quantizer's records), never from de-quantized floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.pack import model_codes
from surefast.errors import SurefastError
from surefast.registry import Registry, dashed


@dataclass(frozen=True)
class Exporter:
    name: str
    write: Callable[[nn.Module, dict[str, QuantizedWeight], Any, Path], Path]
    description: str


EXPORTERS: Registry[Exporter] = Registry("export format", normalize=dashed)


def _ct(model: nn.Module, codes: dict[str, QuantizedWeight], tokenizer: Any, out: Path) -> Path:
    from surefast.compress.lowbit.export_ct import export_compressed_tensors

    return export_compressed_tensors(model, codes, tokenizer, out)


def gguf_type(codes: dict[str, QuantizedWeight]) -> str:
    """Q4_0 when every code fits 4 bits (the file is then the certified model), else Q8_0."""
    return "Q4_0" if codes and max(qw.bits for qw in codes.values()) <= 4 else "Q8_0"


def _gguf(forced: str | None) -> Callable[[nn.Module, dict[str, QuantizedWeight], Any, Path], Path]:
    def write(model: nn.Module, codes: dict[str, QuantizedWeight], tokenizer: Any, out: Path) -> Path:
        from surefast.compress.lowbit.export_gguf import export_gguf

        kind = forced or gguf_type(codes)
        path = out if out.suffix == ".gguf" else out / f"model-{kind}.gguf"
        return export_gguf(model, codes, tokenizer, path, type=kind)

    return write


for _exporter in (
    Exporter("compressed-tensors", _ct, "a compressed-tensors folder (vLLM, llm-compressor)"),
    Exporter("gguf", _gguf(None), "a GGUF file, Q4_0 for 4-bit codes else Q8_0 (llama.cpp, Ollama)"),
    Exporter("gguf-q4-0", _gguf("Q4_0"), "a GGUF file in Q4_0"),
    Exporter("gguf-q8-0", _gguf("Q8_0"), "a GGUF file in Q8_0"),
):
    EXPORTERS.register(_exporter.name, _exporter)


def export_model(model: nn.Module, tokenizer: Any, format: str, out: str | Path) -> Path:
    """Write ``model``'s quantized linears in ``format`` (module docstring) to ``out``; returns the path written."""
    exporter = EXPORTERS.get(format)
    codes = model_codes(model)
    if not codes:
        raise SurefastError(
            f"nothing to export as {exporter.name}: the model has no quantized weights with recorded codes",
            "export right after compressing with rtn, gptq, awq, smoothquant, quarot or spinquant, or from a "
            "packed folder (a fake-quant folder holds only de-quantized floats)",
        )
    return exporter.write(model, codes, tokenizer, Path(out))
