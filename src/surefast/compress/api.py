"""The compression API: one frozen ``*Config`` per method, a registry, and :func:`compress_`.

``compress_(model, config, calibration=...)`` changes a Hugging Face causal LM in place, in the
style of torchao's ``quantize_(model, Int4WeightOnlyConfig(...))``: the config's type picks the
method from a registry that each method file fills with :func:`register`.

Plugging a method in (quantization here, pruning in ``compress/prune/``)::

    @dataclass(frozen=True)
    class WandaConfig(CompressionConfig):
        method: ClassVar[str] = "wanda"
        sparsity: float = 0.5

    @register(WandaConfig, needs=("sumsq",))
    def wanda_layer(weight, stats, config):      # weight: fp32 [out, in] copy; stats: LinearStats
        ...                                      # return the new weight, or (weight, info dict)

A function registered this way is called once per selected linear layer by the shared
layer-sequential pipeline (:mod:`surefast.compress.calibrate`), which gathers exactly the
statistics named in ``needs`` (see :class:`~surefast.compress.calibrate.LinearStats`). A method
that needs more (per-block scale migration, whole-model rotations, activation quantizers)
subclasses :class:`Method` and registers the class instead: ``@register(AWQConfig)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from surefast.errors import SurefastError
from surefast.registry import Registry, dashed, suggestion

FilterFn = Callable[[torch.nn.Module, str], bool]  # (module, qualified name) -> compress it?
ProgressFn = Callable[[str], None]
STAT_NAMES = frozenset({"sumsq", "absmax", "hessian", "inputs"})


@dataclass(frozen=True)
class CompressionConfig:
    """Base of every method config. Subclasses set ``method`` (the registry and CLI name)."""

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}


class Method:
    """One compression algorithm, driven by the pipeline. Override what the method needs.

    Call order inside :func:`compress_`: ``prepare_model`` (whole-model transforms, e.g. QuaRot's
    rotations), then, if ``needs`` is non-empty or ``uses_calibration``, the layer-sequential
    pipeline calls ``compress_block`` once per decoder block with the gathered statistics
    (without calibration data: once per block with ``stats`` empty), and finally
    ``finalize_model`` (install activation quantizers, online transforms) whose returned dict is
    saved in ``surefast_compression.json`` so :func:`apply_saved_compression_` can redo it.
    """

    needs: frozenset[str] = frozenset()  # subset of STAT_NAMES gathered per linear layer
    uses_calibration: bool = False  # run calibration data through the model even if needs is empty

    def __init__(self, config: CompressionConfig) -> None:
        self.config = config

    def prepare_model(self, model: torch.nn.Module, ctx: Any) -> None:
        """Whole-model work before calibration (``ctx``: :class:`~surefast.compress.calibrate.ModelContext`)."""

    def compress_block(self, block: Any) -> None:
        """Compress one decoder block (``block``: :class:`~surefast.compress.calibrate.BlockContext`).

        Default: :meth:`compress_layer` on every selected linear layer, writing results back.
        """
        for name, linear in block.linears.items():
            w = linear.weight.detach()
            w = w.clone() if w.dtype == torch.float32 else w.float()  # always a private fp32 copy
            out = self.compress_layer(name, w, block.stats.get(name))
            weight, info = out if isinstance(out, tuple) else (out, {})
            block.set_weight(name, weight, info)

    def compress_layer(self, name: str, weight: torch.Tensor, stats: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def finalize_model(self, model: torch.nn.Module, ctx: Any) -> dict[str, Any]:
        """Whole-model work after all blocks; returns the recipe saved for reloading."""
        return {}

    @classmethod
    def reapply(cls, model: torch.nn.Module, recipe: dict[str, Any]) -> None:
        """Re-install after loading what saved weights cannot hold (beyond input transforms)."""


class _LayerFnMethod(Method):
    """Adapter: a plain ``fn(weight, stats, config)`` registered with :func:`register`."""

    fn: ClassVar[Callable[..., Any]]

    def compress_layer(self, name: str, weight: torch.Tensor, stats: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
        return type(self).fn(weight, stats, self.config)


@dataclass(frozen=True)
class MethodEntry:
    """What :func:`register` records under a method name: its config class and the method that runs it."""

    config: type[CompressionConfig]
    method: type[Method]


METHODS: Registry[MethodEntry] = Registry("compression method", normalize=dashed)


def register(
    config_type: type[CompressionConfig], *, needs: tuple[str, ...] | frozenset[str] = ()
) -> Callable[[Any], Any]:
    """Register a :class:`Method` subclass, or a per-layer function, for ``config_type``."""
    unknown = set(needs) - STAT_NAMES
    if unknown:
        raise ValueError(f"unknown statistics {sorted(unknown)}; choose from {sorted(STAT_NAMES)}")
    if not getattr(config_type, "method", ""):
        raise ValueError(f"{config_type.__name__} must set the class attribute `method`")

    def deco(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, Method):
            cls = obj
            if needs:
                cls.needs = frozenset(needs)
        else:
            cls = type(
                f"{config_type.__name__}Method", (_LayerFnMethod,), {"fn": staticmethod(obj), "needs": frozenset(needs)}
            )
        METHODS.register(config_type.method, MethodEntry(config_type, cls))  # a second "gptq" is refused
        return obj

    return deco


def method_names() -> list[str]:
    return sorted(METHODS)


def config_class(name: str) -> type[CompressionConfig]:
    """The config class registered under ``name`` ("gptq", "wanda", ...), with did-you-mean."""
    return METHODS.get(name).config


def make_config(name: str, **overrides: Any) -> CompressionConfig:
    """``make_config("gptq", bits=4, group_size=128)``; ``None`` overrides keep the default."""
    cls = config_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in given:
        if key not in fields:
            takes = f"{name} takes {', '.join(sorted(fields)) or 'no options'}"
            raise SurefastError(f"{name} has no option {key!r}", suggestion(key, sorted(fields), otherwise=takes))
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # a plugin's annotations that do not resolve: its own checks only
        hints = {}
    for key, value in given.items():
        if key in hints:
            _check_option(name, key, value, hints[key])
    return cls(**given)


_KINDS: dict[type, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("a whole number", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    str: ("text", lambda v: isinstance(v, str)),
}


def _check_option(method: str, key: str, value: Any, annotation: Any) -> None:
    """Refuse an option of the wrong type by name, before any model loads, instead of a
    ValueError deep in a method (``bits="four"``) or a quietly odd run (``bits=4.5``;
    ``symmetric="no"``, which is truthy). Fields of other types (tuples, say) are not checked."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [k for k in (typing.get_args(annotation) if union else (annotation,)) if k is not type(None)]
    if not kinds or any(k not in _KINDS for k in kinds) or any(_KINDS[k][1](value) for k in kinds):
        return
    wanted = " or ".join(_KINDS[k][0] for k in kinds)
    hint = "in a YAML plan, put it in quotes (YAML reads an unquoted 2:4 as the number 124)" if str in kinds else None
    raise SurefastError(f"{method} option {key} expects {wanted}, got {value!r}", hint)


def config_from_dict(data: dict[str, Any]) -> CompressionConfig:
    data = dict(data)
    cls = config_class(data.pop("method"))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def method_for(config: CompressionConfig) -> Method:
    entry = METHODS.get(config.method) if config.method in METHODS else None
    if entry is None or entry.config is not type(config):  # the method is chosen by the config's type
        raise SurefastError(
            f"no compression method is registered for {type(config).__name__}",
            f"registered: {', '.join(sorted(METHODS))}",
        )
    return entry.method(config)


@dataclass
class CompressionResult:
    """What :func:`compress_` did: saved as ``surefast_compression.json`` beside the weights."""

    config: CompressionConfig
    calibration: dict[str, Any]  # the calibration config and its fingerprint ({} without data)
    layers: dict[str, dict[str, Any]]  # per-layer statistics (qualified name -> numbers)
    recipe: dict[str, Any]  # what apply_saved_compression_ re-installs after loading
    seconds: float
    base_fingerprint: str | None = None  # the uncompressed model's fingerprint, when known
    fingerprint: str = ""  # the compressed model's id, used as a key by the benchmark
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "config": self.config.to_dict(),
            "calibration": self.calibration,
            "base_fingerprint": self.base_fingerprint,
            "fingerprint": self.fingerprint,
            "seconds": round(self.seconds, 3),
            "recipe": self.recipe,
            "layers": self.layers,
            "extra": self.extra,
        }


def compression_fingerprint(config: CompressionConfig, calibration: dict[str, Any], base: str | None) -> str:
    from surefast import __version__

    blob = json.dumps(
        {
            "config": config.to_dict(),
            "calibration": calibration.get("fingerprint"),
            "base": base,
            "surefast": __version__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compress_(
    model: torch.nn.Module,
    config: CompressionConfig,
    calibration: Any = None,
    *,
    tokenizer: Any = None,
    filter_fn: FilterFn | None = None,
    base_fingerprint: str | None = None,
    progress: ProgressFn | None = None,
) -> CompressionResult:
    """Compress ``model`` in place with the method registered for ``config``.

    ``calibration``: a :class:`~surefast.compress.calibration_data.CalibrationConfig` (needs
    ``tokenizer``), a LongTensor of token ids ``[N, S]``, or ``None`` (the documented offline
    default, only read when the method needs data). ``filter_fn(module, name)`` picks the linear
    layers (default :func:`~surefast.compress.arch.default_filter`: every ``nn.Linear`` inside the
    decoder blocks; embeddings and ``lm_head`` are never touched).
    """
    from surefast.compress.calibrate import ModelContext, run_blocks

    method = method_for(config)
    start = time.perf_counter()
    ctx = ModelContext.build(
        model, filter_fn=filter_fn, calibration=calibration, tokenizer=tokenizer, progress=progress
    )
    with torch.no_grad():
        method.prepare_model(model, ctx)
    layers = run_blocks(model, method, ctx)
    with torch.no_grad():
        recipe = method.finalize_model(model, ctx)
    from surefast.compress.recipe import make_recipe  # late: it imports quant/, whose method files import this

    recipe = make_recipe(model, ctx.arch.model_type, ctx.unfused_experts, recipe)
    calib = ctx.calibration_info()
    result = CompressionResult(config, calib, layers, recipe, time.perf_counter() - start, base_fingerprint)
    result.fingerprint = compression_fingerprint(config, calib, base_fingerprint)
    return result
