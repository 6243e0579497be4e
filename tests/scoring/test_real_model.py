"""Real-model checks: SmolLM2-135M bf16 (pulled from PyPI like the smoke test); slow: fp32 and Gemma-3-270m.

Synthetic general-knowledge questions in the model's own chat template, a shared prefix with demos,
scored by the fast path and by the plain full-prompt reference. The printed numbers are the
agreement figures quoted in docs/scoring.md.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from surefast.data.items import IDK, LETTERS, NOTA, MCItem
from surefast.models import load_model
from surefast.models.cache import is_complete
from surefast.paths import models_dir
from surefast.scoring import ScoringConfig, score_items, score_items_reference
from surefast.scoring.batching import encode_prefix


class ChatPrompt:
    """Instruction and demos in the system/user turns; each item ends the user turn, the assistant answers."""

    def __init__(self, tokenizer, demos: list[MCItem], system: str, separator: str = "\n") -> None:
        if getattr(tokenizer, "chat_template", None):
            head = tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": "X"}], tokenize=False
            )
            self.head = head[: head.rindex("X")]
            tail = tokenizer.apply_chat_template(
                [{"role": "user", "content": "X"}], tokenize=False, add_generation_prompt=True
            )
            self.tail = tail[tail.rindex("X") + 1 :]  # ends in "assistant\n": bare letters
        else:  # a base model (gemma-3-270m): plain text, the tokenizer adds its BOS
            self.head, self.tail = system + "\n\n", "\nAnswer:"  # " A".." F"
        self.prefix = self.head + "".join(self.block(d) + f"Answer: {LETTERS[d.label]}\n{separator}" for d in demos)

    @staticmethod
    def block(item: MCItem) -> str:
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.options, strict=True))
        return f"Question: {item.question}\n{options}\n"

    def render(self, item: MCItem, context: str | None = None) -> str:
        return self.block(item) + ("Answer with the letter only." if "assistant" in self.tail else "") + self.tail


FACTS = [
    ("What is the capital of France?", "Paris", ["Rome", "Berlin", "Madrid"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "black"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("Which animal barks?", "dog", ["cat", "fish", "snake"]),
    ("What is 2 + 2?", "4", ["3", "5", "22"]),
    ("Which season is the coldest?", "winter", ["summer", "spring", "autumn"]),
    ("What is the largest ocean?", "Pacific", ["Atlantic", "Indian", "Arctic"]),
    ("Which gas do plants take in?", "carbon dioxide", ["helium", "neon", "argon"]),
    ("What is the capital of Italy?", "Rome", ["Paris", "Vienna", "Lisbon"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("Which organ pumps blood?", "heart", ["liver", "lung", "kidney"]),
    ("What colour are ripe bananas?", "yellow", ["blue", "purple", "black"]),
    ("What is the opposite of hot?", "cold", ["warm", "loud", "fast"]),
    ("Which bird is a symbol of peace?", "dove", ["crow", "eagle", "owl"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Paris", "Prague"]),
    ("What do we call a baby cat?", "kitten", ["puppy", "calf", "foal"]),
    ("Which metal is liquid at room temperature?", "mercury", ["iron", "gold", "copper"]),
    ("What is the chemical symbol of water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("How many hours are in a day?", "24", ["12", "60", "100"]),
    ("Which continent is Egypt in?", "Africa", ["Europe", "Asia", "Oceania"]),
    ("What is the capital of Spain?", "Madrid", ["Barcelona", "Lisbon", "Rome"]),
]


def fact_items(n: int, seed: int, start: int = 0) -> list[MCItem]:
    rng = random.Random(seed)
    items = []
    for i in range(start, start + n):
        question, answer, wrong = FACTS[i % len(FACTS)]
        options = [answer, *wrong]
        rng.shuffle(options)
        items.append(MCItem("synthetic", f"fact-{i}", "", question, (*options, IDK, NOTA), options.index(answer)))
    return items


def bf16_step(x: np.ndarray) -> np.ndarray:
    """The spacing of bf16 numbers (8 significant bits) at the magnitude of ``x``."""
    return np.asarray(2.0 ** (np.floor(np.log2(np.maximum(np.abs(x), 1e-30))) - 7))


def _compare(model, tokenizer, demos: int, n: int, config: ScoringConfig | None = None, separator: str = ""):
    prompt = ChatPrompt(
        tokenizer,
        fact_items(demos, seed=1, start=20),
        "You are a careful assistant. Pick the right option of each multiple-choice question.",
        separator,
    )
    items = fact_items(n, seed=0)
    fast = score_items(model, tokenizer, prompt, items, config=config or ScoringConfig())
    ref = score_items_reference(model, tokenizer, prompt, items)
    diff = float(np.abs(fast.logits - ref.logits).max())
    agree = float((fast.predictions == ref.predictions).mean())
    return fast, ref, diff, agree, len(encode_prefix(tokenizer, prompt.prefix))


@pytest.mark.usefixtures("real_home")
def test_smollm2_cached_scoring_agrees_with_reference():
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="bf16")
    fast, ref, diff, agree, prefix_len = _compare(loaded.model, loaded.tokenizer, demos=5, n=20)
    assert fast.prefix_cache and not fast.boundary_repaired and fast.letter_ids == ref.letter_ids
    # bf16 logits of ~30 are spaced 0.125-0.25 apart: the reference's full-vocabulary bf16 head rounds
    # them to that grid (our six-row head computes in fp32), so near-ties may flip, nothing else
    top2 = np.sort(ref.logits, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) <= 2 * bf16_step(top2[:, 1])
    flips = fast.predictions != ref.predictions
    print(
        f"\nsmollm2 bf16, prefix {prefix_len} tokens, 20 items: fast vs reference max|diff| {diff:.3f}, "
        f"argmax agreement {agree:.2f} ({int(flips.sum())} flips, {int((flips & near_tie).sum())} of them near-ties)"
    )
    assert not (flips & ~near_tie).any()
    assert diff < 0.5


@pytest.mark.slow
@pytest.mark.usefixtures("real_home")
def test_smollm2_fp32_equals_reference_and_boundary_repair():
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="bf16")
    model, tok = loaded.model, loaded.tokenizer
    fast16, ref16, *_ = _compare(model, tok, demos=5, n=20)
    model.float()
    fast, ref, diff, agree, _ = _compare(model, tok, demos=5, n=20)
    print(
        f"\nsmollm2 fp32: fast vs reference max|diff| {diff:.2e}, argmax agreement {agree:.2f}; vs the fp32 "
        f"reference, argmax agreement of fast bf16 {(fast16.predictions == ref.predictions).mean():.2f} and of "
        f"reference bf16 {(ref16.predictions == ref.predictions).mean():.2f}"
    )
    assert diff < 1e-3 and agree == 1.0

    # demos separated by a blank line: SmolLM2's GPT-2 pre-tokenizer reads a trailing "\n\n" as one token
    # alone but as "\n", "\n" before a word, so the split must be repaired to match the whole prompt
    with pytest.warns(UserWarning, match="clean token boundary"):
        fast, ref, diff, agree, _ = _compare(model, tok, demos=3, n=4, separator="\n")
    print(f"smollm2 fp32, blank-line demos (repaired split): max|diff| {diff:.2e}")
    assert fast.boundary_repaired and fast.prefix_cache and diff < 1e-3


@pytest.mark.slow
@pytest.mark.usefixtures("real_home")
def test_gemma3_270m_prefix_beyond_sliding_window_agrees_with_reference():
    if not is_complete(models_dir() / "gemma-3-270m"):
        pytest.skip("gemma-3-270m is not pulled (surefast models pull gemma-3-270m)")
    loaded = load_model("gemma-3-270m", device="cpu", dtype=torch.float32, pull=False)
    window = loaded.model.config.sliding_window
    fast, _, diff, agree, prefix_len = _compare(loaded.model, loaded.tokenizer, demos=14, n=6)
    print(f"\ngemma-3-270m fp32: prefix {prefix_len} tokens (window {window}), max|diff| {diff:.2e}")
    assert prefix_len > window and fast.prefix_cache and not fast.boundary_repaired
    assert diff < 1e-3 and agree == 1.0
