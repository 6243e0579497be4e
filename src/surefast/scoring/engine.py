"""``score_items``: six option-letter logits per item, fast.

1. Letters: bare ``"A".."F"`` if the rendered item ends in whitespace, else ``" A".." F"``.
2. The disk cache (if a CacheKey is given) answers every item it already holds; if it holds all
   of them, the model is not touched.
3. The prefix (chat head, instruction, demos: most of the tokens) is tokenized and run once; its
   K/V is reused read-only by every batch (:mod:`surefast.scoring.prefix`), read once per layer
   for the whole batch where the model allows it (:mod:`surefast.scoring.prefix_attention`).
4. Items are tokenized apart, shortened if over-long, sorted by length and batched under a
   token budget; rests are right-padded, with position ids ``P + arange`` (and on the plain path
   an explicit attention mask, prefix + real tokens); with causal attention no real token sees a pad.
5. The decoder body's final hidden state at each row's last real token ``[B, H]`` meets only the
   six letter rows of the output head (:class:`surefast.scoring.arch.LetterHead`).
6. Each finished batch is written as a shard before the next starts.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from surefast.data.items import MCItem
from surefast.errors import SurefastError
from surefast.models.arch import cache_kwarg, decoder_body, model_max_length
from surefast.scoring.arch import LetterHead
from surefast.scoring.batching import (
    Encoded,
    ItemsTooLong,
    common_token_prefix,
    encode_item,
    encode_prefix,
    encode_text,
    plan_batches,
    sample_for_check,
    split_mismatch,
)
from surefast.scoring.cache import Cached, ScoreStore, sha_of
from surefast.scoring.letters import LetterTokens, letter_tokens, tokenizer_name, variant_for_all
from surefast.scoring.prefix import PrefixState
from surefast.scoring.prefix_attention import active as split_attention
from surefast.scoring.prefix_attention import unsupported_reason as split_attention_reason
from surefast.scoring.types import CacheKey, PromptLike, ScoreResult, ScoringConfig

ProgressFn = Callable[[int, int], None]


def model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _check_items(items: Sequence[MCItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.uid in seen:
            raise SurefastError(f"duplicate item uid {item.uid!r}: uids key the score cache and must be unique")
        seen.add(item.uid)


def _probe(item: MCItem) -> MCItem:
    """A fixed stand-in item of the same task and meta: its rendering fingerprints the template."""
    return dataclasses.replace(
        item, uid="__probe__", context="", question="Q?", options=("a", "b", "c", "d", "e", "f"), label=0
    )


def prompt_fingerprint(
    tokenizer: Any, prompt: PromptLike, first: MCItem, letters: LetterTokens, max_length: int
) -> str:
    """What the cached logits depend on besides the CacheKey: prefix and template as token ids, letters, max_length."""
    try:
        template = encode_text(tokenizer, prompt.render(_probe(first)))
    except Exception:  # a renderer may insist on real fields; the first item then stands in
        template = encode_text(tokenizer, prompt.render(first))
    # token ids, not the tokenizer's name or path: a moved cache folder must not change the key
    return sha_of(encode_prefix(tokenizer, prompt.prefix), template, letters.variant, letters.ids, max_length)


class _Runner:
    """Runs batches of encoded items through the decoder body and the six-row head."""

    def __init__(self, model: Any, prefix_ids: list[int], letters: LetterTokens, use_prefix_cache: bool) -> None:
        self.body = decoder_body(model)
        self.head = LetterHead(model, letters.ids)
        self.device = model_device(model)
        self.prefix_ids = prefix_ids
        self.pad_id = 0
        self.prefix: PrefixState | None = None
        self.fallback_reason: str | None = None
        if use_prefix_cache and prefix_ids:
            state = PrefixState(self.body, prefix_ids, self.device)
            if state.supported:
                self.prefix = state
            else:
                self.fallback_reason = state.reason
                warnings.warn(
                    f"{type(model).__name__}: the prefix KV cache cannot be shared ({state.reason}); "
                    "scoring full prompts instead (same results, slower)",
                    stacklevel=4,
                )
        self.tokens = len(prefix_ids) if self.prefix is not None else 0
        # the prefix read once per layer and batch (prefix_attention.py) where the model allows it
        split = self.prefix is not None and split_attention_reason(self.body, self.device) is None
        self.prefix_kv = self.prefix.kv() if self.prefix is not None and split else None
        self.cache_kwarg = cache_kwarg(self.body)

    def row_ids(self, enc: Encoded) -> list[int]:
        return enc.rest_ids if self.prefix is not None else self.prefix_ids + enc.rest_ids

    def __call__(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """``[b, 6]`` float32 letter logits of the batch's items."""
        rows = [self.row_ids(enc) for enc in batch]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(lengths.max())
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        offset = self.prefix.length if self.prefix is not None else 0
        positions = (offset + torch.arange(width))[None, :].expand(len(rows), -1)  # [B, Q]
        hidden = self._forward(ids.to(self.device), lengths, positions.to(self.device), offset)  # [B, Q, H]
        last = (lengths - 1).to(hidden.device)
        answer = hidden[torch.arange(len(rows), device=hidden.device), last]  # [B, H]
        self.tokens += int(lengths.sum())
        return self.head(answer)

    def _forward(self, ids: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, offset: int) -> torch.Tensor:
        """The body's last hidden states ``[B, Q, H]`` of right-padded rows ``ids [B, Q]``."""
        if self.prefix_kv is not None:  # causal attention: no real token sees a pad, no mask needed
            with split_attention(self.body):
                out = self.body(input_ids=ids, position_ids=positions, use_cache=False, shared_prefix=self.prefix_kv)
        else:
            real = torch.arange(ids.shape[1])[None, :] < lengths[:, None]  # [B, Q] True for real tokens
            mask = torch.cat([torch.ones(len(ids), offset, dtype=torch.long), real.long()], dim=1)  # [B, P + Q]
            cache = self.prefix.batch_cache(len(ids)) if self.prefix is not None else None
            out = self.body(
                input_ids=ids,
                attention_mask=mask.to(ids.device),
                position_ids=positions,
                use_cache=cache is not None,
                **{self.cache_kwarg: cache},
            )
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _encode_all(
    tokenizer: Any,
    prompt: PromptLike,
    items: Sequence[MCItem],
    todo: Sequence[int],
    texts: Sequence[str],
    prefix_len: int,
    max_length: int,
) -> list[Encoded]:
    """Every item in ``todo`` encoded, or one :class:`ItemsTooLong` naming *all* that do not fit,
    raised before the model runs: a caller that leaves them out must know them all at once."""
    encoded: list[Encoded] = []
    too_long: list[ItemsTooLong] = []
    for i in todo:
        try:
            encoded.append(encode_item(tokenizer, prompt, items[i], prefix_len, max_length, texts[i]))
        except ItemsTooLong as exc:
            too_long.append(exc)
    if too_long:
        first = too_long[0]
        uids = tuple(uid for exc in too_long for uid in exc.uids)
        what = first.message if len(uids) == 1 else f"{len(uids)} items do not fit (first: {first.message})"
        raise ItemsTooLong(what, first.hint, uids)
    return encoded


@torch.inference_mode()
def score_items(
    model: Any,
    tokenizer: Any,
    prompt: PromptLike,
    items: Sequence[MCItem],
    *,
    config: ScoringConfig = ScoringConfig(),  # noqa: B008 (frozen dataclass: a safe default)
    cache_key: CacheKey | None = None,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """The six option-letter logits of every item at its answer position, in ``items`` order.

    ``model`` is a transformers causal LM (or a VLM, whose language model is used) in eval mode,
    in whatever dtype and device it was given. With ``cache_key``, finished batches are stored
    under ``config.cache_dir`` (default ``$SUREFAST_HOME/scores/``) and a re-run computes only what is missing.
    """
    start = time.perf_counter()
    items = list(items)
    _check_items(items)
    max_length = config.max_length or model_max_length(model)
    if not items:
        return ScoreResult((), np.zeros((0, 6), np.float32), np.zeros(0, np.int64), 0, 0, 0.0, 0, np.zeros(0, bool))
    texts = [prompt.render(item) for item in items]
    letters = letter_tokens(tokenizer, variant_for_all(texts))
    store, done = _cache_lookup(tokenizer, prompt, items, letters, max_length, cache_key, config.cache_dir)
    n_cached = len(done)
    if progress is not None:
        progress(n_cached, len(items))
    todo = [i for i, item in enumerate(items) if item.uid not in done]
    tokens, used_prefix, repaired = 0, False, False
    if todo:
        prefix_ids, encoded, repaired = _encode_safely(tokenizer, prompt, items, todo, texts, max_length, config)
        labels = [items[i].label for i in todo]
        tokens, used_prefix = _score_batches(
            model, tokenizer, prefix_ids, encoded, labels, letters, config, store, done, progress
        )
    short = np.array([done[item.uid].shortened for item in items], dtype=bool)
    return ScoreResult(
        uids=tuple(item.uid for item in items),
        logits=np.stack([done[item.uid].logits for item in items]).astype(np.float32),  # [N, 6]
        labels=np.array([item.label for item in items], dtype=np.int64),
        shortened=int(short.sum()),
        n_cached=n_cached,
        seconds=time.perf_counter() - start,
        tokens_scored=tokens,
        shortened_mask=short,
        letter_ids=letters.ids,
        prefix_cache=used_prefix,
        boundary_repaired=repaired,
    )


def _cache_lookup(
    tokenizer: Any,
    prompt: PromptLike,
    items: list[MCItem],
    letters: LetterTokens,
    max_length: int,
    cache_key: CacheKey | None,
    cache_dir: str | None = None,
) -> tuple[ScoreStore | None, dict[str, Cached]]:
    """The score store for ``cache_key`` (None without one) and the logits it holds for ``items``."""
    if cache_key is None:
        return None, {}
    fp = prompt_fingerprint(tokenizer, prompt, items[0], letters, max_length)
    details = {
        "letters": list(letters.strings),
        "letter_ids": list(letters.ids),
        "max_length": max_length,
        "tokenizer": tokenizer_name(tokenizer),
        "n_items": len(items),
    }
    store = ScoreStore(cache_key, fp, details, root=cache_dir)
    wanted = {item.uid for item in items}
    done = {uid: c for uid, c in store.load().items() if uid in wanted}
    changed = [item.uid for item in items if item.uid in done and done[item.uid].label != item.label]
    if changed:  # checked before any compute: the data changed under an unchanged fingerprint
        raise SurefastError(
            f"cached labels differ from the items' labels for {len(changed)} items (first: "
            f"{changed[0]}): the data changed under the same data fingerprint",
            f"fix data_fp, or delete {store.folder}",
        )
    return store, done


def _encode_safely(
    tokenizer: Any,
    prompt: PromptLike,
    items: Sequence[MCItem],
    todo: Sequence[int],
    texts: Sequence[str],
    max_length: int,
    config: ScoringConfig,
) -> tuple[list[int], list[Encoded], bool]:
    """(prefix ids, the ``todo`` items encoded, whether the split was repaired) such that
    ``prefix_ids + rest_ids`` is each whole prompt's tokenization (``config.boundary``)."""
    prefix_ids = encode_prefix(tokenizer, prompt.prefix)
    encoded = _encode_all(tokenizer, prompt, items, todo, texts, len(prefix_ids), max_length)
    mismatch = None
    if config.boundary == "check":
        mismatch = split_mismatch(tokenizer, prompt.prefix, prefix_ids, sample_for_check(encoded))
        if mismatch is not None:
            warnings.warn(
                f"tokenizer {tokenizer_name(tokenizer)!r} splits item {mismatch} differently when prefix and item "
                "are tokenized apart (the prompt's prefix does not end on a clean token boundary); tokenizing whole "
                "prompts instead and caching the token prefix they share",
                stacklevel=3,
            )
    if config.boundary != "full" and mismatch is None:
        return prefix_ids, encoded, False
    shared, encoded = common_token_prefix(tokenizer, prompt.prefix, prefix_ids, encoded)
    return prefix_ids[:shared], encoded, shared != len(prefix_ids) or mismatch is not None


def _score_batches(
    model: Any,
    tokenizer: Any,
    prefix_ids: list[int],
    encoded: list[Encoded],
    labels: Sequence[int],
    letters: LetterTokens,
    config: ScoringConfig,
    store: ScoreStore | None,
    done: dict[str, Cached],
    progress: ProgressFn | None,
) -> tuple[int, bool]:
    """Run ``encoded`` (labels alongside) in length-sorted batches under the token budget; return
    (real tokens run, the shared prefix once; whether the shared-prefix K/V cache served them).

    Each batch is written to ``store`` before the next starts (a killed run keeps it) and added
    to ``done``, which also holds the cached items: progress counts both.
    """
    total = len(done) + len(encoded)
    runner = _Runner(model, prefix_ids, letters, config.use_prefix_cache)
    runner.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    lengths = [len(runner.row_ids(enc)) for enc in encoded]
    for batch in plan_batches(lengths, config.tokens_per_batch(runner.device), config.max_batch_size):
        logits = runner([encoded[j] for j in batch]).cpu().numpy()  # [b, 6]
        uids = [encoded[j].uid for j in batch]
        batch_labels = np.array([labels[j] for j in batch], dtype=np.int64)
        cut = np.array([encoded[j].shortened for j in batch], dtype=bool)
        if store is not None:
            store.write(uids, logits, batch_labels, cut)
        for k, uid in enumerate(uids):
            done[uid] = Cached(logits[k], int(batch_labels[k]), bool(cut[k]))
        if progress is not None:
            progress(len(done), total)
    return runner.tokens, runner.prefix is not None
