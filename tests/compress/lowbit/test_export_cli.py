"""``surefast compress ... --export FORMAT OUT`` and ``export_model``: the exporters by name, from packed or unpacked models."""

from __future__ import annotations

import pytest
import torch

from surefast.compress import compress_, make_config
from surefast.compress.lowbit.export import export_model, gguf_type
from surefast.compress.lowbit.import_ct import read_compressed_tensors
from surefast.compress.lowbit.pack import model_codes, pack_, recorded_codes
from surefast.errors import SurefastError

ARGS = ("tiny:llama", "--method", "rtn", "--group-size", "32")


def test_packed_layers_give_back_the_codes_they_were_packed_from(tiny, calib_ids) -> None:  # type: ignore[no-untyped-def]
    model = tiny("llama")
    compress_(model, make_config("rtn", bits=4, group_size=32))
    before = recorded_codes(model)
    pack_(model)
    after = model_codes(model)
    assert after.keys() == before.keys()
    for name, qw in before.items():
        got = after[name]
        assert torch.equal(got.codes, qw.codes) and torch.equal(got.scales, qw.scales) and got.bits == qw.bits


def test_gguf_type_follows_the_widest_code(tiny) -> None:  # type: ignore[no-untyped-def]
    four, eight = tiny("llama"), tiny("llama")
    compress_(four, make_config("rtn", bits=4, group_size=32))
    compress_(eight, make_config("rtn", bits=8, group_size=32))
    assert gguf_type(model_codes(four)) == "Q4_0" and gguf_type(model_codes(eight)) == "Q8_0"


def test_an_unquantized_model_has_nothing_to_export(tiny, tiny_tok, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SurefastError, match="nothing to export as gguf"):
        export_model(tiny("llama"), tiny_tok, "gguf", tmp_path / "x.gguf")


def test_compress_export_gguf_and_compressed_tensors(cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gguf = pytest.importorskip("gguf")
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    done = cli("compress", *ARGS, "--pack", "--out", str(tmp_path / "packed"), "--export", "gguf", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    path = tmp_path / "g" / "model-Q4_0.gguf"
    assert f"exported as gguf to {path}" in " ".join(done.stdout.split())
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if t.name.endswith("attn_q.weight")}
    assert types == {"Q4_0"}

    ct = tmp_path / "ct"
    done = cli("compress", *ARGS, "--export", "compressed-tensors", str(ct))  # no --out: only the export is written
    assert done.returncode == 0, done.stderr
    assert "saved to" not in done.stdout and len(read_compressed_tensors(ct).codes) == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "g", "packed"]


def test_compress_takes_the_model_as_an_argument_and_names_the_folder(cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUREFAST_LOWBIT_KERNEL", "dequant-matmul")
    done = cli("compress", *ARGS, "--pack")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "llama-rtn-packed" / "surefast_packed.safetensors").is_file()
    assert "surefast generate --model llama-rtn-packed" in done.stdout


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("tiny:llama", "--model", "tiny:llama", "--method", "rtn"), "give the model once"),
        (("--method", "rtn"), "no model given"),
        (("tiny:llama", "--method", "rtn", "--export", "ggf", "x"), "--export: unknown export format 'ggf'"),
    ],
)
def test_bad_compress_arguments_are_one_line_before_loading(cli, monkeypatch, tmp_path, flags, says) -> None:  # type: ignore[no-untyped-def]
    import surefast.cli.compress

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded for bad input")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(surefast.cli.compress, "compress_model", refuse)
    done = cli("compress", *flags)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())
