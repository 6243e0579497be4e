"""The plain reference: one full forward per item, no KV cache, no batching, full logits.

Used by the tests (the fast path must match it) and by benchmarks (the speed baseline). It
tokenizes each whole prompt ``prefix + render(item)`` in one piece, runs ``model(input_ids)``
and reads ``logits[0, -1, letter_ids]``, so it shares nothing with the fast path but the
letter choice and the shortening of over-long items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from surefast.data.items import MCItem
from surefast.models.arch import model_max_length
from surefast.scoring.batching import encode_full, encode_item, encode_prefix
from surefast.scoring.engine import model_device
from surefast.scoring.letters import letter_tokens, variant_for_all
from surefast.scoring.types import PromptLike, ScoreResult


@torch.inference_mode()
def score_items_reference(
    model: Any, tokenizer: Any, prompt: PromptLike, items: Sequence[MCItem], *, max_length: int | None = None
) -> ScoreResult:
    """Six letter logits per item from ``model(full prompt).logits[0, -1, letter_ids]`` (float32)."""
    start = time.perf_counter()
    items = list(items)
    max_length = max_length or model_max_length(model)
    texts = [prompt.render(item) for item in items]
    letters = letter_tokens(tokenizer, variant_for_all(texts)) if items else None
    device = model_device(model)
    prefix_len = len(encode_prefix(tokenizer, prompt.prefix))
    rows, cut, tokens = [], [], 0
    for item, text in zip(items, texts, strict=True):
        enc = encode_item(tokenizer, prompt, item, prefix_len, max_length, text)
        ids = torch.tensor([encode_full(tokenizer, prompt.prefix + enc.text)], device=device)  # [1, S]
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # [1, S, V]
        assert letters is not None
        rows.append(logits[0, -1, list(letters.ids)].float().cpu().numpy())
        cut.append(enc.shortened)
        tokens += ids.shape[1]
    short = np.array(cut, dtype=bool)
    return ScoreResult(
        tuple(item.uid for item in items),
        np.stack(rows).astype(np.float32) if rows else np.zeros((0, 6), np.float32),
        np.array([item.label for item in items], dtype=np.int64),
        int(short.sum()),
        0,
        time.perf_counter() - start,
        tokens,
        short,
        letters.ids if letters else (),
        False,
    )
