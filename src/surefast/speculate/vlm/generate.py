"""One call for a VLM prompt: text + images / video in, speculative (or target-only) output out.

``vlm_speculative_generate`` prepares the inputs once (:func:`~.inputs.prepare_inputs`), binds
them to a target and a draft adapter (:func:`~.adapter.vision_lm`; the draft prunes visual
tokens if asked) and runs the unchanged LLM engine (:class:`~surefast.speculate.SpeculativeDecoder`)
with any policy of :data:`~surefast.speculate.POLICY_CONFIGS`. ``method="ar"`` (alias ``"target"``,
as in :mod:`surefast.speculate.api`) runs the target's own ``generate`` on the same inputs: the
reference output and the speed baseline.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.speculate.engine import SpecOutput, SpeculativeDecoder
from surefast.speculate.policies import POLICY_CONFIGS, PolicyConfig, policy_config
from surefast.speculate.stats import SpecStats
from surefast.speculate.verify import GREEDY, SamplingConfig
from surefast.speculate.vlm.adapter import VisionLM, vision_lm
from surefast.speculate.vlm.inputs import VisualInputs, prepare_inputs
from surefast.speculate.vlm.prune import PruneConfig, PruneReport


@dataclass
class VLMSpecOutput(SpecOutput):
    """:class:`SpecOutput` plus the prompt's visual facts."""

    n_visual: int = 0
    prune: PruneReport | None = None  # what the draft's pruning did (None: no pruning / target only)


AR_METHODS = ("ar", "target")  # the target alone; "target" is the older name


def vlm_methods() -> tuple[str, ...]:
    """``"ar"`` (the target alone) and every engine policy (read when called: the policy table may grow)."""
    return ("ar", *POLICY_CONFIGS)


def _hf_model(model: Any) -> Any:
    from surefast.models.load import LoadedModel

    if isinstance(model, LoadedModel):
        return model.model
    return model.model if isinstance(model, VisionLM) else model


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
        raise SurefastError(f"cannot load the processor of {model.spec.raw}: {type(exc).__name__}: {exc}",
                            "VLMs need their processor files (preprocessor_config.json) next to the weights") from exc  # fmt: skip


def _policy(method: str, policy: PolicyConfig | None) -> PolicyConfig:
    if method not in POLICY_CONFIGS:
        methods = vlm_methods()
        close = difflib.get_close_matches(method, methods, n=1)
        raise SurefastError(f"unknown decoding method {method!r} for a VLM",
                            f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(methods)}")  # fmt: skip
    config = policy if policy is not None else policy_config(method)
    if not isinstance(config, POLICY_CONFIGS[method]):
        raise SurefastError(f"policy {type(config).__name__} does not belong to method {method!r}")
    return config


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
    t = vision_lm(_hf_model(target), inputs)
    d = vision_lm(_hf_model(draft), inputs, prune or PruneConfig())
    return SpeculativeDecoder(t, d, _policy(method, policy), sampling, generator)


class _FirstToken:
    """A ``generate`` streamer noting when the first new token arrives (its first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


@torch.inference_mode()
def vlm_target_generate(
    target: Any,
    inputs: VisualInputs,
    *,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_token_id: Any = "auto",
    generator: torch.Generator | None = None,
) -> VLMSpecOutput:
    """The target alone (its own ``generate``), timed like the engine: one forward per token, prefill = first token."""
    model = _hf_model(target)
    inputs = inputs.to(model.device)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": not sampling.greedy}
    if not sampling.greedy:
        kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    if eos_token_id != "auto":
        kwargs["eos_token_id"] = eos_token_id
    gen = model.generation_config
    pad = gen.pad_token_id if gen.pad_token_id is not None else gen.eos_token_id
    kwargs["pad_token_id"] = pad[0] if isinstance(pad, list) else pad
    clock = _FirstToken()
    start = time.perf_counter()
    out = model.generate(**inputs.generate_kwargs(), streamer=clock, **kwargs)
    total = time.perf_counter() - start
    tokens = out[0, inputs.input_ids.shape[1] :].tolist()
    prefill = (clock.at - start) if clock.at is not None else total
    stats = SpecStats(method="ar", prompt_tokens=inputs.input_ids.shape[1], new_tokens=len(tokens),
                      target_forwards=len(tokens), total_s=total, prefill_s=prefill)  # fmt: skip
    return VLMSpecOutput(tokens, stats, n_visual=inputs.n_visual)


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
    model = _hf_model(target)
    if processor_or_tokenizer is None:
        processor_or_tokenizer = load_processor(target)
    inputs = prepare_inputs(processor_or_tokenizer, model, text, images, video, chat=chat, num_frames=num_frames)
    if method in AR_METHODS:
        return vlm_target_generate(model, inputs, sampling=sampling, max_new_tokens=max_new_tokens,
                                   eos_token_id=eos_token_id, generator=generator)  # fmt: skip
    decoder = vlm_decoder(model, draft, inputs, method=method, policy=policy, prune=prune, sampling=sampling,
                          generator=generator)  # fmt: skip
    out = decoder.generate(inputs.input_ids, max_new_tokens, eos_token_id)
    return VLMSpecOutput(
        out.tokens, out.stats, n_visual=inputs.n_visual, prune=getattr(decoder.draft, "last_prune", None)
    )
