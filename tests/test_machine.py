"""surefast.machine.OtherLoad: the CPU other processes used while a job ran, in cores."""

from __future__ import annotations

from typing import Any

import pytest

from surefast import machine


def test_other_load_is_busy_time_minus_our_own_over_the_wall_time(monkeypatch: Any) -> None:
    # (machine busy s, this process's CPU s, monotonic s): the machine did 30 s of work in 10 s,
    # 12 of them ours, so others kept 1.8 cores busy
    readings = iter([(100.0, 5.0, 50.0), (130.0, 17.0, 60.0)])
    monkeypatch.setattr(machine.OtherLoad, "_now", staticmethod(lambda: next(readings)))
    assert machine.OtherLoad().share() == pytest.approx(1.8)


def test_other_load_is_never_negative_and_none_without_proc(monkeypatch: Any) -> None:
    readings = iter([(100.0, 5.0, 50.0), (101.0, 9.0, 60.0)])  # ticks rounding: ours > the machine's
    monkeypatch.setattr(machine.OtherLoad, "_now", staticmethod(lambda: next(readings)))
    assert machine.OtherLoad().share() == 0.0
    monkeypatch.setattr(machine.OtherLoad, "_now", staticmethod(lambda: None))
    assert machine.OtherLoad().share() is None


def test_other_load_reads_this_machine() -> None:
    share = machine.OtherLoad().share()
    assert share is None or share >= 0.0
