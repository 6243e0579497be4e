"""A decoding method next to the target alone: the harness of ``surefast speculate`` and the benchmarks.

:func:`compare` warms both models up, runs the method, runs the target alone (``ar``) on the
same prompt and checks the two outputs: greedy decoding must give the target's own tokens, and
where it does not, :mod:`.divergence` says where the outputs part and whether the target's two
best logits are tied there (a rounding tie of the dtype) or not (a bug). The prompt is token ids
(a text model) or :class:`~.vlm.inputs.VisualInputs` (a VLM with images / video); every method
of :data:`~.api.METHODS` runs through :func:`decode`. A benchmark that interleaves many methods
on one prompt uses the pieces: :func:`warm`, :func:`decode` for each timed run, :func:`judge`
for each output against the target's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from surefast.errors import SurefastError
from surefast.speculate.api import check_method, hf_model, speculative_generate
from surefast.speculate.divergence import Divergence, divergence
from surefast.speculate.engine import SpecOutput
from surefast.speculate.ngram import NgramConfig
from surefast.speculate.planner import PlanConfig
from surefast.speculate.policies import PolicyConfig
from surefast.speculate.verify import GREEDY, SamplingConfig
from surefast.speculate.vlm.generate import vlm_generate
from surefast.speculate.vlm.inputs import VisualInputs
from surefast.speculate.vlm.prune import PruneConfig

Prompt = torch.Tensor | Sequence[int] | VisualInputs
Phase = Literal["warm-up", "run", "baseline"]


@dataclass(frozen=True)
class Comparison:
    """A method's output next to the target alone's on the same prompt."""

    output: SpecOutput  # the method's tokens and statistics (a VLMSpecOutput for a visual prompt)
    baseline: SpecOutput | None = None  # the target alone; None: not run (asked not to, or the method is ar)
    identical: bool | None = None  # greedy: output == baseline token for token; None: sampling or no baseline
    divergence: Divergence | None = None  # greedy text prompts whose outputs differ: where, and is it a tie


def decode(
    target: Any,
    draft: Any,
    prompt: Prompt,
    method: str = "sage",
    *,
    policy: PolicyConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
    prune: PruneConfig | None = None,
    on_tokens: Callable[[list[int]], None] | None = None,
    ngram: NgramConfig | None = None,
    plan: PlanConfig | None = None,
) -> SpecOutput:
    """One run of ``method`` on a text or a visual ``prompt``; output + statistics.

    Text: :func:`~.api.speculative_generate` (every method); visual:
    :func:`~.vlm.generate.vlm_generate` (``ar`` and the engine's policies), where ``prune`` is the
    draft's visual-token pruning. ``on_tokens`` sees the new tokens as they come (each accepted
    chunk; ``ar`` / ``hf-assisted``: all at the end). ``ngram`` / ``plan``: engine settings for
    text prompts (:func:`~.api.speculative_generate`).
    """
    kwargs: dict[str, Any] = {
        "method": method,
        "policy": policy,
        "sampling": sampling,
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos_token_id,
        "generator": generator,
        "on_tokens": on_tokens,
    }
    if isinstance(prompt, VisualInputs):
        if ngram is not None or plan is not None:
            raise SurefastError("n-gram drafts and the planner are for text prompts", "drop --draft ngram / --plan")
        return vlm_generate(target, draft, prompt, prune=prune, **kwargs)
    return speculative_generate(target, draft, prompt, ngram=ngram, plan=plan, **kwargs)


def warm(
    target: Any,
    draft: Any,
    prompt: Prompt,
    method: str,
    *,
    policy: PolicyConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    prune: PruneConfig | None = None,
    ngram: NgramConfig | None = None,
    plan: PlanConfig | None = None,
) -> None:
    """A few untimed tokens of ``method`` and of the target alone.

    The first forward of a model in a process pays for allocations and kernel selection (seconds
    for the default pair on a CPU), which would otherwise fall on whichever of two timed runs goes
    first. It has its own generator: the timed runs draw exactly what they would without it.
    """
    gen = torch.Generator().manual_seed(0)
    decode(
        target,
        draft,
        prompt,
        method,
        policy=policy,
        sampling=sampling,
        max_new_tokens=4,
        generator=gen,
        prune=prune,
        ngram=ngram,
        plan=plan,
    )
    if check_method(method) != "ar":
        decode(target, None, prompt, "ar", sampling=sampling, max_new_tokens=2, generator=gen)


def judge(
    target: Any, prompt: Prompt, output: SpecOutput, baseline: SpecOutput | None, sampling: SamplingConfig = GREEDY
) -> Comparison:
    """``output`` checked against the target alone's ``baseline`` on ``prompt``.

    Only greedy outputs must be identical (sampled ones are equal in distribution, not token for
    token). A divergence is explained for text prompts, from one plain forward of the target over
    the shared prefix; a visual prompt would need its images in that forward, so it is not.
    """
    if baseline is None or not sampling.greedy:
        return Comparison(output, baseline)
    if output.tokens == baseline.tokens:
        return Comparison(output, baseline, identical=True)
    if isinstance(prompt, VisualInputs):
        return Comparison(output, baseline, identical=False)
    model = hf_model(target)
    ids = torch.as_tensor(prompt, dtype=torch.long).reshape(1, -1).to(model.device)
    return Comparison(output, baseline, False, divergence(model, ids, output.tokens, baseline.tokens))


def compare(
    target: Any,
    draft: Any,
    prompt: Prompt,
    method: str = "sage",
    *,
    policy: PolicyConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    seed: int = 0,
    prune: PruneConfig | None = None,
    warm_up: bool = True,
    baseline: bool = True,
    on_tokens: Callable[[list[int]], None] | None = None,
    phase: Callable[[Phase], AbstractContextManager[Any]] | None = None,
    ngram: NgramConfig | None = None,
    plan: PlanConfig | None = None,
) -> Comparison:
    """Run ``method`` on ``prompt``, then the target alone, and check the outputs (:func:`judge`).

    ``target`` / ``draft``: Hugging Face models (text or VLM; :func:`decode` says what each method
    takes). ``seed``: both timed runs draw from a fresh generator with this seed, so under
    sampling the target alone draws what a run of ``ar`` with this seed would. ``warm_up``: first
    a few untimed tokens of both (:func:`warm`). ``baseline``: run the target alone (never a second
    time for ``ar``). ``on_tokens``: the method's new tokens as they come (for streaming).
    ``phase``: wraps each stage (``"warm-up"``, ``"run"``, ``"baseline"``), e.g. to show a status.
    """
    method = check_method(method)
    stage = phase or (lambda _: nullcontext())
    if warm_up:
        with stage("warm-up"):
            warm(target, draft, prompt, method, policy=policy, sampling=sampling, prune=prune, ngram=ngram, plan=plan)
    with stage("run"):
        output = decode(
            target,
            draft,
            prompt,
            method,
            policy=policy,
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            generator=torch.Generator().manual_seed(seed),
            prune=prune,
            on_tokens=on_tokens,
            ngram=ngram,
            plan=plan,
        )
    reference = None
    if baseline and method != "ar":
        with stage("baseline"):
            reference = decode(
                target,
                None,
                prompt,
                "ar",
                sampling=sampling,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_token_id,
                generator=torch.Generator().manual_seed(seed),
            )
    return judge(target, prompt, output, reference, sampling)
