"""Vision inputs built by hand in the exact layout the models' processors produce (no processor files).

Used for the tiny random VLMs (whose hub processors cannot be fetched here) and wherever a
plain tokenizer stands in for a processor. Images go through transformers' PIL image
processors (they need no files, only numbers read from the model config); video frames and the
placeholder counts are ours, written against transformers 5.23's processors:

- LLaVA-OneVision image: ``base + unpadded + newlines`` features of the anyres tiling
  (:func:`llava_image_tokens`); video: ``frames * ceil(p/2)^2 + 1`` (2x2-pooled frames and one
  trailing newline), ``p = image_size // patch_size``.
- Qwen2.5-VL: an image or video of ``t x H x W`` patches gives ``t * H * W / merge^2`` tokens,
  between ``<|vision_start|>`` and ``<|vision_end|>``; pixels are flattened patch by patch in
  the order of :func:`qwen_patchify` (checked against the image processor in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surefast.errors import SurefastError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2-VL's image processor normalization
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyLayoutConfig:
    """Resolution limits for hand-built inputs (small, so tiny-model tests stay fast)."""

    qwen_min_pixels: int = 28 * 28
    qwen_max_pixels: int = 28 * 28 * 16  # at most 16 visual tokens per image / frame pair
    fps: float = 2.0  # frames per second assumed for a list of video frames


def to_pil(image: Any) -> Any:
    """RGB PIL image from a file path, a PIL image, an ``[H, W, 3]`` uint8 array or a ``[3, H, W]`` tensor (0-1 or 0-255)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise SurefastError(f"image {image} not found")
        return Image.open(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x * 255.0 if x.max() <= 1.0 else x
        image = x.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image must be [H, W, 3]; got shape {array.shape}")
    return Image.fromarray(array.astype(np.uint8))


def frames_tensor(
    frames: list[Any], height: int, width: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Video frames -> ``[F, 3, height, width]`` float, resized (bicubic), scaled to [0, 1] and normalized."""
    from PIL import Image

    out = []
    for frame in frames:
        img = to_pil(frame).resize((width, height), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    x = torch.stack(out)  # [F, 3, H, W]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# ---- Qwen2.5-VL -----------------------------------------------------------------------------


def qwen_resize_target(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Nearest size with both sides multiples of ``factor`` and area in ``[min_pixels, max_pixels]``."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


def qwen_patchify(frames: torch.Tensor, temporal: int, patch: int, merge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[F, C, H, W]`` normalized frames -> pixels ``[t*h*w, C*temporal*patch*patch]`` and grid ``[3]`` (t, h, w).

    ``F`` is padded to a multiple of ``temporal`` by repeating the last frame. Patches are listed
    merge-window by merge-window (the ``merge x merge`` patches that become one token are adjacent).
    """
    f, c, height, width = frames.shape
    if f % temporal:
        frames = torch.cat([frames, frames[-1:].expand(temporal - f % temporal, -1, -1, -1)])
    t, h, w = frames.shape[0] // temporal, height // patch, width // patch
    x = frames.reshape(t, temporal, c, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [t, h/m, w/m, m, m, C, temporal, patch, patch]
    return x.reshape(t * h * w, c * temporal * patch * patch), torch.tensor([t, h, w])


def qwen_images(images: list[Any], vision: Any, layout: TinyLayoutConfig) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Pixels and grids of ``images`` through transformers' PIL image processor; tokens per image."""
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        min_pixels=layout.qwen_min_pixels,
        max_pixels=layout.qwen_max_pixels,
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
    )
    out = processor(images=[to_pil(i) for i in images], return_tensors="pt")
    grids = out["image_grid_thw"]  # [n, 3]
    counts = [int(g.prod()) // vision.spatial_merge_size**2 for g in grids]
    return {"pixel_values": out["pixel_values"], "image_grid_thw": grids}, counts


def qwen_video(frames: list[Any], vision: Any, layout: TinyLayoutConfig) -> tuple[dict[str, torch.Tensor], int]:
    """Pixels, grid and seconds per temporal step of one video given as frames; its token count."""
    factor = vision.patch_size * vision.spatial_merge_size
    h0, w0 = to_pil(frames[0]).size[::-1]
    h, w = qwen_resize_target(h0, w0, factor, layout.qwen_min_pixels, layout.qwen_max_pixels)
    pixels, grid = qwen_patchify(
        frames_tensor(frames, h, w, CLIP_MEAN, CLIP_STD),
        vision.temporal_patch_size,
        vision.patch_size,
        vision.spatial_merge_size,
    )
    seconds = torch.tensor([vision.temporal_patch_size / layout.fps])
    tensors = {"pixel_values_videos": pixels, "video_grid_thw": grid[None], "second_per_grid_ts": seconds}
    return tensors, int(grid.prod()) // vision.spatial_merge_size**2


# ---- LLaVA-OneVision ------------------------------------------------------------------------


def llava_image_tokens(orig_height: int, orig_width: int, config: Any) -> int:
    """Features of one image under anyres tiling: base tile + unpadded tile grid + one newline per row.

    With ``vision_feature_select_strategy == "default"`` the CLS feature is dropped (one less).
    """
    from transformers.image_processing_utils import select_best_resolution

    vision = config.vision_config
    side = vision.image_size // vision.patch_size  # features per tile side
    best_h, best_w = select_best_resolution((orig_height, orig_width), config.image_grid_pinpoints)
    cur_h, cur_w = side * (best_h // vision.image_size), side * (best_w // vision.image_size)
    if orig_width / orig_height > cur_w / cur_h:  # wider than the grid: padding rows were added
        new_h = int(round(orig_height * (cur_w / orig_width), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(orig_width * (cur_h / orig_height), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    unpadded, newlines = cur_h * cur_w, cur_h
    max_tiles = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))
    ratio = math.sqrt(cur_h * cur_w / (max_tiles * side**2))
    if ratio > 1.1:  # the model downsamples large grids bilinearly
        unpadded, newlines = int(cur_h // ratio) * int(cur_w // ratio), int(cur_h // ratio)
    total = side * side + unpadded + newlines
    return total - 1 if config.vision_feature_select_strategy == "default" else total


def llava_images(images: list[Any], config: Any) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Anyres tiles through transformers' PIL image processor; tokens per image."""
    from transformers import LlavaOnevisionImageProcessorPil

    size = config.vision_config.image_size
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size}, image_grid_pinpoints=config.image_grid_pinpoints, do_pad=True
    )
    out = processor(images=[to_pil(i) for i in images], return_tensors="pt")
    sizes = out["image_sizes"]  # [n, 2] (height, width)
    counts = [llava_image_tokens(int(h), int(w), config) for h, w in sizes.tolist()]
    tensors = {"pixel_values": out["pixel_values"], "image_sizes": sizes}
    if len(images) > 1:  # several images in one prompt: transformers encodes each as one base tile
        raise ValueError("hand-built LLaVA-OneVision inputs support one image per prompt; use the model's processor")
    return tensors, counts


def llava_video(frames: list[Any], config: Any) -> tuple[dict[str, torch.Tensor], int]:
    """``pixel_values_videos [1, F, 3, s, s]`` (frames resized to one tile, CLIP-normalized); tokens."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    x = frames_tensor(frames, vision.image_size, vision.image_size, CLIP_MEAN, CLIP_STD)
    return {"pixel_values_videos": x[None]}, len(frames) * math.ceil(side / 2) ** 2 + 1
