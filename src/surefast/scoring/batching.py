"""Tokenizing prompts (prefix once, each item's rest separately), shortening over-long items, batching.

The prefix is tokenized once with the tokenizer's own leading special tokens (a BOS, for
tokenizers that add one, unless the prefix's chat template already wrote it); every item's rest
is tokenized without special tokens. ``prefix_ids + rest_ids`` must equal the ids of the whole
prompt. The prompts module guarantees a clean boundary; scoring verifies it on a sample of items
(:func:`split_mismatch`) and, where it does not hold, falls back to tokenizing every whole
prompt and caching only the token prefix all items share (:func:`common_token_prefix`).

An item longer than ``max_length`` gets its *own* context shortened: tokens are dropped from the
end of the context, its beginning is kept and ``" ..."`` marks the cut; the instruction and
demos (the prefix) are never cut. If even an empty context does not fit, :class:`ItemsTooLong`
(a SurefastError naming every such item: the benchmark leaves them out and counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surefast.data.items import MCItem
from surefast.errors import SurefastError
from surefast.scoring.types import PromptLike

ELLIPSIS = " ..."
SHORTEN_TRIES = 12
TOO_LONG_HINT = (
    "use fewer few-shot demos (--shots) or a model with a longer context (library: raise ScoringConfig.max_length); "
    "surefast bench run and study run leave such items out and count them"
)


class ItemsTooLong(SurefastError):
    """Items that do not fit ``max_length`` even with their own context removed; ``uids`` names
    them all, so a caller can leave exactly these out (which ones depends only on the items, the
    tokenizer, the prompt and ``max_length``, never on the model's weights)."""

    def __init__(self, message: str, hint: str | None, uids: tuple[str, ...]) -> None:
        super().__init__(message, hint)
        self.uids = uids


@dataclass(frozen=True)
class Encoded:
    """One item ready to score: the ids that follow the prefix."""

    uid: str
    rest_ids: list[int]
    text: str  # the rendered rest actually scored (shortened context, if it was)
    shortened: bool


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text by default (a BOS for Llama-2/Gemma, none for Qwen)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prefix(tokenizer: Any, prefix: str) -> list[int]:
    """Prefix ids, with the tokenizer's leading specials unless the text already starts with them."""
    ids = encode_text(tokenizer, prefix)
    lead = leading_special_ids(tokenizer)
    if lead and ids[: len(lead)] != lead:
        ids = lead + ids
    return ids


def encode_full(tokenizer: Any, text: str) -> list[int]:
    """The ids of a whole prompt, tokenized in one piece (the reference's view)."""
    return encode_prefix(tokenizer, text)


def encode_item(
    tokenizer: Any, prompt: PromptLike, item: MCItem, prefix_len: int, max_length: int, text: str | None = None
) -> Encoded:
    """The item's rest ids, shortening its own context if ``prefix_len + len(rest)`` exceeds ``max_length``."""
    text = prompt.render(item) if text is None else text
    ids = encode_text(tokenizer, text)
    if prefix_len + len(ids) <= max_length:
        return Encoded(item.uid, ids, text, False)
    budget = max_length - prefix_len
    context_ids = encode_text(tokenizer, item.context) if item.context else []
    keep = len(context_ids)
    for _ in range(SHORTEN_TRIES):
        over = prefix_len + len(ids) - max_length
        if over <= 0:
            return Encoded(item.uid, ids, text, True)
        keep -= over + 2  # the marker costs a token or two; tokenization is not additive, so loop
        if keep <= 0:
            break
        short = tokenizer.decode(context_ids[:keep]).rstrip().rstrip("\ufffd") + ELLIPSIS
        text = prompt.render(item, context=short)
        ids = encode_text(tokenizer, text)
    text = prompt.render(item, context="")
    ids = encode_text(tokenizer, text)
    if prefix_len + len(ids) <= max_length:
        return Encoded(item.uid, ids, text, True)
    raise ItemsTooLong(
        f"item {item.uid} ({item.task}) does not fit max_length={max_length} even with its context removed: "
        f"the shared prefix (instruction + demos) is {prefix_len} tokens and the item without context {len(ids)} "
        f"(room for {budget})",
        TOO_LONG_HINT,
        (item.uid,),
    )


def split_mismatch(tokenizer: Any, prefix: str, prefix_ids: list[int], encoded: Sequence[Encoded]) -> str | None:
    """None if ``prefix_ids + rest_ids`` equals the whole prompt's ids for every item given, else which item differs."""
    for enc in encoded:
        full = encode_full(tokenizer, prefix + enc.text)
        if full != prefix_ids + enc.rest_ids:
            return enc.uid
    return None


def sample_for_check(encoded: Sequence[Encoded], k: int = 4) -> list[Encoded]:
    """The first ``k`` items and ``k`` spread over the rest: cheap, and catches a template that varies."""
    if len(encoded) <= 2 * k:
        return list(encoded)
    step = len(encoded) / k
    return [*encoded[:k], *(encoded[int(step * (j + 0.5))] for j in range(k))]


def common_token_prefix(
    tokenizer: Any, prefix: str, prefix_ids: list[int], encoded: Sequence[Encoded]
) -> tuple[int, list[Encoded]]:
    """Exact split for a prompt whose prefix/item boundary is not clean in tokens.

    Tokenizes every whole prompt; the shared prefix becomes the longest run of ``prefix_ids``
    that every item's ids start with, and each item's rest is the remainder of its own ids. A
    GPT-2 style pre-tokenizer, for one, turns a prefix ending in ``"\n\n"`` into one token on
    its own but into ``"\n"``, ``"\n"`` when a word follows, so the last prefix token moves
    into every item.
    """
    fulls = [
        list(ids) for ids in tokenizer([prefix + enc.text for enc in encoded], add_special_tokens=False)["input_ids"]
    ]
    lead = leading_special_ids(tokenizer)
    shared = len(prefix_ids)
    for j, full in enumerate(fulls):
        if lead and full[: len(lead)] != lead:
            full = lead + full
            fulls[j] = full
        n = 0
        limit = min(shared, len(full) - 1)  # every item keeps at least one token of its own
        while n < limit and full[n] == prefix_ids[n]:
            n += 1
        shared = n
    repaired = [
        Encoded(enc.uid, full[shared:], enc.text, enc.shortened) for enc, full in zip(encoded, fulls, strict=True)
    ]
    return shared, repaired


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Index batches of similar length: longest first, rows x longest row <= batch_tokens.

    Longest first so an out-of-memory shows in the first batch, not after an hour. A row longer
    than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
