"""One call for a VLM prompt: text + images / video in, speculative (or target-only) output out.

``vlm_speculative_generate`` prepares the inputs once (:func:`~.inputs.prepare_inputs`) and
:func:`vlm_generate` runs one method on them: an engine policy (any of
:data:`~surefast.speculate.POLICY_CONFIGS`) binds them to a target and a draft adapter
(:func:`~.adapter.vision_lm`; the draft prunes visual tokens if asked) and runs the unchanged
LLM engine (:class:`~surefast.speculate.SpeculativeDecoder`); ``method="ar"`` (alias
``"target"``; method names are read by :func:`~surefast.speculate.api.check_method`) runs the
target's own ``generate`` on the same inputs through the text baselines' harness
(:func:`~surefast.speculate.api.hf_generate`): the reference output and the speed baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.speculate.api import check_method, engine_policy, hf_generate, hf_model
from surefast.speculate.engine import SpecOutput, SpeculativeDecoder
from surefast.speculate.policies import POLICY_CONFIGS, PolicyConfig
from surefast.speculate.verify import GREEDY, SamplingConfig
from surefast.speculate.vlm.adapter import vision_lm
from surefast.speculate.vlm.inputs import VisualInputs, prepare_inputs
from surefast.speculate.vlm.prune import PruneConfig, PruneReport


@dataclass
class VLMSpecOutput(SpecOutput):
    """:class:`SpecOutput` plus the prompt's visual facts."""

    n_visual: int = 0
    prune: PruneReport | None = None  # what the draft's pruning did (None: no pruning / target only)


def vlm_methods() -> tuple[str, ...]:
    """``"ar"`` (the target alone) and every engine policy (read when called: the policy table may grow)."""
    return ("ar", *POLICY_CONFIGS)


def load_processor(model: Any) -> Any:
    """The processor of a :class:`~surefast.models.LoadedModel` VLM (its tokenizer for ``tiny:`` models).

    Hub specs load ``AutoProcessor`` from the same repo and revision, local folders from the folder.
    """
    from surefast.models.load import LoadedModel

    if not isinstance(model, LoadedModel):
        raise SurefastError("pass the model's processor (AutoProcessor.from_pretrained) for a plain model object")
    if model.spec.kind == "tiny":
        return model.tokenizer
    from transformers import AutoProcessor

    source = model.path if model.path is not None else model.spec.target
    kwargs = {"revision": model.spec.revision} if model.spec.kind == "hub" and model.spec.revision else {}
    try:
        return AutoProcessor.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise SurefastError(
            f"cannot load the processor of {model.spec.raw}: {type(exc).__name__}: {exc}",
            "VLMs need their processor files (preprocessor_config.json) next to the weights",
        ) from exc


def vlm_decoder(
    target: Any,
    draft: Any,
    inputs: VisualInputs,
    *,
    method: str = "sage",
    policy: PolicyConfig | None = None,
    prune: PruneConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    generator: torch.Generator | None = None,
) -> SpeculativeDecoder:
    """A :class:`SpeculativeDecoder` over VLM adapters bound to ``inputs``; stream it with ``inputs.input_ids``.

    ``decoder.stream(inputs.input_ids, max_new_tokens)`` yields token chunks (for a CLI);
    ``decoder.draft.last_prune`` then reports the pruning.
    """
    config = engine_policy(method, policy)  # before binding: a wrong method fails without touching the models
    t = vision_lm(hf_model(target), inputs)
    d = vision_lm(hf_model(draft), inputs, prune or PruneConfig())
    return SpeculativeDecoder(t, d, config, sampling, generator)


def vlm_target_generate(
    target: Any,
    inputs: VisualInputs,
    *,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
) -> VLMSpecOutput:
    """The target alone (its own ``generate`` on the ids and the vision tensors), measured like every method.

    :func:`~surefast.speculate.api.hf_generate` runs it: the same sampling, seeding, padding,
    forward counting and first-token clock as the text baselines.
    """
    out = hf_generate(
        target,
        None,
        inputs.input_ids,
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        generator=generator,
        vision=inputs.vision,
    )
    return VLMSpecOutput(out.tokens, out.stats, n_visual=inputs.n_visual)


def vlm_generate(
    target: Any,
    draft: Any,
    inputs: VisualInputs,
    *,
    method: str = "sage",
    policy: PolicyConfig | None = None,
    prune: PruneConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
    on_tokens: Callable[[list[int]], None] | None = None,
) -> VLMSpecOutput:
    """One run of ``method`` on prepared ``inputs`` (:func:`~.inputs.prepare_inputs`): ``ar`` or an engine policy.

    ``on_tokens`` sees the new tokens as they come (each accepted chunk; ``ar``: all at the end).
    """
    method = check_method(method)
    if method in ("hf-assisted", "hf-lookup"):
        raise SurefastError(
            f"{method} does not take images here", "use sage, conformal, dynamic, static-tree, chain or ar"
        )
    if method == "ar":
        out = vlm_target_generate(
            target,
            inputs,
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            generator=generator,
        )
        if on_tokens is not None:
            on_tokens(out.tokens)
        return out
    decoder = vlm_decoder(
        target, draft, inputs, method=method, policy=policy, prune=prune, sampling=sampling, generator=generator
    )
    run = decoder.generate(inputs.input_ids, max_new_tokens, eos_token_id, on_tokens)
    return VLMSpecOutput(
        run.tokens, run.stats, n_visual=inputs.n_visual, prune=getattr(decoder.draft, "last_prune", None)
    )


def vlm_speculative_generate(
    target: Any,
    draft: Any,
    processor_or_tokenizer: Any | None,
    text: str,
    images: Sequence[Any] | None = None,
    video: Any = None,
    *,
    method: str = "sage",
    policy: PolicyConfig | None = None,
    prune_ratio: float = 0.0,
    prune: PruneConfig | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
    chat: bool = True,
    num_frames: int = 8,
) -> VLMSpecOutput:
    """Answer ``text`` about ``images`` / ``video`` with speculative decoding of a VLM pair.

    ``target`` / ``draft``: Hugging Face ``LlavaOnevisionForConditionalGeneration`` or
    ``Qwen2_5_VLForConditionalGeneration`` of one family (shared tokenizer and processor), or
    :class:`~surefast.models.LoadedModel` s of them. ``processor_or_tokenizer``: the model's
    processor (``AutoProcessor.from_pretrained``); a plain tokenizer builds the inputs by hand
    in the same layout (tiny models); None: :func:`load_processor` of a ``LoadedModel`` target.
    ``images``: PIL images, arrays or file paths. ``video``: frames, an ``[F, 3, H, W]`` tensor or a path
    (``num_frames`` sampled). ``method``: ``"ar"`` (or ``"target"``) or a key of :data:`POLICY_CONFIGS`;
    ``policy`` overrides its default config. ``prune_ratio`` (or a full ``prune`` config): share
    of visual tokens dropped from the draft's context (:mod:`.prune`); the target keeps all, so
    greedy output equals the target's own ``generate`` token for token.
    """
    prune = prune if prune is not None else PruneConfig(ratio=prune_ratio)
    model = hf_model(target)
    if processor_or_tokenizer is None:
        processor_or_tokenizer = load_processor(target)
    inputs = prepare_inputs(processor_or_tokenizer, model, text, images, video, chat=chat, num_frames=num_frames)
    return vlm_generate(
        model,
        draft,
        inputs,
        method=method,
        policy=policy,
        prune=prune,
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        generator=generator,
    )
