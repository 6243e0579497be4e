"""Calibration sources: offline stdlib default, disjoint held-out text, local files."""

from __future__ import annotations

import json

import pytest
import torch

from surefast.compress.calibration_data import (
    CALIBRATION_MODULES,
    HELDOUT_MODULES,
    CalibrationConfig,
    calibration_ids,
    heldout_text,
    load_texts,
)
from surefast.errors import SurefastError


def test_stdlib_default_is_deterministic_and_disjoint(tiny_tok) -> None:  # type: ignore[no-untyped-def]
    cfg = CalibrationConfig(n_samples=4, seq_len=64)
    a, b = calibration_ids(cfg, tiny_tok), calibration_ids(cfg, tiny_tok)
    assert a.shape == (4, 64) and torch.equal(a, b)
    assert not torch.equal(a, calibration_ids(CalibrationConfig(n_samples=4, seq_len=64, seed=1), tiny_tok))
    assert not set(CALIBRATION_MODULES) & set(HELDOUT_MODULES)
    calib, held = load_texts(CalibrationConfig())[0], heldout_text()
    assert len(calib) > 100_000 and len(held) > 50_000
    # no long passage of the held-out text appears in the calibration text
    probes = [held[i : i + 200] for i in range(0, len(held) - 200, 5000)]
    assert not any(p in calib for p in probes)


def test_local_text_and_jsonl(tmp_path, tiny_tok) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.txt").write_text("hello world " * 100)
    ids = calibration_ids(CalibrationConfig(source=str(tmp_path / "a.txt"), n_samples=3, seq_len=20), tiny_tok)
    assert ids.shape == (3, 20)
    rows = tmp_path / "d.jsonl"
    rows.write_text("\n".join(json.dumps({"body": f"row {i} " * 20}) for i in range(10)))
    ids = calibration_ids(CalibrationConfig(source=str(rows), n_samples=2, seq_len=30, text_field="body"), tiny_tok)
    assert ids.shape == (2, 30)
    with pytest.raises(SurefastError, match="no field"):
        calibration_ids(CalibrationConfig(source=str(rows), n_samples=2, seq_len=30), tiny_tok)
    with pytest.raises(SurefastError):
        calibration_ids(CalibrationConfig(source=str(tmp_path / "missing.txt")), tiny_tok)
