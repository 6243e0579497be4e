"""Packed formats: unpack(pack(codes)) == codes exactly, the int4 byte layout against plain loops,
odd sizes, and the refusals (a code too wide for the format, an unknown format name)."""

from __future__ import annotations

import pytest
import torch

from surefast.compress.lowbit import (
    FORMATS,
    QuantizedWeight,
    get_format,
    pack_int4,
    pack_int8,
    unpack_int4,
    unpack_int8,
)
from surefast.compress.lowbit.formats import code_range
from surefast.compress.lowbit.int4 import unsigned_codes
from surefast.errors import SurefastError


def random_codes(out: int, inn: int, bits: int, symmetric: bool, seed: int = 0) -> torch.Tensor:
    lo, hi = code_range(bits, symmetric)
    return torch.randint(lo, hi + 1, (out, inn), generator=torch.Generator().manual_seed(seed)).to(torch.int8)


def int4_bytes_by_loops(codes: torch.Tensor, symmetric: bool) -> list[list[int]]:
    """The documented layout, one byte at a time: channel 2j low nibble, 2j + 1 high, +8 if symmetric."""
    rows = []
    for row in codes.tolist():
        u = [c + 8 if symmetric else c for c in row]
        if len(u) % 2:
            u.append(8 if symmetric else 0)
        rows.append([u[j] | (u[j + 1] << 4) for j in range(0, len(u), 2)])
    return rows


@pytest.mark.parametrize("inn", [1, 2, 7, 32, 33, 100, 576])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_round_trip_and_layout(inn: int, bits: int, symmetric: bool) -> None:
    codes = random_codes(5, inn, bits, symmetric, seed=inn * 10 + bits)
    packed = pack_int4(codes, symmetric)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (5, (inn + 1) // 2)
    assert packed.tolist() == int4_bytes_by_loops(codes, symmetric)
    assert torch.equal(unpack_int4(packed, inn, symmetric), codes)
    nibbles = unsigned_codes(packed, inn)
    assert torch.equal(nibbles, codes.int() + (8 if symmetric else 0))


def test_int4_extremes_survive() -> None:
    codes = torch.tensor([[-8, 7, 0, -1, 3]], dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(codes, True), 5, True), codes)
    codes = torch.tensor([[0, 15, 8, 1]], dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(codes, False), 4, False), codes)


def test_int4_words_are_compressed_tensors_words() -> None:
    """Read as little-endian int32, a row of 8 nibbles is one 'pack-quantized' word, lowest nibble first."""
    codes = random_codes(3, 16, 4, True)
    words = pack_int4(codes, True).view(torch.int32)  # [3, 2]
    u = (codes.long() + 8).tolist()
    for r in range(3):
        for w in range(2):
            expect = sum(u[r][8 * w + i] << (4 * i) for i in range(8))
            assert int(words[r, w]) & 0xFFFFFFFF == expect


@pytest.mark.parametrize("inn", [1, 33, 576])
@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (4, True), (7, False), (4, False)])
def test_int8_round_trip(inn: int, bits: int, symmetric: bool) -> None:
    codes = random_codes(4, inn, bits, symmetric)
    packed = pack_int8(codes, symmetric)
    assert packed.dtype == torch.int8 and tuple(packed.shape) == (4, inn)
    assert packed.data_ptr() != codes.data_ptr()  # a copy: packing never aliases the quantizer's tensor
    assert torch.equal(unpack_int8(packed, inn, symmetric), codes)


@pytest.mark.parametrize("name", ["int4", "int8", "w8a8"])
def test_every_format_round_trips_through_its_registration(name: str) -> None:
    fmt = FORMATS.get(name)
    for symmetric in (True, False):
        bits = min(fmt.max_bits, 4 if not symmetric else fmt.max_bits)
        codes = random_codes(6, 37, bits, symmetric)
        packed = fmt.pack(codes, symmetric)
        assert tuple(packed.shape) == fmt.packed_shape(6, 37) and packed.dtype == fmt.packed_dtype
        assert torch.equal(fmt.unpack(packed, 37, symmetric), codes)


def test_int4_refuses_8_bit_codes() -> None:
    qw = QuantizedWeight(torch.zeros(2, 8, dtype=torch.int8), torch.ones(2, 1), None, 8, 8)
    with pytest.raises(SurefastError) as err:
        get_format("int4").check(qw)
    assert "at most 4 bits" in err.value.message and "int8" in (err.value.hint or "")


def test_codes_outside_the_grid_are_refused() -> None:
    qw = QuantizedWeight(torch.full((2, 8), 9, dtype=torch.int8), torch.ones(2, 1), None, 4, 8)
    with pytest.raises(SurefastError, match=r"outside \[-8, 7\]"):
        get_format("int4").check(qw)


def test_unknown_format_has_a_suggestion() -> None:
    with pytest.raises(SurefastError) as err:
        get_format("int5")
    assert "unknown packed format 'int5'" in err.value.message and "did you mean" in (err.value.hint or "")
    assert get_format("W8A8").name == "w8a8"
