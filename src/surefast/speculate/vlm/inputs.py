"""A VLM prompt as the engine needs it: token ids with expanded visual placeholders + the vision tensors.

:func:`prepare_inputs` builds it from text, images and / or video frames, either through the
model's own processor (``AutoProcessor.from_pretrained(...)``: the real layout, used on GPU
machines) or, given a plain tokenizer, by hand in the same layout (:mod:`.layout`; the tiny
random VLMs of the tests). Batch size is always 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.speculate.vlm.layout import TinyLayoutConfig, llava_images, llava_video, qwen_images, qwen_video

VLM_ARCHITECTURES: tuple[str, ...] = ("llava_onevision", "qwen2_5_vl")


def architecture(model: Any) -> str:
    """``"llava_onevision"`` or ``"qwen2_5_vl"`` for a supported HF VLM; a :class:`SurefastError` otherwise."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in VLM_ARCHITECTURES:
        raise SurefastError(
            f"{kind or type(model).__name__} is not a supported vision-language model",
            f"use {' or '.join(VLM_ARCHITECTURES)} (LlavaOnevision / Qwen2_5_VL ForConditionalGeneration)",
        )
    return kind


def visual_token_ids(model: Any) -> tuple[int, int]:
    """(image token id, video token id) of ``model``: the placeholders the vision features replace."""
    config = model.config
    image = getattr(config, "image_token_id", None)
    image = getattr(config, "image_token_index", None) if image is None else image
    video = getattr(config, "video_token_id", None)
    video = getattr(config, "video_token_index", None) if video is None else video
    if image is None or video is None:
        raise SurefastError(f"{config.model_type} config names no image / video token id")
    return int(image), int(video)


@dataclass
class VisualInputs:
    """One prompt for a VLM: ``input_ids [1, S]`` and the keyword tensors of its vision path.

    ``vision`` holds what the model's forward takes besides the ids: ``pixel_values`` +
    ``image_grid_thw`` (Qwen2.5-VL) or ``image_sizes`` (LLaVA-OneVision), the video
    counterparts, and for Qwen2.5-VL ``mm_token_type_ids [1, S]`` (0 text, 1 image, 2 video).
    """

    input_ids: torch.Tensor  # [1, S]
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    visual_tokens: tuple[int, ...] = ()  # token ids that stand for visual features

    @property
    def visual_mask(self) -> torch.Tensor:
        """``[S]`` bool: which prompt slots hold visual features."""
        ids = self.input_ids[0]
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for t in self.visual_tokens:
            mask |= ids == t
        return mask

    @property
    def n_visual(self) -> int:
        return int(self.visual_mask.sum())

    def to(self, device: torch.device | str) -> VisualInputs:
        vision = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.vision.items()}
        return VisualInputs(self.input_ids.to(device), vision, self.visual_tokens)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the model's own ``generate`` (the reference the engine must equal)."""
        return {"input_ids": self.input_ids, "attention_mask": torch.ones_like(self.input_ids), **self.vision}


def load_image(path: str | Path) -> Any:
    """The RGB PIL image in the file ``path``, or a one-line :class:`SurefastError` saying what is wrong.

    PIL's own errors (``UnidentifiedImageError`` for a text file, ``IsADirectoryError`` for a
    folder, ``OSError`` for a truncated file) name neither the file nor the fix. The image is
    decoded in full here, so a corrupt one fails now, not after the models have loaded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    hint = "give a PNG, JPEG, WebP, GIF, BMP or TIFF file"
    if path.is_dir():
        raise SurefastError(f"image {path} is a folder, not an image file", hint)
    if not path.is_file():
        raise SurefastError(f"image {path} not found", hint)
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError as exc:
        raise SurefastError(f"image {path} cannot be read: {exc.strerror or exc}", hint) from None
    if not head:
        raise SurefastError(f"image {path} is empty (0 bytes)", hint)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes every pixel
    except Image.DecompressionBombError as exc:
        raise SurefastError(f"image {path} is too large to decode safely: {exc}", "downscale it first") from None
    except UnidentifiedImageError:
        what = "a text file, not an image" if b"\0" not in head and _is_text(head) else "in no image format PIL reads"
        raise SurefastError(f"image {path} is {what}", hint) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what PIL's decoders raise on bad bytes
        raise SurefastError(f"image {path} is truncated or corrupt ({exc})", hint) from None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at 512 bytes is still text
        return exc.start >= len(head) - 3
    return True


def _frames(video: Any, num_frames: int) -> list[Any]:
    if isinstance(video, (str, Path)):
        from surefast.speculate.vlm.video import read_video_frames

        return read_video_frames(video, num_frames)
    if isinstance(video, torch.Tensor) and video.ndim == 4:  # [F, 3, H, W]
        return list(video)
    frames = list(video)
    if not frames:
        raise SurefastError("the video has no frames")
    return frames


def _is_processor(obj: Any) -> bool:
    return hasattr(obj, "image_processor") and hasattr(obj, "tokenizer")


def prepare_inputs(
    processor_or_tokenizer: Any,
    model: Any,
    text: str,
    images: Sequence[Any] | None = None,
    video: Any = None,
    *,
    chat: bool = True,
    num_frames: int = 8,
    layout: TinyLayoutConfig | None = None,
    processor_kwargs: dict[str, Any] | None = None,
) -> VisualInputs:
    """Token ids and vision tensors for ``text`` about ``images`` and / or ``video``.

    ``video``: a list of frames (PIL images, ``[H, W, 3]`` arrays), an ``[F, 3, H, W]`` tensor
    or a file path (decoded with PyAV, ``num_frames`` evenly spaced frames). ``chat``: wrap
    the question in the chat template with the visual placeholders first (the models' own
    convention); else ``text`` is used as is and must contain the placeholders itself (processor
    path) or gets them prepended (tokenizer path).
    """
    arch = architecture(model)
    images = [load_image(i) if isinstance(i, (str, Path)) else i for i in images or []]
    frames = _frames(video, num_frames) if video is not None else None
    if not images and frames is None:
        raise SurefastError(
            "a vision-language prompt needs at least one image or a video",
            "use surefast.speculate.speculative_generate for text-only prompts",
        )
    if _is_processor(processor_or_tokenizer):
        inputs = _from_processor(processor_or_tokenizer, model, text, images, frames, chat, processor_kwargs or {})
    else:
        inputs = _by_hand(processor_or_tokenizer, model, arch, text, images, frames, chat, layout or TinyLayoutConfig())
    if arch == "qwen2_5_vl":
        image_id, video_id = visual_token_ids(model)
        ids = inputs.input_ids
        inputs.vision["mm_token_type_ids"] = (ids == image_id).int() + 2 * (ids == video_id).int()
    return inputs


def _from_processor(
    processor: Any,
    model: Any,
    text: str,
    images: list[Any],
    frames: list[Any] | None,
    chat: bool,
    kwargs: dict[str, Any],
) -> VisualInputs:
    from surefast.speculate.vlm.layout import to_pil

    content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
    content += [{"type": "video"}] if frames is not None else []
    content.append({"type": "text", "text": text})
    prompt = (
        processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        if chat
        else text
    )
    call: dict[str, Any] = dict(kwargs)
    if images:
        call["images"] = [to_pil(i) for i in images]
    if frames is not None:
        call["videos"] = [[to_pil(f) for f in frames]]
    batch = processor(text=[prompt], return_tensors="pt", **call)
    skip = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}
    vision = {
        k: v if isinstance(v, torch.Tensor) else torch.tensor(v)
        for k, v in batch.items()
        if k not in skip and (isinstance(v, torch.Tensor) or k == "second_per_grid_ts")
    }
    return VisualInputs(batch["input_ids"][:1], vision, visual_token_ids(model))


def _by_hand(
    tokenizer: Any,
    model: Any,
    arch: str,
    text: str,
    images: list[Any],
    frames: list[Any] | None,
    chat: bool,
    layout: TinyLayoutConfig,
) -> VisualInputs:
    config = model.config
    image_id, video_id = visual_token_ids(model)
    vision: dict[str, torch.Tensor] = {}
    counts: list[int] = []  # tokens of each placeholder, in prompt order (images first, then the video)
    if arch == "qwen2_5_vl":
        start, end = "<|vision_start|>", "<|vision_end|>"
        image_ph, video_ph = (
            f"{start}{tokenizer.convert_ids_to_tokens(image_id)}{end}",
            f"{start}{tokenizer.convert_ids_to_tokens(video_id)}{end}",
        )
        if images:
            tensors, n = qwen_images(images, config.vision_config, layout)
            vision.update(tensors)
            counts += n
        if frames is not None:
            tensors, m = qwen_video(frames, config.vision_config, layout)
            vision.update(tensors)
            counts.append(m)
    else:
        image_ph = tokenizer.convert_ids_to_tokens(image_id) + "\n"
        video_ph = tokenizer.convert_ids_to_tokens(video_id) + "\n"
        if images:
            tensors, n = llava_images(images, config)
            vision.update(tensors)
            counts += n
        if frames is not None:
            tensors, m = llava_video(frames, config)
            vision.update(tensors)
            counts.append(m)
    content = image_ph * len(images) + (video_ph if frames is not None else "") + text
    if chat and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    else:
        prompt = content
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expanded: list[int] = []
    queue = iter(counts)
    for t in ids:
        reps = next(queue, 0) if t in (image_id, video_id) else 1
        if reps == 0:
            raise SurefastError("the text holds more visual placeholders than images and videos given")
        expanded += [t] * reps
    if next(queue, None) is not None:
        raise SurefastError(
            "the tokenizer did not keep the visual placeholders as single tokens",
            "use the model's processor (AutoProcessor.from_pretrained)",
        )
    return VisualInputs(torch.tensor([expanded]), vision, (image_id, video_id))
