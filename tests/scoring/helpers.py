"""Stand-ins for the prompts module (same two members as surefast.prompts.Prompt) and items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from surefast.data.items import LETTERS, MCItem
from surefast.models import load_model
from surefast.models.cache import is_complete
from surefast.paths import models_dir

CHAT_HEAD = "<|im_start|>system\nAnswer with the letter of the right option.<|im_end|>\n<|im_start|>user\n"
DEMO = "Context: the sky on a clear day\nQuestion: What colour is it?\nA. blue\nB. red\nC. green\nD. black\nE. I don't know\nF. None of the above\nAnswer: A\n\n"


@dataclass
class StandInPrompt:
    """``prefix`` + ``render(item, context=None)``: what surefast.prompts.Prompt provides."""

    prefix: str
    cue: str = "Answer:"  # ends without whitespace -> " A".." F"
    rendered_contexts: list[str | None] = field(default_factory=list)

    def render(self, item: MCItem, context: str | None = None) -> str:
        self.rendered_contexts.append(context)
        ctx = item.context if context is None else context
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.options, strict=True))
        head = f"Context: {ctx}\n" if ctx else ""
        return f"{head}Question: {item.question}\n{options}\n{self.cue}"


def make_prompt(demos: int = 3, cue: str = "Answer:") -> StandInPrompt:
    return StandInPrompt(CHAT_HEAD + DEMO * demos, cue)


def make_items(n: int = 12, task: str = "cosmosqa", words: int = 4) -> list[MCItem]:
    """Items of clearly varying lengths (context grows with the index)."""
    return [
        MCItem(
            task,
            f"{task}-{i}",
            " ".join(f"w{i}x{j}" for j in range(words * (i % 5))),
            f"What is item {i} about?",
            (f"first {i}", f"second {i}", f"third {i}", f"fourth {i}", "I don't know", "None of the above"),
            i % 6,
        )
        for i in range(n)
    ]


def real_tokenizer(name: str) -> Any:
    """A pulled model's tokenizer (use with the real_home fixture); SmolLM2 is pulled if missing."""
    if name == "smollm2-135m-instruct":
        return load_model(name, device="cpu").tokenizer  # pulls once (~100 MB), as the smoke test does
    if not is_complete(models_dir() / name):
        pytest.skip(f"{name} is not pulled (surefast models pull {name})")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models_dir() / name)
