"""The three prompt strategies of the reference benchmark, few-shot demos, chat templates.

Usage::

    from surefast.prompts import PromptConfig, build_prompt
    prompt = build_prompt("mmlu", data.demos, tokenizer, PromptConfig(strategy="shared"))
    text = prompt.prefix + prompt.render(item)  # exactly what the model sees; next token " A".." F"

See ``docs/tasks.md`` for the texts and the layout.
"""

from surefast.prompts.build import (
    PROMPT_VERSION,
    STRATEGIES,
    Prompt,
    PromptConfig,
    build_prompt,
    chat_frame,
    format_item,
    instruction_text,
)
from surefast.prompts.display import render_for_display

__all__ = [
    "PROMPT_VERSION",
    "STRATEGIES",
    "Prompt",
    "PromptConfig",
    "build_prompt",
    "chat_frame",
    "format_item",
    "instruction_text",
    "render_for_display",
]
