"""``PackedLinear``: a linear layer that holds packed integer codes and scales, and runs a kernel.

Built from the :class:`~.codes.QuantizedWeight` a quantizer recorded (never from de-quantized
floats) by :meth:`PackedLinear.from_quantized`, or empty from a :class:`PackedSpec` for loading
(``PackedLinear(spec)`` then ``load_state_dict``: no dense weight is ever built). Its buffers are
what a packed folder stores: ``qweight`` (the format's layout), ``scales`` fp32 ``[out, n_groups]``,
``zeros`` fp32 (asymmetric grids only) and ``bias``. Scales and zero points stay fp32 when the
model is cast (``model.to(torch.bfloat16)``), so the codes keep meaning exactly what the
quantizer chose; the bias follows the model's dtype, as an ``nn.Linear``'s would.

``forward(x [..., in])`` runs one kernel from :mod:`.kernels`: the one forced by the
``kernel`` argument or ``SUREFAST_LOWBIT_KERNEL``, else the fastest correct one measured on this
machine for the input's shape class (:mod:`.choice`). With an activation grid (``act``: W8A8, or
a QuaRot/SmoothQuant layer) the input is quantized per token as the fake-quant model does.
While autograd records (``x.requires_grad``) the differentiable ``dequant-matmul`` runs.

One copy of the codes: torch's int4 CPU kernel keeps the nibbles in its own tile order, a copy
as large as ``qweight``. While ``int4-cpu`` is the only kernel a layer has prepared, the layer
drops its stored ``qweight`` and rebuilds it from the kernel's layout whenever it is read
(``state_dict``, saving, export, ``dequantize``): exactly, since the layout is a reordering
(:func:`~.kernels.int4_cpu_stored`, checked against the stored codes before they are dropped).
Any other kernel's preparation, a move (``.to``) or ``load_state_dict`` restores it first.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from surefast.compress.lowbit import choice
from surefast.compress.lowbit.codes import QuantizedWeight
from surefast.compress.lowbit.formats import FORMATS, dequantize_packed, get_format
from surefast.compress.lowbit.kernels import KERNELS, Kernel, int4_cpu_stored
from surefast.compress.lowbit.w8a8 import ActQuant
from surefast.compress.quant.fake import check_bits, fake_quant_tokens
from surefast.errors import SurefastError
from surefast.registry import suggestion


@dataclass(frozen=True)
class PackedSpec:
    """The static facts of one packed layer: what a loader needs to allocate it, and what a
    kernel needs to say whether it can run it. ``group_size`` is at most ``in_features``
    (``== in_features``: one scale per output channel)."""

    format: str
    in_features: int
    out_features: int
    bits: int
    group_size: int
    symmetric: bool
    bias: bool = False
    act: ActQuant | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", FORMATS.canonical(self.format))
        check_bits(self.bits)
        if self.in_features < 1 or self.out_features < 1 or self.group_size < 1:
            raise SurefastError(
                f"packed layer [{self.out_features} x {self.in_features}] with group size {self.group_size}: "
                "sizes must be positive"
            )
        object.__setattr__(self, "group_size", min(self.group_size, self.in_features))
        if get_format(self.format).quantizes_activations and self.act is None:
            object.__setattr__(self, "act", ActQuant())

    @property
    def n_groups(self) -> int:
        return -(-self.in_features // self.group_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the per-layer metadata of a packed folder."""
        d = asdict(self)
        d["act"] = None if self.act is None else asdict(self.act)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "packed layer") -> PackedSpec:
        """Inverse of :meth:`to_dict`; a missing or unknown key is one line naming it (``where``: the file/layer)."""
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise SurefastError(f"{where}: unknown key {key!r}", suggestion(key, known))
        missing = [
            k for k in ("format", "in_features", "out_features", "bits", "group_size", "symmetric") if k not in d
        ]
        if missing:
            raise SurefastError(f"{where}: missing key {missing[0]!r}", "re-pack the model")
        act = d.get("act")
        try:
            return cls(**{**d, "act": None if act is None else ActQuant(**act)})
        except TypeError as exc:
            raise SurefastError(f"{where}: {exc}", "re-pack the model") from None

    def grid(self, act: bool = True) -> str:
        """The grid in a few words: ``4-bit sym g128``, ``8-bit sym per channel, act int8``."""
        groups = "per channel" if self.group_size >= self.in_features else f"g{self.group_size}"
        text = f"{self.bits}-bit {'sym' if self.symmetric else 'asym'} {groups}"
        return text + (f", act int{self.act.bits}" if act and self.act is not None else "")

    def describe(self) -> str:
        """``int4 4-bit sym g128 [out x in]`` (and the activation grid): for messages and ``repr``."""
        act = f", act int{self.act.bits}" if self.act is not None else ""
        return f"{self.format} {self.grid(act=False)} [{self.out_features} x {self.in_features}]{act}"


INT4_CPU = "int4-cpu"  # the kernel whose layout can stand in for the stored codes


class PackedLinear(nn.Module):
    """See the module docstring. ``kernel``: a name from :data:`~.kernels.KERNELS` or ``"auto"``
    (None: ``SUREFAST_LOWBIT_KERNEL``, else auto); ``allow_dense``: whether the automatic choice
    may keep a de-quantized copy of the weight (the ``dense`` kernel: never slower than the
    unpacked model, at its memory cost); None: ``SUREFAST_LOWBIT_DENSE``, else decided on a
    one-token decode (:mod:`.choice`, "Memory")."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(
        self,
        spec: PackedSpec,
        *,
        bias_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        kernel: str | None = None,
        allow_dense: bool | None = None,
    ) -> None:
        super().__init__()
        fmt = get_format(spec.format)
        self.spec = spec
        self.kernel = None if kernel is None else choice.check_name(kernel)
        self.allow_dense = allow_dense
        out, groups = spec.out_features, spec.n_groups
        shape = fmt.packed_shape(out, spec.in_features)
        self.register_buffer("qweight", torch.zeros(shape, dtype=fmt.packed_dtype, device=device))
        self.register_buffer("scales", torch.ones(out, groups, dtype=torch.float32, device=device))
        zeros = None if spec.symmetric else torch.zeros(out, groups, dtype=torch.float32, device=device)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", torch.zeros(out, dtype=bias_dtype, device=device) if spec.bias else None)
        self._prepared: dict[tuple[str, str, torch.dtype], Any] = {}  # (kernel, device, dtype) -> its layout
        self._chosen: dict[tuple[str, torch.dtype, str], str] = {}  # (device, dtype, token class) -> kernel
        self._dense: dict[tuple[str, torch.dtype], bool] = {}  # (device, dtype) -> dense allowed (when decided)
        self._rebuild: Any = None  # () -> qweight, while the stored codes are dropped (module docstring)
        self._keep_codes = False  # the kernel layout could not rebuild them: never drop again
        self._register_state_dict_hook(_restore_in_state_dict)

    @classmethod
    def from_quantized(
        cls,
        qw: QuantizedWeight,
        bias: torch.Tensor | None = None,
        *,
        format: str = "int4",
        act: ActQuant | None = None,
        kernel: str | None = None,
        allow_dense: bool | None = None,
    ) -> PackedLinear:
        """Pack ``qw``'s codes in ``format`` ("int4", "int8", "w8a8"); ``act``: the per-token
        activation grid (W8A8 defaults to int8 symmetric). Scales and zeros are kept exactly."""
        fmt = get_format(format)
        fmt.check(qw)
        out, inn = qw.shape
        spec = PackedSpec(fmt.name, inn, out, qw.bits, qw.group_size, qw.symmetric, bias is not None, act)
        bias_dtype = bias.dtype if bias is not None else torch.bfloat16
        layer = cls(spec, bias_dtype=bias_dtype, device=qw.codes.device, kernel=kernel, allow_dense=allow_dense)
        layer.qweight.copy_(fmt.pack(qw.codes, qw.symmetric))
        layer.scales.copy_(qw.scales)
        if layer.zeros is not None and qw.zeros is not None:
            layer.zeros.copy_(qw.zeros)
        if layer.bias is not None and bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    @property
    def in_features(self) -> int:
        return self.spec.in_features

    @property
    def out_features(self) -> int:
        return self.spec.out_features

    @property
    def act(self) -> ActQuant | None:
        return self.spec.act

    def to_quantized(self) -> QuantizedWeight:
        """The codes, scales and zeros this layer holds, unpacked (``from_quantized``'s inverse)."""
        codes = get_format(self.spec.format).unpack(self.qweight, self.in_features, self.spec.symmetric)
        zeros = None if self.zeros is None else self.zeros.clone()
        return QuantizedWeight(codes, self.scales.clone(), zeros, self.spec.bits, self.spec.group_size)

    def dequantize(self) -> torch.Tensor:
        """``W_hat [out, in]`` fp32, bit for bit the fake-quant weight before its cast."""
        s = self.spec
        return dequantize_packed(s.format, self.qweight, self.scales, self.zeros, s.in_features, s.bits, s.group_size)

    def weight_bytes(self) -> int:
        """Bytes of the stored weight, as a packed folder holds it: codes, scales, zero points (not the bias)."""
        fmt = get_format(self.spec.format)
        rows, cols = fmt.packed_shape(self.out_features, self.in_features)
        codes = rows * cols * torch.empty((), dtype=fmt.packed_dtype).element_size()
        return codes + sum(t.numel() * t.element_size() for t in (self.scales, self.zeros) if t is not None)

    @property
    def codes_dropped(self) -> bool:
        """Whether ``qweight`` is now rebuilt from the int4 kernel's layout on each read (module docstring)."""
        return self._rebuild is not None

    def resident_bytes(self) -> int:
        """Bytes this layer holds in memory now: its buffers (``qweight`` unless dropped) and the kernels' layouts."""
        present = [t for t in self._buffers.values() if t is not None]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in present}
        for state in self._prepared.values():
            storages.update({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _tensors(state)})
        return sum(storages.values())

    def prepared_bytes(self) -> int:
        """Bytes the kernels' own layouts hold beside the stored buffers (e.g. a ``dense`` weight)."""
        own = {t.untyped_storage().data_ptr() for t in self._buffers.values() if t is not None}
        return sum(
            t.untyped_storage().nbytes()
            for state in self._prepared.values()
            for t in _tensors(state)
            if t.untyped_storage().data_ptr() not in own
        )

    def chosen_kernels(self) -> dict[str, str]:
        """``"<device> <dtype> <token class>"`` -> the kernel chosen, for reports and benchmarks."""
        return {f"{d} {str(t).removeprefix('torch.')} {m}": k for (d, t, m), k in self._chosen.items()}

    def extra_repr(self) -> str:
        chosen = ", ".join(f"{m}: {k}" for (_, _, m), k in self._chosen.items())
        return f"{self.spec.describe()}, bias={self.spec.bias}, kernel={self.kernel or 'auto'}" + (
            f" ({chosen})" if chosen else ""
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if x2.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features)
        kernel = self.kernel_for(x2)
        y = self.run_kernel(kernel, x2)
        return y.reshape(*lead, self.out_features)

    def kernel_for(self, x2: torch.Tensor) -> Kernel:
        """The kernel that runs ``x2 [M, K]`` (forced, cached or measured now)."""
        if x2.requires_grad and torch.is_grad_enabled():
            return KERNELS.get("dequant-matmul")  # the only one autograd can go through
        name = choice.requested(self.kernel)
        if name != choice.AUTO:
            return choice.forced(name, self.spec, str(x2.device), x2.dtype)
        local = (str(x2.device), x2.dtype, choice.token_class(x2.shape[0]))
        if local not in self._chosen:
            dense = self.dense_allowed(x2)  # may choose the one-token class itself
            if local not in self._chosen:
                self._chosen[local] = choice.choose(self, x2, dense)
            self.release(set(self._chosen.values()))  # the losers' layouts (a dense copy) go
        return KERNELS.get(self._chosen[local])

    def dense_allowed(self, x2: torch.Tensor) -> bool:
        """Whether the automatic choice may keep a dense copy for ``x2``'s device and dtype: the
        ``allow_dense`` given, or decided once on a one-token decode (its choice is kept as that class's)."""
        fixed = self.allow_dense if self.allow_dense is not None else choice.dense_default()
        if fixed is not None:
            return fixed
        where = (str(x2.device), x2.dtype)
        if where not in self._dense:
            decode = choice.choose(self, x2[:1], True)
            self._dense[where] = decode == "dense"
            self._chosen[(*where, choice.token_class(1))] = decode  # lean candidates would pick it too
        return self._dense[where]

    def run_kernel(self, kernel: Kernel, x2: torch.Tensor) -> torch.Tensor:
        """``kernel`` on ``x2 [M, K]`` -> ``[M, N]``, the activation grid applied as the fake-quant model does."""
        if self.spec.act is not None and not kernel.quantizes_activations:
            act = self.spec.act
            x2 = fake_quant_tokens(x2, act.bits, act.symmetric, act.clip)
        return kernel.run(self.prepared(kernel, x2.dtype), x2, self.bias)

    def prepared(self, kernel: Kernel, dtype: torch.dtype) -> Any:
        """``kernel``'s layout of this layer for ``dtype`` activations, built once."""
        key = (kernel.name, str(self.scales.device), dtype)
        if key not in self._prepared:
            if kernel.name != INT4_CPU:
                self.restore_codes()  # a kernel that reads qweight holds it: keep it stored, not rebuilt
            self._prepared[key] = kernel.prepare(self, dtype)
            if kernel.name == INT4_CPU:
                self.drop_codes()  # only when it is the one layout held
        return self._prepared[key]

    def release(self, keep: set[str]) -> None:
        """Drop the prepared layouts of every kernel not in ``keep`` (after a choice); then, if
        ``int4-cpu`` alone is left, drop the stored codes it duplicates (module docstring)."""
        for key in [k for k in self._prepared if k[0] not in keep]:
            del self._prepared[key]
        self.drop_codes()

    def drop_codes(self) -> bool:
        """Drop ``qweight`` if the one prepared layout is ``int4-cpu``'s and rebuilds it exactly; returns whether dropped."""
        if self._rebuild is not None:
            return True
        if self._keep_codes or len(self._prepared) != 1:
            return False
        (name, _, _), state = next(iter(self._prepared.items()))
        if name != INT4_CPU:
            return False
        rebuild = functools.partial(int4_cpu_stored, state, self.in_features, self.spec.symmetric)
        rebuilt, stored = rebuild(), self._buffers["qweight"]
        if rebuilt is None or stored is None or not torch.equal(rebuilt, stored):
            self._keep_codes = True  # another layout (an AVX2 build): keep both copies
            return False
        self._buffers["qweight"] = None
        self._rebuild = rebuild
        return True

    def restore_codes(self) -> None:
        """Store ``qweight`` again (rebuilt from the kernel layout) if it was dropped."""
        if self._rebuild is not None:
            self._buffers["qweight"] = self._rebuild()
            self._rebuild = None

    def __getattr__(self, name: str) -> Any:
        if name == "qweight":
            rebuild = self.__dict__.get("_rebuild")
            if rebuild is not None:
                return rebuild()  # [out, ceil(in / 2)] uint8, a fresh copy each read
        return super().__getattr__(name)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        self.restore_codes()
        self._prepared.clear()
        self._chosen.clear()
        self._dense.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        # Scales and zero points must stay fp32 through model.to(dtype)/.half(): take only the
        # device from `fn`. Kernel layouts belong to the old device or dtype: rebuild on use.
        self.restore_codes()
        kept = {name: getattr(self, name) for name in ("scales", "zeros")}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = getattr(self, name)
            if old is not None and new is not None and new.dtype != torch.float32:
                self._buffers[name] = old.to(device=new.device)
        self._prepared.clear()
        self._chosen.clear()
        self._dense.clear()
        return self


def _restore_in_state_dict(module: nn.Module, state: dict[str, Any], prefix: str, local: Any) -> None:
    """``state_dict`` of a layer whose codes are dropped still holds ``qweight`` (rebuilt), in buffer order."""
    if isinstance(module, PackedLinear) and module.codes_dropped:
        items = list(state.items())
        state.clear()
        for key, value in items:
            if key == f"{prefix}scales":
                state[f"{prefix}qweight"] = module.qweight
            state[key] = value


def _tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if hasattr(state, "__dataclass_fields__"):
        return [v for f in fields(state) if isinstance(v := getattr(state, f.name), torch.Tensor)]
    return []
