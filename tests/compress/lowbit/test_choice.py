"""The kernel choice: measured once per machine and shape class, remembered in memory and on disk,
the fastest correct candidate (never one that misses the reference), forced by name for tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from surefast.compress.lowbit import KERNELS, Kernel, PackedLinear
from surefast.compress.lowbit import choice as choice_mod
from surefast.compress.lowbit.choice import (
    cache_file,
    choice_key,
    clear_choices,
    machine_key,
    measure,
    size_bucket,
    token_class,
)
from surefast.errors import SurefastError

from .conftest import quantized


def int4_layer(out: int = 32, inn: int = 128, **kw: Any) -> PackedLinear:
    qw, _ = quantized(out, inn, 4, 64, True)
    return PackedLinear.from_quantized(qw, torch.randn(out), format="int4", **kw)


def fake_timer(times: dict[str, float]) -> Any:
    """A timer reading each candidate's time from ``times`` (the partial carries the kernel)."""

    def timer(fn: Any, device: torch.device, repeats: int) -> float:
        fn()
        return times[fn.args[0].name]

    return timer


@pytest.fixture
def count_measures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real measurement, by choice key, with fixed times: int4-cpu fastest."""
    seen: list[str] = []
    real = choice_mod.measure

    def counting(layer: PackedLinear, x: torch.Tensor, kernels: list[Kernel], *a: Any, **kw: Any) -> Any:
        seen.append(choice_key(layer.spec, x.dtype, x.shape[0], "dense" in [k.name for k in kernels]))
        return real(layer, x, kernels, timer=fake_timer({"dequant-matmul": 5.0, "dense": 2.0, "int4-cpu": 1.0}))

    monkeypatch.setattr(choice_mod, "measure", counting)
    return seen


def test_fastest_correct_candidate_wins() -> None:
    layer = int4_layer()
    x = torch.randn(1, 128).bfloat16()
    kernels = choice_mod.candidates(layer, x.device, x.dtype, True)
    assert [k.name for k in kernels] == ["dequant-matmul", "dense", "int4-cpu"]  # compiled is opt-in
    got = measure(layer, x, kernels, timer=fake_timer({"dequant-matmul": 5.0, "dense": 2.0, "int4-cpu": 1.0}))
    assert got.kernel == "int4-cpu" and got.ms == {"dequant-matmul": 5.0, "dense": 2.0, "int4-cpu": 1.0}
    got = measure(layer, x, kernels, timer=fake_timer({"dequant-matmul": 5.0, "dense": 2.0, "int4-cpu": 3.0}))
    assert got.kernel == "dense"  # never slower than the unpacked model


def test_lean_layers_never_keep_a_dense_copy() -> None:
    assert "dense" not in [
        k.name for k in choice_mod.candidates(int4_layer(), torch.device("cpu"), torch.bfloat16, False)
    ]


def test_a_wrong_or_failing_kernel_is_never_chosen() -> None:
    layer = int4_layer()
    dense = KERNELS.get("dense")

    def swapped(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return dense.run(weight[:, torch.arange(weight.shape[1]).roll(1)], x, bias)  # a layout slip

    def boom(state: Any, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("no kernel for this shape")

    broken = Kernel("broken", dense.why_not, dense.prepare, swapped, "channels rolled by one")
    failing = Kernel("failing", dense.why_not, dense.prepare, boom, "raises")
    x = torch.randn(3, 128).bfloat16()
    fast = fake_timer({"broken": 0.1, "failing": 0.1, "dequant-matmul": 9.0})
    got = measure(layer, x, [broken, failing, KERNELS.get("dequant-matmul")], timer=fast)
    assert got.kernel == "dequant-matmul" and set(got.ms) == {"dequant-matmul"}
    assert got.rejected["broken"].startswith("differs from the fp32 reference")
    assert got.rejected["failing"] == "RuntimeError: no kernel for this shape"


def test_choice_is_measured_once_and_remembered_on_disk(count_measures: list[str]) -> None:
    layer, twin = int4_layer(), int4_layer()
    x = torch.randn(1, 128).bfloat16()
    layer(x)
    twin(x)  # same shape class: the first layer's measurement serves it
    assert len(count_measures) == 1
    assert layer.chosen_kernels() == {"cpu bfloat16 1": "int4-cpu"}
    stored = json.loads(cache_file().read_text())
    entry = stored["machines"][machine_key(x.device)][count_measures[0]]
    assert entry["kernel"] == "int4-cpu" and entry["ms"]["dense"] == 2.0
    clear_choices()
    int4_layer()(x)  # a new process: read from disk, not measured
    assert len(count_measures) == 1
    layer(torch.randn(64, 128).bfloat16())  # a prefill is another class
    assert len(count_measures) == 2 and "m33-128" in count_measures[1]


def test_losers_layouts_are_released(count_measures: list[str]) -> None:
    layer = int4_layer()
    layer(torch.randn(1, 128).bfloat16())
    assert {k[0] for k in layer._prepared} == {"int4-cpu"}  # the dense copy measured beside it is gone


def test_a_damaged_cache_file_is_measured_again(count_measures: list[str]) -> None:
    cache_file().parent.mkdir(parents=True, exist_ok=True)
    cache_file().write_text("{not json")
    int4_layer()(torch.randn(1, 128).bfloat16())
    assert len(count_measures) == 1 and json.loads(cache_file().read_text())["version"] == 1


def test_keys_separate_what_decides_speed() -> None:
    spec = int4_layer().spec
    keys = {choice_key(spec, torch.bfloat16, m, True) for m in (1, 2, 8, 9, 32, 33, 128, 129, 4000)}
    assert len(keys) == 5
    assert choice_key(spec, torch.bfloat16, 1, True) != choice_key(spec, torch.float32, 1, True)
    assert choice_key(spec, torch.bfloat16, 1, True) != choice_key(spec, torch.bfloat16, 1, False)
    assert [token_class(m) for m in (1, 5, 20, 100, 500)] == ["1", "2-8", "9-32", "33-128", "129+"]
    assert [size_bucket(n) for n in (1, 576, 1024, 1025, 8960)] == [1, 1024, 1024, 2048, 16384]
    key = machine_key(torch.device("cpu"))
    assert torch.backends.cpu.get_cpu_capability() in key and torch.__version__ in key and "threads 1" in key


def test_environment_forces_a_kernel(monkeypatch: pytest.MonkeyPatch, count_measures: list[str]) -> None:
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "Dense")
    layer = int4_layer()
    layer(torch.randn(2, 128))
    assert not count_measures and {k[0] for k in layer._prepared} == {"dense"}
    assert int4_layer(kernel="dequant-matmul").kernel == "dequant-matmul"  # the argument beats the variable


def test_an_unknown_forced_kernel_has_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "int4cpu")
    with pytest.raises(SurefastError) as err:
        int4_layer()(torch.randn(1, 128))
    assert err.value.message == "SUREFAST_LOWBIT_KERNEL: unknown low-bit kernel 'int4cpu'"
    assert err.value.hint == "did you mean 'int4-cpu'?"
    with pytest.raises(SurefastError, match="kernel: unknown low-bit kernel 'tinygem'"):
        int4_layer(kernel="tinygem")


def test_a_forced_kernel_that_cannot_run_says_why() -> None:
    qw, _ = quantized(8, 64, 8, -1, True)
    layer = PackedLinear.from_quantized(qw, None, format="int8", kernel="int4-cpu")
    with pytest.raises(SurefastError) as err:
        layer(torch.randn(1, 64).bfloat16())
    assert err.value.message == (
        "low-bit kernel 'int4-cpu' cannot run int8 8-bit sym per channel [8 x 64] with bfloat16 activations "
        "on cpu: it runs the int4 format, not int8"
    )
    assert "dequant-matmul, dense, int8-cpu" in (err.value.hint or "")


def test_a_forced_list_runs_the_first_kernel_that_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "int4_cpu, dense")
    qw, _ = quantized(8, 64, 8, -1, True)
    int8 = PackedLinear.from_quantized(qw, None, format="int8")
    int8(torch.randn(1, 64))
    int4 = int4_layer()
    int4(torch.randn(1, 128))
    assert {k[0] for k in int8._prepared} == {"dense"} and {k[0] for k in int4._prepared} == {"int4-cpu"}
    with pytest.raises(SurefastError) as err:
        PackedLinear.from_quantized(qw, None, format="int8", kernel="int4-cpu,int-mm")(torch.randn(1, 64))
    assert err.value.message.startswith("none of the low-bit kernels 'int4-cpu,int-mm' can run int8")
    assert "int-mm: it needs an activation grid" in err.value.message


def test_auto_forward_equals_the_reference() -> None:
    """End to end with the real timer: whatever wins is within the rounding of the reference."""
    layer = int4_layer(48, 576)
    x = torch.randn(1, 576).bfloat16()
    y = layer(x).float()
    ref = choice_mod.reference(layer, x)
    from surefast.compress.lowbit.kernels import error_bound

    bound = error_bound(x.float(), layer.dequantize(), choice_mod.expanded_scales(layer), ref, torch.bfloat16)
    assert bool(((y - ref).abs() <= bound).all())
    assert list(layer.chosen_kernels()) == ["cpu bfloat16 1"]


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, float]]:
    """Fixed candidate times per token class (``times[class][kernel]``); records what each measurement offered."""
    times: dict[str, dict[str, float]] = {}
    offered: dict[str, list[str]] = {}
    real = choice_mod.measure

    def fixed(layer: PackedLinear, x: torch.Tensor, kernels: list[Kernel], *a: Any, **kw: Any) -> Any:
        cls = token_class(x.shape[0])
        offered.setdefault(cls, []).append(",".join(k.name for k in kernels))
        return real(layer, x, kernels, timer=fake_timer(times[cls]))

    monkeypatch.setattr(choice_mod, "measure", fixed)
    times["offered"] = offered  # type: ignore[assignment]
    return times


def test_a_layer_whose_decode_kernel_beats_dense_never_keeps_a_dense_copy(timed: dict[str, Any]) -> None:
    timed["1"] = {"dequant-matmul": 5.0, "dense": 2.0, "int4-cpu": 1.0}
    timed["33-128"] = {"dequant-matmul": 5.0, "dense": 0.5, "int4-cpu": 3.0}  # a prefill: dense would win
    layer = int4_layer()
    layer(torch.randn(64, 128).bfloat16())  # the first input is a prefill: the decode decides first
    assert layer.chosen_kernels() == {"cpu bfloat16 1": "int4-cpu", "cpu bfloat16 33-128": "int4-cpu"}
    assert timed["offered"]["33-128"] == ["dequant-matmul,int4-cpu"]  # dense never offered
    assert {k[0] for k in layer._prepared} == {"int4-cpu"}  # no dense copy held


def test_a_layer_without_a_fast_decode_kernel_falls_back_to_dense(timed: dict[str, Any]) -> None:
    timed["1"] = {"dequant-matmul": 5.0, "dense": 1.0, "int4-cpu": 3.0}  # e.g. int8 on an AVX2-only CPU
    timed["33-128"] = {"dequant-matmul": 5.0, "dense": 0.5, "int4-cpu": 3.0}
    layer = int4_layer()
    layer(torch.randn(64, 128).bfloat16())
    assert layer.chosen_kernels() == {"cpu bfloat16 1": "dense", "cpu bfloat16 33-128": "dense"}
    assert {k[0] for k in layer._prepared} == {"dense"}  # the bf16 copy: never slower than the unpacked model
    assert layer.prepared_bytes() == 32 * 128 * 2


@pytest.mark.parametrize(("value", "dense"), [("0", False), ("1", True)])
def test_surefast_lowbit_dense_fixes_the_policy(timed: dict[str, Any], monkeypatch, value, dense) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUREFAST_LOWBIT_DENSE", value)
    timed["33-128"] = {"dequant-matmul": 5.0, "dense": 0.5, "int4-cpu": 3.0}
    layer = int4_layer()
    layer(torch.randn(64, 128).bfloat16())
    assert "1" not in timed["offered"]  # no decode probe
    assert layer.chosen_kernels() == {"cpu bfloat16 33-128": "dense" if dense else "int4-cpu"}


def test_a_bad_surefast_lowbit_dense_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUREFAST_LOWBIT_DENSE", "maybe")
    with pytest.raises(SurefastError, match="SUREFAST_LOWBIT_DENSE='maybe' is not 1, 0 or auto"):
        int4_layer()(torch.randn(2, 128).bfloat16())
