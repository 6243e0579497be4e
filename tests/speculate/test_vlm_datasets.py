"""VLM benchmark loaders: local folders, hub rows mapped to items (a stand-in hub), clear errors when absent."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from surefast.errors import SurefastError
from surefast.speculate.vlm.datasets import DATASETS, load_vlm_dataset


def _png(path, seed=0):
    Image.fromarray((np.random.RandomState(seed).rand(8, 12, 3) * 255).astype(np.uint8)).save(path)


def test_vlm_dataset_local_folder(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "frames").mkdir()
    for i in range(5):
        _png(tmp_path / "frames" / f"{i:03d}.png", i)
    rows = [
        {"id": "q1", "question": "What is written?", "image": "a.png", "answer": "stop"},
        {"question": "What happens?", "video": "frames"},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_vlm_dataset("TextVQA", tmp_path)
    assert [i.id for i in items] == ["q1", "1"]
    assert items[0].question.startswith("What is written?") and items[0].question.endswith(DATASETS["textvqa"].prompt)
    assert items[0].images[0].size == (12, 8) and items[0].answer == "stop"
    assert items[1].video == tmp_path / "frames" and not items[1].images
    from surefast.speculate.vlm.video import read_video_frames

    assert len(read_video_frames(items[1].video, 3)) == 3
    assert len(load_vlm_dataset("textvqa", tmp_path, limit=1)) == 1


def test_vlm_dataset_missing_folder_names_path_and_hub_id(tmp_path):
    with pytest.raises(SurefastError) as err:
        load_vlm_dataset("chartqa", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "lmms-lab/ChartQA" in str(err.value)
    with pytest.raises(SurefastError, match=r"items\.jsonl"):
        load_vlm_dataset("gqa", tmp_path)
    with pytest.raises(SurefastError, match="did you mean 'mvbench'"):
        load_vlm_dataset("mvbnch", tmp_path)


def test_vlm_dataset_mvbench_snapshot_layout(tmp_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "video" / "clevrer").mkdir(parents=True)
    (tmp_path / "video" / "clevrer" / "v1.mp4").write_bytes(b"")
    task = [{"video": "v1.mp4", "question": "What moves?", "candidates": ["cube", "ball"], "answer": "ball"}]
    (tmp_path / "json" / "counterfactual_inference.json").write_text(json.dumps(task))
    (item,) = load_vlm_dataset("mvbench", tmp_path)
    assert item.video == tmp_path / "video" / "clevrer" / "v1.mp4"
    assert "\nA. cube\nB. ball" in item.question and item.answer == "B"


def test_vlm_dataset_hub_rows(monkeypatch):
    datasets = pytest.importorskip("datasets")
    img = Image.new("RGB", (4, 4))
    calls = []

    def fake_load(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        if hub_id == "lmms-lab/textvqa":
            return datasets.Dataset.from_list(
                [{"question_id": 7, "question": "Brand?", "image": img, "answers": ["acme"]}]
            )
        if config == "testdev_balanced_instructions":
            return datasets.Dataset.from_list([{"id": "g1", "imageId": "n5", "question": "Color?", "answer": "red"}])
        return datasets.Dataset.from_list([{"id": "n5", "image": img}, {"id": "n6", "image": img}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (t,) = load_vlm_dataset("textvqa")
    assert (t.id, t.answer, t.images[0].size) == ("7", "acme", (4, 4)) and t.question.startswith("Brand?")
    (g,) = load_vlm_dataset("gqa", limit=5)
    assert (g.id, g.answer) == ("g1", "red") and len(g.images) == 1
    assert ("lmms-lab/GQA", "testdev_balanced_images", "testdev") in calls


def test_vlm_dataset_hub_unreachable_is_a_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SurefastError) as err:
        load_vlm_dataset("seedbench")
    assert "lmms-lab/SEED-Bench" in str(err.value) and "huggingface-cli download" in str(err.value)
    with pytest.raises(SurefastError, match="video_dir"):
        load_vlm_dataset("videodetailcaption")
