"""Model sources: a spec string -> a loaded Hugging Face model, tokenizer and fingerprint."""

from surefast.models.load import LoadedModel, fingerprint, load_model, resolve_dtype
from surefast.models.registry import DEFAULT_MODEL, REGISTRY, PackagedModel, get_packaged
from surefast.models.spec import ModelSpec, parse_spec

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "LoadedModel",
    "ModelSpec",
    "PackagedModel",
    "fingerprint",
    "get_packaged",
    "load_model",
    "parse_spec",
    "resolve_dtype",
]
