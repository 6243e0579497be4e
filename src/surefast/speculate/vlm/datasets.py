"""The SAGE paper's VLM benchmarks as plain :class:`VLMItem` lists: from the hub or from local folders.

==========================  =====================================  ==========================================
name                        hub id (``datasets``, split)            local folder
==========================  =====================================  ==========================================
``textvqa``                 ``lmms-lab/textvqa`` (validation)       ``items.jsonl`` + images
``gqa``                     ``lmms-lab/GQA`` (testdev; questions    ``items.jsonl`` + images
                            ``testdev_balanced_instructions``,
                            images ``testdev_balanced_images``)
``chartqa``                 ``lmms-lab/ChartQA`` (test)             ``items.jsonl`` + images
``seedbench``               ``lmms-lab/SEED-Bench`` (test, image    ``items.jsonl`` + images
                            questions only)
``mvbench``                 ``OpenGVLab/MVBench`` (a snapshot:      the snapshot folder (``json/*.json``,
                            ``json/<task>.json`` + ``video/``)      ``video/...``) or ``items.jsonl`` + videos
``videodetailcaption``      ``lmms-lab/VideoDetailCaption`` (test)  ``items.jsonl`` + videos (needs
                                                                    ``video_dir`` for the hub split)
==========================  =====================================  ==========================================

A local folder in our format holds ``items.jsonl``: one JSON object per line with ``question``,
optional ``id`` and ``answer``, and ``image`` / ``images`` (paths relative to the folder) or
``video`` (a file, or a folder of frame images). Hub access needs the optional ``hub`` extra
(``pip install 'surefast[hub]'``) and network; nothing is fetched here when a folder is given.
Videos are decoded lazily (:func:`~.video.read_video_frames`, PyAV for files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surefast.errors import SurefastError


@dataclass
class VLMItem:
    """One benchmark question: images (PIL) or a video (path or frames), and the reference answer."""

    id: str
    question: str
    images: list[Any] = field(default_factory=list)
    video: Any = None  # a path (file or frame folder) or a list of frames
    answer: str = ""


@dataclass(frozen=True)
class VLMDatasetSpec:
    hub_id: str
    split: str
    modality: str  # "image" or "video"
    prompt: str  # appended to each question (the lmms-eval style short-answer instruction)


DATASETS: dict[str, VLMDatasetSpec] = {
    "textvqa": VLMDatasetSpec(
        "lmms-lab/textvqa", "validation", "image", "\nAnswer the question using a single word or phrase."
    ),
    "gqa": VLMDatasetSpec("lmms-lab/GQA", "testdev", "image", "\nAnswer the question using a single word or phrase."),
    "chartqa": VLMDatasetSpec("lmms-lab/ChartQA", "test", "image", "\nAnswer the question with a single word."),
    "seedbench": VLMDatasetSpec(
        "lmms-lab/SEED-Bench", "test", "image", "\nAnswer with the option's letter from the given choices directly."
    ),
    "mvbench": VLMDatasetSpec(
        "OpenGVLab/MVBench", "test", "video", "\nAnswer with the option's letter from the given choices directly."
    ),
    "videodetailcaption": VLMDatasetSpec("lmms-lab/VideoDetailCaption", "test", "video", ""),
}


def _fetch_hint(name: str) -> str:
    spec = DATASETS[name]
    return (
        f"download it with `huggingface-cli download {spec.hub_id} --repo-type dataset --local-dir DIR` and pass "
        f"DIR, or pass hub=True with network access and `pip install 'surefast[hub]'`"
    )


def load_vlm_dataset(
    name: str, source: str | Path | None = None, *, limit: int | None = None, video_dir: str | Path | None = None
) -> list[VLMItem]:
    """Items of benchmark ``name`` from a local folder ``source``, or from the hub when ``source`` is None.

    ``limit``: the first ``limit`` items. ``video_dir``: where the videos of a hub split live
    (VideoDetailCaption's hub split lists file names only). Raises :class:`SurefastError` naming the
    path or hub id, and how to get it, when the data is absent.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        from surefast.registry import suggestion

        raise SurefastError(f"unknown VLM benchmark {name!r}", suggestion(key, DATASETS))
    if source is not None:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise SurefastError(f"{key} data not found at {folder}", _fetch_hint(key))
        items = _from_folder(key, folder)
    else:
        items = _from_hub(key, limit, video_dir)
    return items[:limit] if limit is not None else items


# ---- local folders ----------------------------------------------------------------------------


def _open_image(path: Path) -> Any:
    from PIL import Image

    if not path.is_file():
        raise SurefastError(f"image {path} not found")
    return Image.open(path).convert("RGB")


def _from_folder(name: str, folder: Path) -> list[VLMItem]:
    items_file = folder / "items.jsonl"
    if items_file.is_file():
        return [
            _item_from_json(json.loads(line), folder, i, name)
            for i, line in enumerate(items_file.read_text().splitlines())
            if line.strip()
        ]
    if name == "mvbench" and (folder / "json").is_dir():
        return _mvbench_folder(folder)
    raise SurefastError(f"no items.jsonl in {folder} (and no hub snapshot layout for {name})", _fetch_hint(name))


def _item_from_json(row: dict[str, Any], folder: Path, index: int, name: str) -> VLMItem:
    if "question" not in row:
        raise SurefastError(f"line {index + 1} of {folder / 'items.jsonl'} has no 'question'")
    paths = row.get("images") or ([row["image"]] if row.get("image") else [])
    video = folder / row["video"] if row.get("video") else None
    if not paths and video is None:
        raise SurefastError(f"line {index + 1} of {folder / 'items.jsonl'} has neither 'image(s)' nor 'video'")
    if video is not None and not video.exists():
        raise SurefastError(f"video {video} not found")
    return VLMItem(
        str(row.get("id", index)),
        row["question"] + DATASETS[name].prompt,
        [_open_image(folder / p) for p in paths],
        video,
        str(row.get("answer", "")),
    )


def _choices(question: str, options: list[str]) -> str:
    letters = "ABCDEFGH"
    return question + "".join(f"\n{letters[i]}. {opt}" for i, opt in enumerate(options))


def _mvbench_folder(folder: Path) -> list[VLMItem]:
    """The hub snapshot of MVBench: ``json/<task>.json`` lists (video, question, candidates, answer)."""
    items = []
    for task_file in sorted((folder / "json").glob("*.json")):
        for i, row in enumerate(json.loads(task_file.read_text())):
            candidates = [str(c) for c in row.get("candidates", [])]
            matches = list((folder / "video").rglob(Path(row["video"]).name))
            answer = row.get("answer", "")
            letter = "ABCDEFGH"[candidates.index(answer)] if answer in candidates else str(answer)
            items.append(
                VLMItem(
                    f"{task_file.stem}/{i}",
                    _choices(row["question"], candidates) + DATASETS["mvbench"].prompt,
                    [],
                    matches[0] if matches else folder / "video" / row["video"],
                    letter,
                )
            )
    return items


# ---- the hub ------------------------------------------------------------------------------------


def _load_hub(hub_id: str, config: str | None, split: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise SurefastError(
            f"loading {hub_id} from the hub needs the `datasets` package",
            "pip install 'surefast[hub]', or pass a local folder",
        ) from exc
    try:
        return (
            datasets.load_dataset(hub_id, config, split=split) if config else datasets.load_dataset(hub_id, split=split)
        )
    except Exception as exc:  # offline, gated, renamed: all the same to the user
        raise SurefastError(
            f"could not load {hub_id}{f' ({config})' if config else ''} split {split!r} from the hub: "
            f"{type(exc).__name__}: {exc}",
            f"download it with `huggingface-cli download {hub_id} --repo-type dataset --local-dir DIR` and pass DIR",
        ) from exc


def _rows(ds: Any, limit: int | None) -> Any:
    return ds.select(range(min(limit, len(ds)))) if limit is not None else ds


def _hub_textvqa(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    ds = _rows(_load_hub("lmms-lab/textvqa", None, "validation"), limit)
    return [
        VLMItem(
            str(r["question_id"]),
            r["question"] + DATASETS["textvqa"].prompt,
            [r["image"].convert("RGB")],
            answer=(r.get("answers") or [""])[0],
        )
        for r in ds
    ]


def _hub_gqa(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    questions = _rows(_load_hub("lmms-lab/GQA", "testdev_balanced_instructions", "testdev"), limit)
    wanted = {r["imageId"] for r in questions}
    images = _load_hub("lmms-lab/GQA", "testdev_balanced_images", "testdev")
    by_id = {r["id"]: r["image"] for r in images if r["id"] in wanted}
    return [
        VLMItem(
            str(r["id"]),
            r["question"] + DATASETS["gqa"].prompt,
            [by_id[r["imageId"]].convert("RGB")],
            answer=r["answer"],
        )
        for r in questions
    ]


def _hub_chartqa(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    ds = _rows(_load_hub("lmms-lab/ChartQA", None, "test"), limit)
    return [
        VLMItem(
            str(i), r["question"] + DATASETS["chartqa"].prompt, [r["image"].convert("RGB")], answer=str(r["answer"])
        )
        for i, r in enumerate(ds)
    ]


def _hub_seedbench(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    ds = _load_hub("lmms-lab/SEED-Bench", None, "test")
    items = []
    for r in ds:  # image questions only (the video ones ship frames of external videos)
        if r.get("data_type", "image") != "image":
            continue
        options = [r[f"choice_{c}"] for c in "abcd"]
        images = r["image"] if isinstance(r["image"], list) else [r["image"]]
        items.append(
            VLMItem(
                str(r["question_id"]),
                _choices(r["question"], options) + DATASETS["seedbench"].prompt,
                [im.convert("RGB") for im in images[:1]],
                answer=r["answer"],
            )
        )
        if limit is not None and len(items) >= limit:
            break
    return items


def _hub_mvbench(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download("OpenGVLab/MVBench", repo_type="dataset"))
    except Exception as exc:
        raise SurefastError(
            f"could not fetch OpenGVLab/MVBench from the hub: {type(exc).__name__}: {exc}",
            _fetch_hint("mvbench") + "; unzip the video archives under video/",
        ) from exc
    return _mvbench_folder(folder)[:limit]


def _hub_videodetailcaption(limit: int | None, video_dir: Path | None) -> list[VLMItem]:
    if video_dir is None:
        raise SurefastError(
            "VideoDetailCaption's hub split lists video names only",
            "pass video_dir=the folder of its videos (from the dataset repo's archive)",
        )
    ds = _rows(_load_hub("lmms-lab/VideoDetailCaption", None, "test"), limit)
    items = []
    for r in ds:
        name = r["video_name"]
        hits = list(Path(video_dir).glob(f"{name}*"))
        if not hits:
            raise SurefastError(f"video {name} not found in {video_dir}")
        items.append(VLMItem(name, r["question"], [], hits[0], answer=r.get("answer", "")))
    return items


_HUB: dict[str, Callable[[int | None, Path | None], list[VLMItem]]] = {
    "textvqa": _hub_textvqa,
    "gqa": _hub_gqa,
    "chartqa": _hub_chartqa,
    "seedbench": _hub_seedbench,
    "mvbench": _hub_mvbench,
    "videodetailcaption": _hub_videodetailcaption,
}


def _from_hub(name: str, limit: int | None, video_dir: str | Path | None) -> list[VLMItem]:
    return _HUB[name](limit, Path(video_dir) if video_dir is not None else None)
