"""A free draft: continuations looked up in the prompt and the text so far (prompt lookup, n-gram matching).

When the last ``n`` tokens of the sequence occurred earlier, the tokens that followed them then
are a guess for what follows now (code repeats names, answers repeat the question). The guess
costs no draft forward: :class:`NgramIndex` keeps every n-gram's end positions and extends them
incrementally as tokens are committed, so a lookup is a dictionary read.

A proposal is deterministic given the sequence so far, so under sampling its draft distribution
is one-hot: :func:`surefast.speculate.verify.verify_sample` accepts such a child ``x`` with
probability ``p(x)`` and otherwise zeroes ``p(x)`` before trying the next candidate, which keeps
the emitted token distributed as ``p`` (the one-draft lemma with ``q = onehot(x)``).

Matching rule: try the longest n-gram first (``max_ngram`` down to ``min_ngram``); among its
earlier occurrences, the most recent, then the earliest (the one transformers' prompt lookup
takes), then the others from the newest; distinct continuations up to ``branches`` (default 2:
on code that copies its prompt the earliest occurrence is the right one, on a reasoning answer
that repeats its own phrases the most recent is).

With a draft model, lookups join the draft's tree; once they have been accurate lately (per
token, ``trust``), a step that finds one skips the draft model and verifies the lookup alone, up
to ``length`` tokens: code that repeats its prompt then costs no draft forward at all. The draft
catches up on the skipped tokens in its next forward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from surefast.speculate.stats import require_int, require_real


@dataclass(frozen=True)
class NgramConfig:
    """How the n-gram draft looks up continuations (``length``: at most this many tokens per branch)."""

    max_ngram: int = 3
    min_ngram: int = 1
    length: int = 10
    branches: int = 2
    trust: float = 0.6  # lookups this accurate (per token, recently) replace the draft model for the step
    smoothing: float = 0.7  # weight of the past in that accuracy

    def __post_init__(self) -> None:
        own = "n-gram option"
        require_int(own, "min_ngram", self.min_ngram, 1, "the shortest suffix matched, 1 or more (default 1)")
        require_int(own, "max_ngram", self.max_ngram, self.min_ngram, f"max_ngram >= min_ngram ({self.min_ngram})")
        require_int(own, "length", self.length, 1, "tokens proposed per branch, 1 or more (default 10)")
        require_int(own, "branches", self.branches, 1, "distinct continuations per step, 1 or more (default 1)")
        trust = "per-token accuracy above which a lookup replaces the draft model (default 0.6; 1: never)"
        require_real(own, "trust", self.trust, 0.0, 1.0, trust)
        require_real(own, "smoothing", self.smoothing, 0.0, 1.0, "weight of the past (default 0.7)", high_open=True)


class NgramIndex:
    """The sequence so far and, per n-gram (``min_ngram..max_ngram`` tokens), the positions where it ended."""

    def __init__(self, config: NgramConfig, tokens: Iterable[int] = ()) -> None:
        self.config = config
        self.tokens: list[int] = []
        self.ends: dict[tuple[int, ...], list[int]] = defaultdict(list)  # n-gram -> indices of its last token
        self.accuracy = 0.5  # running per-token acceptance of the first continuation tried
        self.extend(tokens)

    @property
    def trusted(self) -> bool:
        """Recent lookups were accepted often enough to skip the draft model when one exists (``trust``)."""
        return self.config.trust < 1.0 and self.accuracy >= self.config.trust

    def observe(self, proposed: list[int], accepted: list[int]) -> None:
        """Update the running accuracy from a tried continuation and the tokens the target accepted.

        The tokens tried are the matching prefix and the first mismatch (the target saw no further).
        """
        if not proposed:
            return
        matched = common_prefix(proposed, accepted)
        tried = matched + (1 if matched < len(proposed) else 0)
        beta = 1.0 - self.config.smoothing
        self.accuracy += beta * (matched / tried - self.accuracy)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append committed tokens and index the n-grams ending at each of them."""
        c = self.config
        for t in tokens:
            self.tokens.append(int(t))
            end = len(self.tokens) - 1
            for n in range(c.min_ngram, min(c.max_ngram, end + 1) + 1):
                self.ends[tuple(self.tokens[end - n + 1 : end + 1])].append(end)

    def propose(self, length: int | None = None, branches: int | None = None) -> list[list[int]]:
        """Up to ``branches`` distinct continuations of the current suffix, each at most ``length`` tokens."""
        c, seq = self.config, self.tokens
        length = c.length if length is None else length
        branches = c.branches if branches is None else branches
        last = len(seq) - 1
        out: list[list[int]] = []
        if length <= 0 or last < 1:
            return out
        for n in range(min(c.max_ngram, last), c.min_ngram - 1, -1):
            ends = self.ends.get(tuple(seq[last - n + 1 :]), [])
            for end in occurrence_order(ends[:-1] if ends and ends[-1] == last else ends):  # not the suffix itself
                cont = seq[end + 1 : end + 1 + length]
                if cont and cont not in out:
                    out.append(cont)
                    if len(out) >= branches:
                        return out
        return out


def occurrence_order(ends: list[int]) -> list[int]:
    """Occurrences in the order they are tried: the most recent, the earliest, then the others, newest first."""
    if len(ends) <= 2:
        return ends[::-1]
    return [ends[-1], ends[0], *ends[-2:0:-1]]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n
