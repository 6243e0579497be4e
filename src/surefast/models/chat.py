"""Prompt encoding and plain greedy generation shared by the demo, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.models.arch import model_max_length


def encode_chat(tokenizer: Any, prompt: str, use_template: bool | None = None) -> torch.Tensor:
    """``[1, S]`` ids of one user message, through the chat template when there is one."""
    if use_template is None:
        use_template = bool(getattr(tokenizer, "chat_template", None))
    if use_template:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"]
    return tokenizer(prompt, return_tensors="pt")["input_ids"]


@torch.inference_mode()
def greedy_answer(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """Greedy reply to ``prompt``: (decoded text without special tokens, number of new tokens).

    At most ``max_new_tokens``, and never past the model's context (``prompt + new <= max
    positions``): ``generate`` itself stops only at EOS, so a huge limit would grow the cache until
    memory runs out. A prompt that fills the context is a :class:`SurefastError`.
    """
    ids = encode_chat(tokenizer, prompt).to(model.device)
    context = model_max_length(model)
    if ids.shape[1] >= context:
        raise SurefastError(f"the prompt is {ids.shape[1]} tokens; the model holds {context} positions", "shorten it")
    max_new_tokens = min(max_new_tokens, context - ids.shape[1])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[0, ids.shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.numel())
