"""One entry point for every decoding method, with the same output and statistics.

Methods: ``ar`` (the target alone, ``model.generate``; ``target`` is accepted as an alias),
``chain`` / ``static-tree`` / ``dynamic`` / ``sage`` / ``conformal`` (our engine with that policy),
``hf-assisted`` (transformers' assisted generation with the draft as assistant, the peer users
already have) and ``hf-lookup`` (transformers' prompt lookup decoding, ``prompt_lookup_num_tokens``,
the n-gram peer). All return :class:`SpecOutput`, so a CLI or a benchmark runs them side by side
(:mod:`.compare`). :func:`check_method` reads every method name and :func:`engine_policy` every
engine config, for text and VLM runs alike; :func:`hf_generate` is the one runner of
transformers' ``generate`` (the text baselines and a VLM's target alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from surefast.errors import SurefastError
from surefast.registry import suggestion
from surefast.speculate.drafts import check_tokenizers
from surefast.speculate.engine import SpecOutput, SpeculativeDecoder
from surefast.speculate.model import HFCausalLM
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PlanConfig
from surefast.speculate.policies import POLICY_CONFIGS, PolicyConfig, policy_config
from surefast.speculate.stats import SpecStats
from surefast.speculate.verify import GREEDY, SamplingConfig

if TYPE_CHECKING:
    from surefast.models import ModelSpec

HF_METHODS = ("ar", "hf-assisted", "hf-lookup")
METHODS: tuple[str, ...] = ("ar", *POLICY_CONFIGS, *HF_METHODS[1:])  # the built-in methods, for listings and benchmarks
ALIASES = {
    "target": "ar",
    "static": "static-tree",
    "eagle2": "dynamic",
    "assisted": "hf-assisted",
    "prompt-lookup": "hf-lookup",
}
PROMPT_LOOKUP_TOKENS = 10  # transformers' documented example value of prompt_lookup_num_tokens


def methods() -> tuple[str, ...]:
    """Every decoding method now: ``ar``, each registered policy (also one registered after this
    module was imported, see docs/extending.md), ``hf-assisted`` and ``hf-lookup``."""
    return ("ar", *POLICY_CONFIGS, *HF_METHODS[1:])


def check_method(method: str) -> str:
    """The canonical name of a decoding method (aliases and ``_`` for ``-`` accepted); helpful error otherwise."""
    key = method.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    known = methods()
    if key not in known:
        hint = suggestion(key, [*known, *ALIASES], otherwise=f"choose from {', '.join(known)}")
        raise SurefastError(f"unknown decoding method {method!r}", hint)
    return key


def engine_policy(method: str, policy: PolicyConfig | None = None) -> PolicyConfig:
    """The config our engine runs for ``method``: ``policy`` (it must be that method's) or the method's default."""
    method = check_method(method)
    if method in HF_METHODS:
        raise SurefastError(
            f"{method!r} is not a policy of the speculative engine", f"choose from {', '.join(POLICY_CONFIGS)}"
        )
    config = policy if policy is not None else policy_config(method)
    if not isinstance(config, POLICY_CONFIGS[method]):
        raise SurefastError(f"policy {type(config).__name__} does not belong to method {method!r}")
    return config


def load_pair(
    target: str | ModelSpec,
    draft: str | ModelSpec,
    *,
    dtype: Any = None,
    device: str | None = None,
    progress: Any = None,
) -> tuple[Any, Any]:
    """Load a (target, draft) pair of model specs as :class:`~surefast.models.LoadedModel` s.

    Refuses pairs whose tokenizers disagree: the draft must read and write the target's token ids.
    ``progress``: the ``(what, done, total)`` callback :func:`~surefast.models.load_model` takes.
    """
    from surefast.models import load_model

    t = load_model(target, dtype=dtype, device=device, progress=progress)
    d = load_model(draft, dtype=dtype, device=device, progress=progress)
    check_tokenizers(t.tokenizer, d.tokenizer, str(draft))
    return t, d


def speculative_generate(
    target: Any,
    draft: Any,
    input_ids: torch.Tensor | Sequence[int],
    *,
    method: str = "sage",
    policy: PolicyConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
    on_tokens: Callable[[list[int]], None] | None = None,
    ngram: NgramConfig | None = None,
    plan: PlanConfig | None = None,
) -> SpecOutput:
    """Generate up to ``max_new_tokens`` after ``input_ids`` with ``method``; output + statistics.

    ``target`` / ``draft``: Hugging Face causal LMs (or :class:`~surefast.speculate.model.CausalLM`
    adapters for the engine methods). ``policy`` overrides the method's default config
    (e.g. ``SageConfig(budget=32)``). ``eos_token_id="auto"`` stops at the target's EOS tokens.
    ``on_tokens`` sees the new tokens as they come: each accepted chunk for the engine, all of
    them at the end for ``ar`` and ``hf-assisted`` (transformers returns them at once).
    ``draft=None`` with ``ngram``: n-gram proposals only; ``ngram`` with a draft: n-gram branches
    join its trees. ``plan``: the cost-model planner (:mod:`.planner`). Both are engine settings.
    """
    method = check_method(method)
    if method in HF_METHODS:
        if method == "hf-assisted" and draft is None:
            raise SurefastError("hf-assisted needs a draft model", "use hf-lookup for transformers' n-gram lookup")
        out = hf_generate(
            target,
            draft if method == "hf-assisted" else None,
            input_ids,
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            generator=generator,
            lookup=PROMPT_LOOKUP_TOKENS if method == "hf-lookup" else 0,
        )
        if on_tokens is not None:
            on_tokens(out.tokens)
        return out
    decoder = SpeculativeDecoder(
        target, draft, engine_policy(method, policy), sampling, generator, ngram=ngram, plan=plan
    )
    return decoder.generate(input_ids, max_new_tokens, eos_token_id, on_tokens)


class TextStream:
    """Token chunks in, text deltas out: the whole output is decoded each time and the new suffix returned.

    A trailing incomplete UTF-8 character is held back (byte-level tokenizers split them across tokens).
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.shown = ""

    def push(self, chunk: list[int]) -> str:
        """The text that ``chunk`` adds ("" while a character is incomplete)."""
        self.tokens += chunk
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self.shown) :] if text.startswith(self.shown) else ""
        self.shown = text
        return delta


def stream_text(tokenizer: Any, chunks: Iterable[list[int]], skip_special_tokens: bool = True) -> Iterator[str]:
    """Turn token chunks (e.g. :meth:`SpeculativeDecoder.stream`) into text deltas (:class:`TextStream`)."""
    text = TextStream(tokenizer, skip_special_tokens)
    for chunk in chunks:
        delta = text.push(chunk)
        if delta:
            yield delta


class _CountCalls:
    """Forward hook counting calls of a module (target / assistant forwards inside ``generate``)."""

    def __init__(self, module: Any) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook) if module is not None else None

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


class _FirstTokenClock:
    """A ``generate`` streamer recording when the first new tokens arrive, and how many (assisted: a chunk)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first: float | None = None
        self.first_tokens = 1

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2 and self.first is None:  # the first put is the prompt
            self.first = time.perf_counter()
            self.first_tokens = max(1, int(torch.as_tensor(value).numel()))

    def end(self) -> None:
        pass


def hf_model(model: Any) -> Any:
    """The Hugging Face model inside a :class:`~surefast.models.LoadedModel` or an engine adapter (else ``model``)."""
    from surefast.models import LoadedModel

    if isinstance(model, LoadedModel):
        return model.model
    return model.model if isinstance(model, HFCausalLM) else model  # VLM adapters are HFCausalLMs too


def _generate_kwargs(
    model: Any, sampling: SamplingConfig, max_new_tokens: int, eos_token_id: Any, generator: torch.Generator | None
) -> dict[str, Any]:
    """``generate`` settings for ``sampling``, the stop tokens and padding; seeds torch's global RNG when sampling.

    transformers draws from torch's global RNG, so a seed drawn from ``generator`` makes a run reproducible.
    """
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": not sampling.greedy}
    if not sampling.greedy:
        kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    if eos_token_id != "auto":
        kwargs["eos_token_id"] = eos_token_id
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    kwargs["pad_token_id"] = pad[0] if isinstance(pad, list) else pad  # batch size 1 never pads; generate warns without
    return kwargs


@torch.inference_mode()
def hf_generate(
    target: Any,
    assistant: Any | None,
    input_ids: torch.Tensor | Sequence[int],
    *,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
    vision: Mapping[str, Any] | None = None,
    lookup: int = 0,
) -> SpecOutput:
    """The target alone (``assistant=None``) or transformers' assisted generation, measured like our engine.

    ``lookup > 0`` (no assistant): transformers' prompt lookup decoding with
    ``prompt_lookup_num_tokens=lookup``.

    Counts target and assistant forwards with hooks (the acceptance length of assisted
    generation is then new tokens per target forward). Assisted generation has no separate
    prefill: its first round (draft prefill, drafting, verification) ends at ``prefill_s`` with
    ``first_tokens`` tokens, which the decode speed then leaves out; compare methods on
    ``e2e_tokens_per_s`` (everything included) when in doubt. In bf16, assisted generation may
    itself diverge from plain greedy decoding: it verifies several tokens per forward, whose
    rounding differs from one token at a time. ``vision``: a VLM prompt's image / video tensors
    (:attr:`~surefast.speculate.vlm.inputs.VisualInputs.vision`), passed to ``generate`` with the ids.
    """
    target, assistant = hf_model(target), hf_model(assistant)
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1).to(target.device)
    kwargs = _generate_kwargs(target, sampling, max_new_tokens, eos_token_id, generator)
    if assistant is not None:
        kwargs.update(assistant_model=assistant, num_assistant_tokens_schedule="heuristic_transient")
    elif lookup:
        kwargs.update(prompt_lookup_num_tokens=lookup)
    extra = {k: v.to(target.device) if isinstance(v, torch.Tensor) else v for k, v in (vision or {}).items()}
    t_calls, d_calls, clock = _CountCalls(target), _CountCalls(assistant), _FirstTokenClock()
    start = time.perf_counter()
    try:
        out = target.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock, **extra, **kwargs)
    finally:
        t_calls.close()
        d_calls.close()
    total = time.perf_counter() - start
    tokens = out[0, ids.shape[1] :].tolist()
    stats = SpecStats(
        method="hf-assisted" if assistant is not None else ("hf-lookup" if lookup else "ar"),
        prompt_tokens=ids.shape[1],
        new_tokens=len(tokens),
        target_forwards=t_calls.calls,
        draft_forwards=d_calls.calls,
        prefill_s=(clock.first - start) if clock.first is not None else total,
        total_s=total,
        first_tokens=min(clock.first_tokens, len(tokens)) if tokens else 1,
    )
    return SpecOutput(tokens, stats)
