"""Prompts: a prefix shared by every item of a (task, strategy), and each item's rest.

``prefix + render(item)`` is exactly what the model reads; its next token is the answer letter
(``" A"`` .. ``" F"``, after the cue ``"Answer:"``). The prefix holds the chat template's head,
the instruction and the few-shot demos, and ends with a newline, so tokenizing prefix and rest
apart gives the ids of the whole (the rest never starts with whitespace): scoring computes the
prefix's KV cache once per (task, strategy).

Layout, as in the reference benchmark (LLM-Uncertainty-Bench ``generate_logits.py``)::

    [system]\\n\\n                                   (plain mode, only if a system text is given)
    <instruction>                                  (shared/task strategies; base has none)
    <demo 1> ... <demo k>                          ("...Answer: B\\n" each)
    \\nNow make your best effort ...\\n\\n           (only with demos and an instruction)
    ---- prefix ends ----
    Context: ...\\nQuestion: ...\\nChoices:\\nA. ...\\n...F. None of the above\\nAnswer:

With a chat template the whole text is one user message; the user turn ends after the choices
and the cue ``"Answer:"`` opens the assistant's turn (the reference's Chat-V1 put the cue in the
user turn and read the letter at the start of the assistant's; prefilling it makes the next
token the letter for every template). ``chat=False`` on an instruct model is the reference's
Chat-V2 (the base prompt format).
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from surefast.data.items import LETTERS, TASKS, MCItem
from surefast.errors import SurefastError
from surefast.prompts import texts
from surefast.registry import Registry

PROMPT_VERSION = "1"  # bump when any text or layout changes: prompt fingerprints change with it
_SENTINEL = "\x00SUREFAST-ITEM\x00"


@dataclass(frozen=True)
class PromptConfig:
    """How items are presented to the model.

    ``strategy``: ``"base"`` (demos then the question), ``"shared"`` (one instruction for every
    task, then demos) or ``"task"`` (a task-specific instruction). ``n_shots``: demos used
    (None: all the task's demos; 0: zero-shot). ``chat``: wrap in the tokenizer's chat template
    (None: when the tokenizer has one). ``system``: a system message (chat) or a first
    paragraph (plain); None keeps the template's default.
    """

    strategy: str = "shared"
    n_shots: int | None = None
    chat: bool | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        INSTRUCTIONS.get(self.strategy)  # an unknown strategy: SurefastError with a suggestion
        # a number first: "x" < 0 would be a TypeError, not a one-line SurefastError
        if self.n_shots is not None and (not isinstance(self.n_shots, numbers.Real) or self.n_shots < 0):
            raise SurefastError(f"n_shots must be >= 0, got {self.n_shots!r}", "0: zero-shot; None: the task's default")


@dataclass(frozen=True)
class Prompt:
    """One (task, strategy)'s prompt. Build it with :func:`build_prompt`."""

    task: str
    config: PromptConfig
    chat: bool  # whether the chat template is applied
    prefix: str  # identical for every item; ends with "\n" (or is empty)
    lead: str = ""  # text between the prefix and each item (a chat head's last, unterminated line)
    tail: str = "\n" + texts.ANSWER_CUE  # after the choices: the cue, through the template's tail in chat mode
    demo_uids: tuple[str, ...] = field(default=())

    def render(self, item: MCItem, context: str | None = None) -> str:
        """Everything after the prefix for ``item``; ``context`` replaces its own (a shortened one)."""
        if item.task != self.task:
            raise ValueError(f"item {item.uid} is a {item.task} item, this prompt is for {self.task}")
        return self.lead + format_item(item, context) + self.tail

    def full(self, item: MCItem, context: str | None = None) -> str:
        """Exactly what the model sees for ``item``."""
        return self.prefix + self.render(item, context)

    @property
    def fingerprint(self) -> str:
        """16 hex chars over the version, task, strategy and every fixed text (prefix, lead, tail)."""
        blob = json.dumps(
            [PROMPT_VERSION, self.task, self.config.strategy, self.chat, self.prefix, self.lead, self.tail]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def format_item(item: MCItem, context: str | None = None, answer: bool = False) -> str:
    """``[Context: ...\\n]Question: ...\\nChoices:\\nA. ...\\n...F. ...``, plus ``\\nAnswer: X\\n`` for a demo."""
    ctx = item.context if context is None else context
    label = texts.CONTEXT_LABELS[item.task]
    parts = []
    if label is not None and ctx:
        parts.append(f"{label}: {ctx}\n" if label else f"{ctx}\n")
    parts.append(f"Question: {item.question}\nChoices:\n")
    parts.append("\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, item.options, strict=True)))
    if answer:
        parts.append(f"\n{texts.ANSWER_CUE} {LETTERS[item.label]}\n")
    return "".join(parts)


InstructionFn = Callable[[str, Sequence[MCItem]], str]  # (task, demos) -> the plain text before the item


def _shots(demos: Sequence[MCItem]) -> str:
    return "".join(format_item(d, answer=True) for d in demos)


def _base(task: str, demos: Sequence[MCItem]) -> str:
    return _shots(demos)  # no instruction


def _shared(task: str, demos: Sequence[MCItem]) -> str:
    return texts.SHARED_FEW + _shots(demos) + texts.NOW if demos else texts.SHARED_ZERO


def _task(task: str, demos: Sequence[MCItem]) -> str:
    return texts.TASK_FEW[task] + _shots(demos) + texts.NOW if demos else texts.TASK_ZERO[task]


# strategy -> its text before the item, in the order the CLI and the benchmark list them
INSTRUCTIONS: Registry[InstructionFn] = Registry("prompt strategy", cutoff=0.4)  # short names: a looser suggestion
INSTRUCTIONS.register("base", _base)
INSTRUCTIONS.register("shared", _shared)
INSTRUCTIONS.register("task", _task)
STRATEGIES: tuple[str, ...] = tuple(INSTRUCTIONS)


def instruction_text(task: str, strategy: str, demos: Sequence[MCItem]) -> str:
    """The plain text before the item: instruction and demos (the reference's layout)."""
    return INSTRUCTIONS.get(strategy)(task, demos)


def build_prompt(
    task: str, demos: Sequence[MCItem], tokenizer: Any = None, config: PromptConfig | None = None
) -> Prompt:
    """The prompt of ``task`` under ``config``, with the first ``n_shots`` of ``demos``.

    ``tokenizer`` is needed only for chat templates (None: plain text). The demos must be the
    task's own (``TaskData.demos``), never evaluated items.
    """
    config = config or PromptConfig()
    if task not in TASKS:
        raise SurefastError(f"unknown task {task!r}", f"choose from {', '.join(TASKS)}")
    if any(d.task != task for d in demos):
        raise SurefastError(f"demos for {task} include items of another task")
    n_shots = len(demos) if config.n_shots is None else config.n_shots
    if n_shots > len(demos):
        raise SurefastError(
            f"n_shots={n_shots} but {task} has {len(demos)} demos",
            f"use n_shots <= {len(demos)}, or load the task with n_demos={n_shots}",
        )
    used = list(demos[:n_shots])
    body = instruction_text(task, config.strategy, used)
    chat = _use_chat(tokenizer, config.chat)
    if chat:
        head, frame_tail = chat_frame(tokenizer, config.system)
        before, tail = head + body, frame_tail + texts.ANSWER_CUE
    else:
        before = (config.system.rstrip() + "\n\n" if config.system else "") + body
        tail = "\n" + texts.ANSWER_CUE

    def probe(lead: str) -> str:
        return lead + format_item(_probe_item(task)) + tail

    prefix, lead = choose_cut(before, tokenizer, probe)
    return Prompt(task, config, chat, prefix, lead, tail, tuple(d.uid for d in used))


def _use_chat(tokenizer: Any, chat: bool | None) -> bool:
    has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise SurefastError(
            "chat=True, but the tokenizer has no chat template"
            if tokenizer is not None
            else "chat=True needs the model's tokenizer",
            "use chat=False (plain prompts)",
        )
    return has_template if chat is None else chat


def chat_frame(tokenizer: Any, system: str | None) -> tuple[str, str]:
    """(head, tail) of the chat template around one user message, generation prompt included."""

    def render(content: str) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        try:
            out = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        except Exception as exc:  # jinja errors: e.g. a template without a system role
            raise SurefastError(
                f"the tokenizer's chat template failed: {type(exc).__name__}: {exc}",
                "drop the system text, or use chat=False",
            ) from exc
        return str(out)

    framed = render(_SENTINEL)
    if framed.count(_SENTINEL) != 1:
        raise SurefastError("the chat template does not show the user message verbatim", "use chat=False")
    head, tail = framed.split(_SENTINEL)
    probe = "Probe: a\nB. b"
    if render(probe) != head + probe + tail:  # the template rewrites content (strips, escapes): no clean split
        raise SurefastError(
            "the chat template changes the user message's text, so the prompt cannot be split "
            "into a shared prefix and items",
            "use chat=False",
        )
    return head, tail


def choose_cut(text: str, tokenizer: Any, probe: Callable[[str], str]) -> tuple[str, str]:
    """Split ``text`` (all that precedes the item) into (prefix, lead) at a line break that tokenizes cleanly.

    Tokenizers disagree on a blank line before the item: Qwen2.5 and Llama-3 keep ``"\\n\\n"`` as one
    token, so the prefix must end after both newlines; GPT-2-style pre-tokenizers (SmolLM2) split
    ``"\\n\\nQ"`` into ``"\\n", "\\n", "Q"`` but a trailing ``"\\n\\n"`` into one token, so the prefix
    must end after the first. Candidates: after the last newline, then after the first newline of
    the final run. With a tokenizer, the first candidate whose ids match on a probe item wins;
    without one, the first. The full text is the same whichever cut is taken.
    """
    last = text.rfind("\n") + 1
    candidates = [last]
    run_start = last
    while run_start > 1 and text[run_start - 2] == "\n":
        run_start -= 1
    if run_start < last:
        candidates.append(run_start)
    if tokenizer is not None:
        for cut in candidates:
            if boundary_ok(tokenizer, text[:cut], probe(text[cut:])):
                return text[:cut], text[cut:]
    return text[: candidates[0]], text[candidates[0] :]


def boundary_ok(tokenizer: Any, prefix: str, rest: str) -> bool:
    """Whether ids(prefix) + ids(rest) == ids(prefix + rest) (no special tokens added)."""

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    return ids(prefix) + ids(rest) == ids(prefix + rest)


def _probe_item(task: str) -> MCItem:
    """A stand-in item for boundary probes (its first characters are what matters)."""
    return MCItem(task, "probe", "Probe context.", "Probe question?", ("a", "b", "c", "d", "e", "f"), 0)
