"""Draft kinds: any model spec (compressed on the fly if asked), the target's own cheap copies, or none.

=============================  ====================================================================
``MODEL`` (any model spec)     a separate draft of the same tokenizer; a packed folder (``surefast
                               compress --pack``) runs packed
``MODEL`` + ``compress=int4``  that model quantized on load (RTN, groups of 128) and packed
``self:int4`` / ``self:int8``  the target's own packed low-bit copy (RTN), so every target has a draft
``self:layers=K``              the target's first K decoder layers, its final norm and head, sharing
                               the target's weights in memory (no training; an early-exit draft)
``ngram``                      no draft model: continuations looked up in the text so far
=============================  ====================================================================

Every kind is verified by the same lossless engine, so the output is the target's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surefast.errors import SurefastError
from surefast.models.arch import decoder_body, decoder_layers, text_config

COMPRESSIONS = {"int4": {"bits": 4, "group_size": 128}, "int8": {"bits": 8, "group_size": -1}}
DRAFT_FORMS = "a model spec, self:int4, self:int8, self:layers=K or ngram"


@dataclass(frozen=True)
class DraftSpec:
    """A parsed ``--draft``: ``kind`` is ``model``, ``self-packed``, ``self-layers`` or ``ngram``."""

    kind: str
    model: str = ""  # the model spec (kind "model")
    compress: str | None = None  # int4 / int8: the model (or the target's copy) packed at that width
    layers: int = 0  # kind "self-layers"

    @property
    def label(self) -> str:
        if self.kind == "ngram":
            return "ngram"
        if self.kind == "self-layers":
            return f"self:layers={self.layers}"
        if self.kind == "self-packed":
            return f"self:{self.compress}"
        return self.model + (f" ({self.compress})" if self.compress else "")


def parse_draft(text: str, compress: str | None = None) -> DraftSpec:
    """``--draft`` (and ``--draft-compress``) as a :class:`DraftSpec`; one-line errors for bad forms."""
    raw = text.strip()
    if compress is not None and compress not in COMPRESSIONS:
        raise SurefastError(f"--draft-compress {compress!r}: unknown", f"choose from {', '.join(COMPRESSIONS)}")
    if raw in ("ngram", "none"):
        if compress:
            raise SurefastError("--draft-compress applies to a draft model, not to n-gram lookups")
        return DraftSpec("ngram")
    if raw.startswith("self:"):
        what = raw[5:]
        if compress:
            raise SurefastError(f"--draft-compress does not apply to {raw}", "self:int4 already is a packed copy")
        if what in COMPRESSIONS:
            return DraftSpec("self-packed", compress=what)
        key, _, value = what.partition("=")
        if key == "layers":
            if not value.isdigit() or int(value) < 1:
                raise SurefastError(f"--draft {raw}: K must be a whole number >= 1", "e.g. --draft self:layers=8")
            return DraftSpec("self-layers", layers=int(value))
        raise SurefastError(f"unknown self-draft {raw!r}", f"--draft takes {DRAFT_FORMS}")
    if not raw:
        raise SurefastError("empty --draft", f"--draft takes {DRAFT_FORMS}")
    return DraftSpec("model", model=raw, compress=compress)


def first_layers(model: nn.Module, k: int) -> nn.Module:
    """A causal LM running ``model``'s embedding, first ``k`` decoder layers, final norm and head.

    Every module is the target's own object (no weight is copied); only the config differs
    (``num_hidden_layers = k``, ``layer_types`` cut). Built on the meta device, then the target's
    modules are put in place, so the result has its own hooks and no weight of its own.
    """
    layers = decoder_layers(model)
    if not 1 <= k < len(layers):
        raise SurefastError(
            f"self:layers={k}: the target has {len(layers)} decoder layers",
            f"choose 1 <= K < {len(layers)} (about a quarter is a common start)",
        )
    body = decoder_body(model)
    if body not in model.children():
        raise SurefastError(f"self:layers is not supported for {type(model).__name__} (its decoder is nested)")
    config = copy.deepcopy(text_config(model))
    config.num_hidden_layers = k
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types[:k])
    cls: Any = type(model)
    with torch.device("meta"):
        draft = cls._from_config(config, dtype=next(model.parameters()).dtype)
    new_body = decoder_body(draft)
    for name, child in body.named_children():
        setattr(new_body, name, nn.ModuleList(list(layers)[:k]) if child is layers else child)
    for name, child in model.named_children():
        if child is not body:
            setattr(draft, name, child)
    left = [n for n, t in [*draft.named_parameters(), *draft.named_buffers()] if t.is_meta]
    if left:
        raise SurefastError(f"self:layers: {left[0]} of {type(model).__name__} has no counterpart in the target")
    draft.generation_config = model.generation_config
    return draft.eval()


def packed_copy(model: nn.Module, compress: str, *, in_place: bool = False) -> nn.Module:
    """``model`` (a copy unless ``in_place``) quantized with RTN at ``compress`` (int4 / int8) and packed."""
    from surefast.compress.api import compress_, make_config
    from surefast.compress.lowbit.pack import pack_

    out = model if in_place else copy.deepcopy(model)
    compress_(out, make_config("rtn", **COMPRESSIONS[compress]))
    pack_(out)
    return out.eval()


def check_tokenizers(target: Any, draft: Any, name: str) -> None:
    """The draft must read and write the target's token ids: the same vocabulary, or one line saying not."""
    if target.get_vocab() != draft.get_vocab():
        raise SurefastError(
            f"{name} does not share the target's tokenizer",
            "speculative decoding needs a draft with the same vocabulary (e.g. a smaller model of the same family,"
            " or --draft self:int4)",
        )


def load_draft(
    spec: DraftSpec, target: Any, *, dtype: Any = None, device: str | None = None, progress: Any = None
) -> Any:
    """The draft model for ``spec`` (None for ``ngram``). ``target``: the loaded target (a LoadedModel)."""
    from surefast.models import load_model

    if spec.kind == "ngram":
        return None
    if spec.kind == "self-layers":
        return first_layers(target.model, spec.layers)
    if spec.kind == "self-packed":
        return packed_copy(target.model, spec.compress or "int4")
    loaded = load_model(spec.model, dtype=dtype, device=device, progress=progress)
    check_tokenizers(target.tokenizer, loaded.tokenizer, spec.model)
    return packed_copy(loaded.model, spec.compress, in_place=True) if spec.compress else loaded.model
