"""read_safetensors: the same tensors as safetensors' own reader, each aligned; bad files are one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from surefast.compress.lowbit.read import read_safetensors
from surefast.errors import SurefastError


def test_reads_what_safetensors_writes_into_aligned_tensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(3, 5, generator=g).bfloat16(),
        "b": torch.randint(-128, 127, (7, 9), dtype=torch.int8, generator=g),
        "c": torch.randint(0, 255, (4,), dtype=torch.uint8, generator=g),
        "d": torch.randn(2, 2, 2, generator=g),
        "e": torch.zeros(0, 3),
        "f": torch.tensor(3.5, dtype=torch.float16),
        "g": torch.tensor([True, False]),
        "h": torch.arange(5, dtype=torch.int64),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    got, ref = read_safetensors(path), load_file(str(path))
    assert got.keys() == ref.keys() == tensors.keys()
    for name, t in ref.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape and torch.equal(got[name], t)
        assert got[name].numel() == 0 or got[name].data_ptr() % 64 == 0
    assert any(t.numel() and t.data_ptr() % 64 for t in ref.values())  # why: the mapped ones are not aligned


@pytest.mark.parametrize(
    ("cut", "says"), [(4, "too short"), (20, "unreadable safetensors header"), (-3, "is truncated")]
)
def test_a_damaged_file_is_one_line(tmp_path, cut, says) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.randn(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(SurefastError, match=says) as err:
        read_safetensors(path)
    assert str(path) in err.value.message


def test_a_missing_file_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SurefastError, match="cannot read"):
        read_safetensors(tmp_path / "none.safetensors")
