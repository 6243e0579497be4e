"""What ``surefast bench prompt`` prints: exactly the text the model reads for one item."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from surefast.data import TaskConfig, load_task
from surefast.errors import SurefastError
from surefast.prompts.build import PromptConfig, build_prompt


def render_for_display(
    task: str,
    strategy: str | None,
    item_index: int,
    tokenizer: Any = None,
    task_config: TaskConfig | None = None,
    prompt_config: PromptConfig | None = None,
) -> str:
    """The full prompt of item ``item_index`` (0-based, in sampling order) of ``task``.

    ``strategy`` overrides ``prompt_config.strategy`` when given. Sampling is nested, so item i
    is the same question whatever ``task_config.n`` is (for one seed and source). Special tokens
    of a chat template appear as text, exactly as they are tokenized.
    """
    data = load_task(task, task_config or TaskConfig())
    config = prompt_config or PromptConfig()
    if strategy is not None:
        config = replace(config, strategy=strategy)
    if not 0 <= item_index < len(data.items):
        raise SurefastError(
            f"item {item_index} is out of range: {task} has {len(data.items)} items here",
            f"choose 0..{len(data.items) - 1}",
        )
    prompt = build_prompt(task, data.demos, tokenizer, config)
    return prompt.full(data.items[item_index])
