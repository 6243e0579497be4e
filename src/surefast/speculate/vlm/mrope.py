"""Qwen2.5-VL's 3D rotary positions (M-RoPE) for a prompt, and for tokens generated after it.

Every token has three position ids (temporal, height, width). Text tokens carry the same
index on all three axes, counting on from where the previous segment stopped. The tokens of
one image or video (``t x h x w`` after the vision encoder's ``spatial_merge`` of 2x2 patches)
start at the current index ``s`` and get ``(s + t * interval, s + row, s + col)``; the next
segment starts at ``s + max(h, w)``. ``interval`` is 1 for images and
``tokens_per_second * seconds_per_grid`` for videos (so temporal ids follow wall-clock time).

Generated tokens are text: the ``k``-th token after a prompt of ``S`` tokens sits at
``S + k + delta`` on all three axes, with the *rope delta* ``delta = max(prompt positions) + 1 - S``
(negative: visual tokens use fewer indices than slots). A tree node at engine position ``p``
(the slot it would occupy in a plain sequence) therefore gets ``p + delta`` on every axis,
which is what transformers computes when decoding one token at a time and what it does *not*
compute for us when handed a 4D tree mask.

Our own implementation, written against transformers 5.23's ``Qwen2_5_VLModel.get_rope_index``
(same numbers, checked in ``tests/speculate/test_vlm_mrope.py``), so the engine does not depend
on that method's signature, which changed across releases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class MRopeConfig:
    """The model facts M-RoPE positions depend on (read from a Qwen2.5-VL config by :meth:`from_model`)."""

    image_token_id: int
    video_token_id: int
    spatial_merge_size: int = 2
    tokens_per_second: float = 2.0

    @classmethod
    def from_model(cls, model: Any) -> MRopeConfig:
        config = model.config
        vision = config.vision_config
        return cls(
            image_token_id=int(config.image_token_id),
            video_token_id=int(config.video_token_id),
            spatial_merge_size=int(vision.spatial_merge_size),
            tokens_per_second=float(getattr(vision, "tokens_per_second", 2.0)),
        )


def _grid_positions(start: int, grid: torch.Tensor, merge: int, interval: float) -> torch.Tensor:
    """``[3, t*h*w]`` positions of one image / video whose patch grid is ``grid = (t, H, W)``."""
    t, h, w = int(grid[0]), int(grid[1]) // merge, int(grid[2]) // merge
    temporal = (torch.arange(t) * interval).long()  # quantized after scaling, as transformers does
    tt, hh, ww = torch.meshgrid(temporal, torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start


def mrope_positions(
    input_ids: torch.Tensor,
    config: MRopeConfig,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Positions ``[3, S]`` of the prompt ``input_ids`` (``[S]`` or ``[1, S]``) and its rope delta.

    ``image_grid_thw [n_images, 3]`` / ``video_grid_thw [n_videos, 3]``: patch grids in prompt
    order; ``second_per_grid_ts [n_videos]``: seconds per temporal grid step (default 1).
    Consecutive visual tokens of one kind are one image / video at a time, ``t*h*w/merge^2`` tokens each.
    """
    ids = input_ids.reshape(-1).tolist()
    merge = config.spatial_merge_size
    grids = {
        config.image_token_id: list(image_grid_thw) if image_grid_thw is not None else [],
        config.video_token_id: list(video_grid_thw) if video_grid_thw is not None else [],
    }
    seconds = [float(s) for s in second_per_grid_ts] if second_per_grid_ts is not None else []
    used = {config.image_token_id: 0, config.video_token_id: 0}
    parts: list[torch.Tensor] = []
    pos, i = 0, 0
    while i < len(ids):
        token = ids[i]
        if token not in grids:
            j = i
            while j < len(ids) and ids[j] not in grids:
                j += 1
            parts.append(torch.arange(pos, pos + j - i).expand(3, -1))
            pos += j - i
            i = j
            continue
        k = used[token]
        if k >= len(grids[token]):
            raise ValueError(f"more visual segments of token {token} in the prompt than grids given")
        grid = grids[token][k]
        used[token] = k + 1
        is_video = token == config.video_token_id
        interval = config.tokens_per_second * (seconds[k] if k < len(seconds) else 1.0) if is_video else 1.0
        block = _grid_positions(pos, grid, merge, interval)  # [3, n]
        n = block.shape[1]
        if ids[i : i + n] != [token] * n:
            raise ValueError(f"expected {n} visual tokens for grid {grid.tolist()} at index {i}")
        parts.append(block)
        pos += max(int(grid[1]), int(grid[2])) // merge
        i += n
    positions = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
    delta = int(positions.max()) + 1 - len(ids) if len(ids) else 0
    return positions, delta


def text_positions(positions: torch.Tensor, delta: int) -> torch.Tensor:
    """Engine positions ``[1, T]`` of text tokens after the prompt -> M-RoPE ids ``[3, 1, T]`` (``p + delta`` on every axis)."""
    return (positions + delta).unsqueeze(0).expand(3, -1, -1)
