"""Option scoring: the only evaluation code that runs a model.

``score_items(model, tokenizer, prompt, items)`` returns the six option-letter logits of every
six-option item at its answer position, computing the shared prefix's KV cache once, batching
items by length, reading only six rows of the output head, and (given a ``CacheKey``) storing
finished batches on disk so re-runs are free and interrupted runs resume. ``score_items_reference``
is the plain one-forward-per-item baseline it is tested against. See docs/scoring.md.
"""

from surefast.scoring.cache import ScoreStore, scores_dir
from surefast.scoring.engine import score_items
from surefast.scoring.letters import LetterTokens, letter_tokens
from surefast.scoring.reference import score_items_reference
from surefast.scoring.types import CacheKey, PromptLike, ScoreResult, ScoringConfig

__all__ = [
    "CacheKey",
    "LetterTokens",
    "PromptLike",
    "ScoreResult",
    "ScoreStore",
    "ScoringConfig",
    "letter_tokens",
    "score_items",
    "score_items_reference",
    "scores_dir",
]
