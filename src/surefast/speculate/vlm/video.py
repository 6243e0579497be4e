"""Reading video frames: a folder of frame images, or a video file decoded with PyAV (``pip install av``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surefast.errors import SurefastError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def even_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames (the centre of each of ``n`` equal segments)."""
    n = min(n, total)
    return [int((i + 0.5) * total / n) for i in range(n)]


def read_video_frames(path: str | Path, num_frames: int = 8) -> list[Any]:
    """``num_frames`` evenly spaced RGB frames (PIL images) of a video file or a folder of frame images."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise SurefastError(f"video {path} not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise SurefastError(f"no frame images ({', '.join(FRAME_SUFFIXES)}) in {path}")
        return [Image.open(files[i]).convert("RGB") for i in even_indices(len(files), num_frames)]
    try:
        import av
    except ImportError as exc:
        raise SurefastError(
            f"decoding {path.name} needs PyAV", "pip install av (or pass a folder of frame images)"
        ) from exc
    with av.open(str(path)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    if not frames:
        raise SurefastError(f"no video frames decoded from {path}")
    return [frames[i].convert("RGB") for i in even_indices(len(frames), num_frames)]
