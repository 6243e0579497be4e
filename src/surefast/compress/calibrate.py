"""The shared layer-sequential calibration pipeline (quantization and pruning use the same one).

1. Capture the hidden states entering decoder block 0 for every calibration sample, with a
   forward pre-hook that raises a private exception to stop the forward there. The keyword
   arguments each block receives (position embeddings, attention masks: Gemma3 gives sliding
   and full layers different ones) are captured once per block from one full forward of the
   first sample; all samples have the same length, so they are shared by every batch.
2. For each block: run it once with forward hooks on its selected linears that accumulate the
   statistics the method asked for (:class:`LinearStats`), call ``method.compress_block``, then
   rerun the *compressed* block to produce the inputs of the next block (errors of earlier blocks
   are seen by later ones, as in GPTQ and SparseGPT's sequential mode).

Memory: the inputs and outputs of one block (``2 x N x S x H`` in the model's dtype) plus the
statistics of one block's linears are alive at a time; the rest of the model sits idle.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from surefast.compress.arch import block_linears, unfuse_experts_
from surefast.compress.quant.fake import codes_of, record_codes_
from surefast.models.arch import ArchFacts, arch_facts, decoder_layers, decoder_prefix, get

MAX_INPUT_ROWS = 4096  # raw input rows kept per linear when a method needs "inputs"
BATCH_SIZE = 4  # calibration samples per block forward


class _Stop(Exception):
    """Raised by the block-0 pre-hook to end a forward early."""


@dataclass
class LinearStats:
    """Statistics of one linear layer's inputs ``X [n_rows, in]`` over the calibration set.

    ``sumsq[j] = sum_t X[t, j]^2`` (Wanda's ``||X_j||_2^2``; AWQ/SmoothQuant magnitudes);
    ``absmax[j] = max_t |X[t, j]|`` (SmoothQuant); ``hessian = 2/n X^T X`` in fp32 (GPTQ,
    SparseGPT: OBS with the layer-wise squared error); ``inputs``: up to ``MAX_INPUT_ROWS`` rows
    of ``X`` taken at a regular stride (AWQ's scale search). Fields not asked for stay ``None``.
    """

    n_rows: int = 0
    sumsq: torch.Tensor | None = None  # [in] fp32
    absmax: torch.Tensor | None = None  # [in] fp32
    hessian: torch.Tensor | None = None  # [in, in] fp32
    inputs: torch.Tensor | None = None  # [r, in] fp32

    @property
    def act_norm(self) -> torch.Tensor:
        """``||X_j||_2`` per input channel (Wanda)."""
        assert self.sumsq is not None, "register the method with needs=('sumsq',)"
        return self.sumsq.sqrt()

    @property
    def mean_abs(self) -> torch.Tensor:
        """Root-mean-square input magnitude per channel (AWQ's activation salience)."""
        assert self.sumsq is not None
        return (self.sumsq / max(self.n_rows, 1)).sqrt()


class _Collector:
    def __init__(self, needs: frozenset[str], in_features: int, stride: int) -> None:
        self.needs, self.stride = needs, stride
        self.stats = LinearStats()
        self._rows: list[torch.Tensor] = []
        if "sumsq" in needs:
            self.stats.sumsq = torch.zeros(in_features)
        if "absmax" in needs:
            self.stats.absmax = torch.zeros(in_features)
        if "hessian" in needs:
            self.stats.hessian = torch.zeros(in_features, in_features)

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()  # [T, in]
        n, m = self.stats.n_rows, x.shape[0]
        if m == 0:
            return
        s = self.stats
        if s.sumsq is not None:
            s.sumsq += x.pow(2).sum(0)
        if s.absmax is not None:
            torch.maximum(s.absmax, x.abs().amax(0), out=s.absmax)
        if s.hessian is not None:  # running mean of 2 x x^T, exact in fp32 at any n
            s.hessian.mul_(n / (n + m)).addmm_(x.T, x, alpha=2.0 / (n + m))
        if "inputs" in self.needs:
            self._rows.append(x[:: self.stride].clone())
        s.n_rows = n + m

    def finish(self) -> LinearStats:
        if self._rows:
            self.stats.inputs = torch.cat(self._rows)[:MAX_INPUT_ROWS]
        return self.stats


@dataclass
class ModelContext:
    """What the pipeline knows about the model being compressed (passed to ``prepare_model``)."""

    model: nn.Module
    arch: ArchFacts
    layers: nn.ModuleList
    prefix: str  # qualified name of the decoder ModuleList ("model.layers")
    filter_fn: Any
    calibration: Any
    tokenizer: Any
    progress: Any
    unfused_experts: list[str] = field(default_factory=list)
    selected: dict[str, nn.Linear] = field(default_factory=dict)  # every linear handed to the method
    _ids: torch.Tensor | None = None

    @classmethod
    def build(
        cls, model: nn.Module, *, filter_fn: Any, calibration: Any, tokenizer: Any, progress: Any
    ) -> ModelContext:
        unfused = unfuse_experts_(model)
        return cls(
            model,
            arch_facts(model),
            decoder_layers(model),
            decoder_prefix(model),
            filter_fn,
            calibration,
            tokenizer,
            progress,
            unfused,
        )

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def ids(self) -> torch.Tensor:
        """The calibration token ids ``[N, S]`` (built on first use)."""
        if self._ids is None:
            from surefast.compress.calibration_data import CalibrationConfig, calibration_ids

            cal = self.calibration
            if isinstance(cal, torch.Tensor):
                self._ids = cal.long()
            else:
                self._ids = calibration_ids(cal or CalibrationConfig(), self.tokenizer)
        return self._ids

    def calibration_info(self) -> dict[str, Any]:
        if self._ids is None:
            return {}
        cal = self.calibration
        if isinstance(cal, torch.Tensor):
            import hashlib

            digest = hashlib.sha256(cal.long().cpu().numpy().tobytes()).hexdigest()[:16]
            return {"source": "token-ids", "n_samples": cal.shape[0], "seq_len": cal.shape[1], "fingerprint": digest}
        from surefast.compress.calibration_data import CalibrationConfig

        cal = cal or CalibrationConfig()
        return {**asdict(cal), "fingerprint": cal.fingerprint(self.tokenizer)}

    def block_name(self, i: int) -> str:
        return f"{self.prefix}.{i}" if self.prefix else str(i)


@dataclass
class BlockContext:
    """One decoder block handed to ``Method.compress_block``."""

    index: int
    name: str  # qualified name ("model.layers.3")
    block: nn.Module
    linears: dict[str, nn.Linear]  # qualified name -> selected linear layer
    stats: dict[str, LinearStats]  # qualified name -> statistics ({} without calibration)
    arch: ArchFacts
    inputs: list[torch.Tensor] | None  # the block's input hidden states, batches [b, S, H]
    kwargs: dict[str, Any]
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-layer stats for the result

    def sub(self, path: str) -> Any:
        """A submodule by path relative to the block ("self_attn.q_proj"), or None."""
        return get(self.block, path)

    def qualified(self, path: str) -> str:
        return f"{self.name}.{path}"

    def set_weight(self, name: str, weight: torch.Tensor, info: dict[str, Any] | None = None) -> None:
        """Write ``weight`` into linear ``name`` (cast to its dtype) and record per-layer numbers.

        The integer codes ``weight`` carries (a quantizer's de-quantized output,
        :func:`~surefast.compress.quant.fake.codes_of`) move onto the linear, where packing finds
        them; a weight without codes (a pruned or rotated one) forgets any the linear held.
        """
        lin = self.linears[name]
        old = lin.weight.detach().float()
        new = weight.to(old.device, torch.float32)
        rel = ((new - old).norm() / old.norm().clamp_min(1e-12)).item()
        lin.weight.data.copy_(new.to(lin.weight.dtype))
        record_codes_(lin, codes_of(weight))
        self.info[name] = {
            "shape": list(old.shape),
            "rel_change": round(rel, 6),
            "sparsity": round(1.0 - torch.count_nonzero(lin.weight).item() / lin.weight.numel(), 6),
            **{k: _plain(v) for k, v in (info or {}).items()},
        }

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _call_block(self.block, hidden, self.kwargs)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return round(v, 6) if isinstance(v, float) else v


def _call_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def capture_block_inputs(ctx: ModelContext, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Block-0 inputs for every sample (batches) and each block's keyword arguments."""
    model, layers = ctx.model, ctx.layers
    device = next(model.parameters()).device
    kwargs: list[dict[str, Any]] = [{} for _ in layers]

    def keep_kwargs(i: int) -> Any:
        def hook(module: nn.Module, args: tuple, kw: dict[str, Any]) -> None:
            kwargs[i] = {
                k: v for k, v in kw.items() if k != "hidden_states" and k not in ("past_key_values", "past_key_value")
            }
            kwargs[i]["use_cache"] = False

        return hook

    handles = [layer.register_forward_pre_hook(keep_kwargs(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model(ids[:1].to(device), use_cache=False)  # one full forward records every block's kwargs
    finally:
        for h in handles:
            h.remove()

    inputs: list[torch.Tensor] = []

    def grab(module: nn.Module, args: tuple, kw: dict[str, Any]) -> None:
        inputs.append((args[0] if args else kw["hidden_states"]).detach())
        raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in ids.split(BATCH_SIZE):
            with contextlib.suppress(_Stop):
                model(batch.to(device), use_cache=False)
    finally:
        handle.remove()
    return inputs, kwargs


def gather_stats(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    inputs: list[torch.Tensor],
    kwargs: dict[str, Any],
    needs: frozenset[str],
) -> dict[str, LinearStats]:
    """Run the block over all inputs, accumulating ``needs`` for every linear.

    Linears called on the very same input tensor (q, k and v; gate and up) share one set of
    statistics, so a Hessian is accumulated once per distinct input, not once per linear.
    """
    total_rows = sum(x.shape[0] * x.shape[1] for x in inputs)
    stride = max(1, -(-total_rows // MAX_INPUT_ROWS))
    collectors = {name: _Collector(needs, lin.in_features, stride) for name, lin in linears.items()}
    owner: dict[str, str] = {}  # linear -> the linear whose collector holds its (shared) input
    batch_inputs: dict[int, tuple[torch.Tensor, str]] = {}  # id -> (tensor kept alive, first reader)

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0]
            seen = batch_inputs.get(id(x))
            if seen is not None and seen[0] is x and seen[1] != name:
                owner.setdefault(name, seen[1])
                if owner[name] == seen[1]:
                    return
            batch_inputs.setdefault(id(x), (x, name))
            collectors[name](module, args, output)

        return hook

    handles = [lin.register_forward_hook(hook_for(name)) for name, lin in linears.items()]
    try:
        for x in inputs:
            batch_inputs.clear()
            _call_block(block, x, kwargs)
    finally:
        batch_inputs.clear()
        for h in handles:
            h.remove()
    stats = {name: c.finish() for name, c in collectors.items() if name not in owner}
    return {name: stats[owner.get(name, name)] for name in linears}


def run_blocks(model: nn.Module, method: Any, ctx: ModelContext) -> dict[str, dict[str, Any]]:
    """Drive ``method`` over every decoder block; returns the per-layer statistics."""
    layers_info: dict[str, dict[str, Any]] = {}
    use_data = bool(method.needs) or method.uses_calibration
    with torch.no_grad():
        inputs, kwargs = capture_block_inputs(ctx, ctx.ids()) if use_data else (None, [{} for _ in ctx.layers])
        for i, block in enumerate(ctx.layers):
            ctx.say(f"block {i + 1}/{len(ctx.layers)}")
            name = ctx.block_name(i)
            linears = block_linears(block, name, ctx.filter_fn)
            ctx.selected.update(linears)
            stats = (
                gather_stats(block, linears, inputs, kwargs[i], method.needs)
                if inputs is not None and method.needs
                else {}
            )
            bctx = BlockContext(i, name, block, linears, stats, ctx.arch, inputs, kwargs[i])
            method.compress_block(bctx)
            layers_info.update(bctx.info)
            del stats, bctx
            if inputs is not None and i + 1 < len(ctx.layers):
                inputs = [_call_block(block, x, kwargs[i]) for x in inputs]
    return layers_info
