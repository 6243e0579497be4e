"""``surefast compress``: quantize or prune a model and save a loadable folder (``--pack``: a packed one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.status import Status

from surefast.models import parse_spec

if TYPE_CHECKING:  # the compression layer is imported when a command runs, not for --help
    import torch

    from surefast.compress import CompressionConfig, CompressionResult
    from surefast.compress.api import ProgressFn  # one line of text per step

console = Console()


def compress_model(
    spec: str,
    config: CompressionConfig,
    calibration_config: Any = None,
    out_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    pack: bool = False,
    pack_format: str | None = None,
    export: tuple[str, str | Path] | None = None,
    pack_head: str | None = None,
) -> CompressionResult:
    """Load ``spec``, compress it with ``config`` and (if ``out_dir``) save it: what the command runs.

    ``pack``: turn the recorded codes into packed low-bit layers before saving (``pack_format``:
    one format for every layer, default per layer; :func:`surefast.compress.lowbit.pack.pack_`),
    so the folder is a packed one; what was packed goes in ``result.extra["packed"]``.
    ``export``: ``(format, path)`` also writes the model for a server
    (:func:`surefast.compress.lowbit.export.export_model`); the path written goes in
    ``result.extra["exported"]``, any warning of the exporter (a layer re-quantized) in
    ``result.extra["export_warnings"]``.
    """
    from surefast.compress import compress_, save_compressed
    from surefast.models import load_model

    loaded = load_model(spec, dtype=dtype, device=device, progress=None)
    if progress:
        progress(f"loaded {spec}")
    result = compress_(
        loaded.model,
        config,
        calibration_config,
        tokenizer=loaded.tokenizer,
        base_fingerprint=loaded.fingerprint,
        progress=progress,
    )
    result.extra["model"] = spec
    if pack:
        from surefast.compress.lowbit.pack import pack_

        report = pack_(loaded.model, pack_format, head=pack_head)
        result.extra["packed"] = {
            "formats": report.count(),
            "layers": len(report.layers),
            "weight_bytes": report.weight_bytes,
            "dense_bytes": report.dense_bytes,
        }
        if progress:
            progress(f"packed {len(report.layers)} layers")
    if out_dir is not None:
        save_compressed(loaded.model, loaded.tokenizer, result, out_dir)
        if progress:
            progress(f"saved to {out_dir}")
    if export is not None:
        import warnings

        from surefast.compress.lowbit.export import export_model

        if progress:
            progress(f"exporting as {export[0]} to {export[1]}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = export_model(loaded.model, loaded.tokenizer, export[0], export[1])
        result.extra["exported"] = str(path)
        result.extra["export_warnings"] = [str(w.message) for w in caught]
    return result


def compress(
    method: Annotated[
        str,
        typer.Option(
            help="rtn, gptq, awq, smoothquant, quarot, spinquant, magnitude, wanda, sparsegpt, llm-pruner, slicegpt"
        ),
    ],
    model_arg: Annotated[
        str | None, typer.Argument(metavar="MODEL", help="model spec (or --model)", show_default=False)
    ] = None,
    model_opt: Annotated[str | None, typer.Option("--model", help="model spec", show_default=False)] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="output folder (a normal HF model folder + surefast_compression.json); default "
            "./<model>-<method>[-packed], or none with --export",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        tuple[str, Path] | None,
        typer.Option(
            metavar="FORMAT OUT",
            help="also write the model for a server: compressed-tensors (a folder for vLLM), gguf (a .gguf file "
            "or a folder for it: Q4_0 for 4-bit codes, else Q8_0), gguf-q4_0, gguf-q8_0",
            show_default=False,
        ),
    ] = None,
    pack: Annotated[
        bool,
        typer.Option(
            "--pack",
            help="save packed low-bit weights (int4, int8, w8a8) instead of de-quantized ones: a smaller, "
            "faster folder that `surefast` loads",
        ),
    ] = False,
    pack_format: Annotated[
        str | None, typer.Option(help="with --pack: int4, int8 or w8a8 for every layer (default: chosen per layer)")
    ] = None,
    pack_head: Annotated[
        str | None,
        typer.Option(
            help="with --pack: also round lm_head to int8 or int4 and pack it (faster decode; changes the model "
            "beyond the compressed one)",
            show_default=False,
        ),
    ] = None,
    bits: Annotated[int | None, typer.Option(help="weight bits")] = None,
    act_bits: Annotated[int | None, typer.Option(help="activation bits (W4A4: --bits 4 --act-bits 4)")] = None,
    group_size: Annotated[int | None, typer.Option(help="weight quantization group size")] = None,
    sparsity: Annotated[float | None, typer.Option(help="unstructured sparsity, 0-1")] = None,
    nm: Annotated[str | None, typer.Option(help="semi-structured N:M sparsity, e.g. 2:4")] = None,
    ratio: Annotated[float | None, typer.Option(help="structured pruning share (llm-pruner, slicegpt)")] = None,
    calibration: Annotated[
        str, typer.Option(help="stdlib (offline default), a .txt/.jsonl path or folder, or hf:NAME")
    ] = "stdlib",
    n_samples: Annotated[int | None, typer.Option(help="calibration sequences")] = None,
    seq_len: Annotated[int | None, typer.Option(help="calibration sequence length")] = None,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32")] = "bf16",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="any other config field KEY=VALUE, repeatable (e.g. -o act_order=False)"),
    ] = None,
) -> None:
    """Compress a model (defaults for every option come from the method's config)."""
    from surefast.cli.options import parse_options
    from surefast.compress import CalibrationConfig, make_config
    from surefast.errors import SurefastError

    if (model_arg is None) == (model_opt is None):
        raise SurefastError(
            "give the model once: as the first argument or with --model" if model_arg else "no model given",
            "e.g. surefast compress qwen2.5-coder-0.5b-instruct --method gptq --pack",
        )
    model = model_arg or model_opt or ""
    spec = parse_spec(model)  # fail on a bad spec first
    if export is not None:
        _check_export(export[0])
    if out is None and export is None:
        name = Path(spec.target).stem if spec.kind in ("local", "gguf") else spec.target.rpartition("/")[2]
        suffix = "-packed" if pack or pack_format is not None else ""
        out = Path(f"{name.replace(':', '-')}-{method.strip().lower()}{suffix}")
    options = {
        "bits": bits,
        "act_bits": act_bits,
        "group_size": group_size,
        "sparsity": sparsity,
        "nm": nm,
        "ratio": ratio,
        **parse_options(option or [], example="act_order=False"),
    }
    config = make_config(method, **options)
    if pack or pack_format is not None or pack_head is not None:
        _check_pack(config, pack_format, pack_head)
        pack = True
    defaults = CalibrationConfig()
    calib = CalibrationConfig(
        source=calibration,
        n_samples=defaults.n_samples if n_samples is None else n_samples,
        seq_len=defaults.seq_len if seq_len is None else seq_len,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its shard-writing bar would break the status line
    with Status(f"compressing {model} with {method}", console=console) as status:
        result = compress_model(
            model,
            config,
            calib,
            out,
            progress=lambda text: status.update(text),
            dtype=dtype,
            pack=pack,
            pack_format=pack_format,
            export=export,
            pack_head=pack_head,
        )
    saved = f"; saved to {out}" if out is not None else ""
    console.print(f"{config.method}: {result.seconds:.1f} s, fingerprint {result.fingerprint}{saved}", markup=False)
    if pack:
        info = result.extra["packed"]
        formats = ", ".join(f"{name} x{n}" for name, n in info["formats"].items())
        console.print(
            f"packed {info['layers']} layers ({formats}): {info['weight_bytes'] / 1e6:,.2f} MB of weights "
            f"({info['dense_bytes'] / 1e6:,.2f} MB as bf16)",
            markup=False,
        )
    if export is not None:
        for warning in result.extra["export_warnings"]:
            console.print(f"warning: {warning}", markup=False, style="yellow")
        console.print(f"exported as {export[0]} to {result.extra['exported']}", markup=False)
    if out is not None:
        console.print(f"evaluate it with: surefast bench run --model {out}", markup=False)
        console.print(f'run it with: surefast generate --model {out} "Hello"', markup=False)


def _check_export(format: str) -> None:
    """An unknown ``--export`` format fails before the model loads."""
    from surefast.compress.lowbit.export import EXPORTERS
    from surefast.errors import SurefastError

    try:
        EXPORTERS.get(format)
    except SurefastError as exc:
        raise SurefastError(f"--export: {exc.message}", exc.hint) from None


def _check_pack(config: CompressionConfig, pack_format: str | None, pack_head: str | None = None) -> None:
    """Refuse ``--pack`` for a config that records no codes, before the model loads."""
    from surefast.compress.lowbit.formats import get_format
    from surefast.compress.lowbit.pack import HEADS, packable
    from surefast.errors import SurefastError
    from surefast.registry import suggestion

    if pack_head is not None and pack_head not in HEADS:
        raise SurefastError(f"--pack-head: unknown head format {pack_head!r}", suggestion(pack_head, list(HEADS)))
    if pack_format is not None:
        try:
            get_format(pack_format)
        except SurefastError as exc:
            raise SurefastError(f"--pack-format: {exc.message}", exc.hint) from None
    refusal = packable(config)
    if refusal is not None:
        raise SurefastError(f"--pack: {refusal[0]}", refusal[1])
