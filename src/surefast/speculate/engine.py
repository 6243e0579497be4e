"""The speculative decoding loop: draft a tree, verify it in one target forward, keep the accepted path.

State between steps (batch size 1):

- the target cache holds the committed sequence except its last token, the *root*: the token
  the target chose last, which is fed (as node 0 of the tree) with the next verification;
- the draft cache holds the committed sequence except ``pending`` and the root (``pending`` are
  accepted tokens the draft never saw: an accepted leaf or n-gram node of the last tree, or all
  tokens of steps the draft did not run in).

One step:

1. the policy picks a tree shape (depth, width per level, node budget); a planner, when asked
   for, caps it from the measured costs or makes it the target alone (:mod:`.planner`);
2. the draft grows the tree under the root, one forward per level (:mod:`.draft`), and n-gram
   lookups from the text so far join it as extra branches under the same budget (:mod:`.ngram`);
3. the target runs the whole tree in one forward (prefix + ancestors-or-self mask);
4. greedy or lossless-sampling verification walks down the tree (:mod:`.verify`): accepted
   nodes plus one token the target chose after the last of them (the *bonus*, next root);
5. both caches keep only the accepted path (:meth:`KVCache.keep`); the policy observes.

Every step emits at least one token, so a step costs at most one target forward per token,
whatever the draft does. Output equals the target's own greedy (or sampled) decoding.

``draft=None`` runs with no draft model: the tree holds only n-gram proposals (``ngram`` is
then required). Each step records the time spent inside the models' forwards apart from the
rest (:attr:`StepRecord.bookkeeping_s`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from surefast.errors import SurefastError
from surefast.speculate.draft import Draft, check_draft_vocab, grow_tree
from surefast.speculate.model import CausalLM, as_causal_lm
from surefast.speculate.ngram import NgramConfig, NgramIndex, common_prefix
from surefast.speculate.planner import PlanConfig, Planner
from surefast.speculate.policies import POLICY_CONFIGS, Policy, PolicyConfig, make_policy, policy_config
from surefast.speculate.stats import SpecStats, StepRecord, TreeShape
from surefast.speculate.tree import TokenTree, tree_attention_mask
from surefast.speculate.verify import GREEDY, SamplingConfig, probs, verify_greedy, verify_sample


@dataclass
class SpecOutput:
    tokens: list[int]  # new tokens only (the prompt excluded)
    stats: SpecStats = field(default_factory=SpecStats)


def _eos_ids(eos: int | Iterable[int] | None) -> frozenset[int]:
    if eos is None:
        return frozenset()
    return frozenset([eos]) if isinstance(eos, int) else frozenset(int(e) for e in eos)


def _cut(tokens: list[int], eos: frozenset[int], room: int) -> tuple[list[int], bool]:
    """``tokens`` up to the first EOS (kept) and at most ``room``; and whether generation ends."""
    for i, t in enumerate(tokens[:room]):
        if t in eos:
            return tokens[: i + 1], True
    return tokens[:room], len(tokens) >= room


def _covered(tree: TokenTree, accepted: list[int], bonus: int, d: Draft | None) -> tuple[bool, ...]:
    """Per level along the path: was the target's token in the draft's set at that node (conformal trees)?"""
    if d is None or not d.sets:
        return ()
    path = [0, *accepted]
    out = []
    for i, node in enumerate(path):
        if node not in d.sets:
            break
        out.append((tree.tokens[path[i + 1]] if i + 1 < len(path) else bonus) in d.sets[node])
    return tuple(out)


class TimedLM:
    """A :class:`CausalLM` that adds the seconds spent in its ``forward`` / ``prefill`` to ``seconds``."""

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm
        self.vocab_size = lm.vocab_size
        self.seconds = 0.0

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def __getattr__(self, name: str) -> Any:  # eos_token_ids, dtype, ...
        return getattr(self.lm, name)

    def new_cache(self) -> Any:
        return self.lm.new_cache()

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: Any, mask: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.lm.forward(ids, positions, cache, mask)
        self.seconds += time.perf_counter() - t0
        return out

    def prefill(self, ids: torch.Tensor, cache: Any) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.lm.prefill(ids, cache)
        self.seconds += time.perf_counter() - t0
        return out


class SpeculativeDecoder:
    """Speculative decoding of ``target`` with ``draft`` (HF causal LMs or :class:`CausalLM`).

    ``policy``: a name ("chain", "static-tree", "dynamic", "sage", "conformal") or a config; ``sampling``: greedy
    by default; ``generator``: the only source of randomness under sampling (fixed seed, fixed output).
    ``draft=None``: no draft model, n-gram proposals only. ``ngram``: add n-gram branches to every
    tree. ``plan``: let a :class:`~surefast.speculate.planner.Planner` cap the policy's trees from
    measured costs and fall back to the target alone when speculation does not pay.
    After a generation, ``target_cache`` / ``draft_cache`` hold the final caches and ``stats`` the numbers.
    """

    def __init__(
        self,
        target: Any,
        draft: Any | None,
        policy: PolicyConfig | str = "sage",
        sampling: SamplingConfig = GREEDY,
        generator: torch.Generator | None = None,
        *,
        ngram: NgramConfig | None = None,
        plan: PlanConfig | None = None,
    ) -> None:
        self.target = TimedLM(as_causal_lm(target))
        self.draft = TimedLM(as_causal_lm(draft)) if draft is not None else None
        if self.draft is None and ngram is None:
            raise SurefastError("speculative decoding without a draft model needs n-gram proposals (ngram=...)")
        self.ngram = ngram
        self.plan = plan
        self.policy_config = policy_config(policy) if isinstance(policy, str) else policy
        self.sampling = sampling
        self.generator = generator
        self.stats = SpecStats()
        self.target_cache = self.target.new_cache()
        self.draft_cache = self.draft.new_cache() if self.draft is not None else None

    @property
    def method(self) -> str:
        names = {cls: name for name, cls in POLICY_CONFIGS.items()}
        return names.get(type(self.policy_config), type(self.policy_config).__name__)

    def _choose(self, logits: torch.Tensor) -> int:
        if self.sampling.greedy:
            return int(logits.argmax())
        return int(torch.multinomial(probs(logits, self.sampling).cpu(), 1, generator=self.generator))

    @torch.inference_mode()
    def stream(
        self, input_ids: torch.Tensor | Sequence[int], max_new_tokens: int = 128, eos_token_id: Any = "auto"
    ) -> Iterator[list[int]]:
        """Yield the new tokens of each step as soon as they are accepted (the first chunk: the prefill's token).

        After the prefill, each step: the policy picks a shape (:meth:`_shape`), the draft grows a
        tree under the root (:meth:`_draft`), the target runs the tree in one forward
        (:meth:`_verify`), verification walks down it (:meth:`_accept`), both caches keep the
        accepted path (:meth:`_commit`) and the step is recorded for the statistics and the
        policy (:meth:`_record`).
        """
        start = time.perf_counter()
        ids, eos = self._begin(input_ids, eos_token_id)
        policy: Policy = make_policy(self.policy_config)
        if self.plan is not None:
            policy = Planner(policy, self.plan, self.target, self.draft)
        stats = self.stats = SpecStats(method=self.method, prompt_tokens=ids.shape[1])
        self.target_cache = self.target.new_cache()
        self.draft_cache = self.draft.new_cache() if self.draft is not None else None
        if max_new_tokens <= 0:
            return
        root = self._prefill(ids)  # the target's first token: the first root
        stats.prefill_s = time.perf_counter() - start
        out, done = _cut([root], eos, max_new_tokens)
        stats.new_tokens = len(out)
        yield out
        index = NgramIndex(self.ngram, [*ids[0].tolist(), root]) if self.ngram is not None else None
        pending: list[int] = []
        while not done:
            t0 = time.perf_counter()
            seen = (self.target.seconds, self.draft.seconds if self.draft is not None else 0.0)
            room = max_new_tokens - stats.new_tokens
            shape = self._shape(policy, room)
            root_pos = len(self.target_cache)  # slot i holds position i, so the root sits right after the cache
            lookups, trusted = self._lookups(index, shape, room, policy)
            longest = max(map(len, lookups), default=0)
            d = None
            if not trusted:  # a trusted lookup makes the step free of draft forwards
                d = self._draft(root, root_pos, pending, shape, policy.entropy_topk, reserved=longest)
            tree = d.tree if d is not None else TokenTree(root, capacity=shape.budget + 1)
            fixed = self._graft(tree, lookups, shape.budget, max(shape.depth, longest))
            t1 = time.perf_counter()
            logits = self._verify(tree, root_pos)
            t2 = time.perf_counter()
            accepted, bonus = self._accept(tree, logits, d, fixed)
            pending = self._commit(root, root_pos, tree, accepted, d, pending)
            new, done = _cut([*(tree.tokens[n] for n in accepted), bonus], eos, room)
            stats.new_tokens += len(new)
            first = lookups[0] if lookups else []
            if index is not None:
                index.observe(first, [tree.tokens[n] for n in accepted])
                index.extend(new)
            record = self._record(shape, tree, accepted, len(new), d, (t0, t1, t2), seen, fixed, bonus, first)
            policy.observe(record)
            root = bonus
            stats.total_s = time.perf_counter() - start
            yield new
        if isinstance(policy, Planner):
            stats.plan = policy.summary()
        stats.total_s = time.perf_counter() - start

    def _begin(self, input_ids: torch.Tensor | Sequence[int], eos_token_id: Any) -> tuple[torch.Tensor, frozenset[int]]:
        """The prompt as ``[1, P]`` ids and the stop tokens; seeds a missing generator under sampling."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
        if ids.numel() == 0:
            raise SurefastError("speculative decoding needs a non-empty prompt")
        eos = _eos_ids(getattr(self.target, "eos_token_ids", None) if eos_token_id == "auto" else eos_token_id)
        if self.generator is None and not self.sampling.greedy:  # seeded from torch's global RNG
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        return ids, eos

    def _prefill(self, ids: torch.Tensor) -> int:
        """Run the prompt through both models into their empty caches; the target's first token."""
        root = self._choose(self.target.prefill(ids, self.target_cache).float())
        self.stats.target_forwards, self.stats.draft_forwards = 1, 0
        if self.draft is not None:
            check_draft_vocab(ids, self.draft.vocab_size)
            self.draft.prefill(ids, self.draft_cache)
            self.stats.draft_forwards = 1
        return root

    @staticmethod
    def _shape(policy: Policy, room: int) -> TreeShape:
        """1. The policy's shape, no deeper than the ``room - 1`` tokens left after the step's bonus token."""
        asked = policy.shape()
        return replace(asked, depth=min(asked.depth, room - 1))

    def _draft(
        self, root: int, root_pos: int, pending: list[int], shape: TreeShape, topk: int, reserved: int = 0
    ) -> Draft | None:
        """2. The draft's tree under ``root`` (one draft forward per level), leaving ``reserved`` nodes of the
        budget to n-gram branches; None when there is no draft model or nothing is left to draft."""
        budget = shape.budget - reserved
        if self.draft is None or shape.depth <= 0 or budget <= 0:
            return None
        vocab = self.target.vocab_size  # the draft proposes only tokens the target can score
        shape = replace(shape, budget=budget)
        assert self.draft_cache is not None  # made with the draft
        d = grow_tree(
            self.draft, self.draft_cache, pending, root, root_pos, shape, self.sampling, vocab, self.generator, topk
        )
        self.stats.draft_forwards += d.forwards
        return d

    def _lookups(
        self, index: NgramIndex | None, shape: TreeShape, room: int, policy: Policy
    ) -> tuple[list[list[int]], bool]:
        """2a. The n-gram continuations of the text so far, and whether they replace the draft this step.

        A lookup is *free* (verified without a draft forward, up to ``ngram.length`` tokens,
        beyond the policy's depth) without a draft model; with one, when a planner expects it to
        beat drafting (:meth:`Planner.free_depth`, also on a step it gave to the target alone),
        or without a planner when recent lookups were accurate (:attr:`NgramIndex.trusted`).
        Otherwise lookups join the draft's tree, no deeper than the policy's.
        """
        if index is None:
            return [], False
        longest = min(index.config.length, room - 1)
        if isinstance(policy, Planner):
            free = policy.free_depth(index.accuracy, longest, shape if self.draft is not None else None)
        else:
            free = longest if self.draft is None or index.trusted else 0
        if free > 0:  # one lookup: if it finds nothing, a shorter one finds nothing either
            lookups = index.propose(free)
            return lookups, self.draft is not None and bool(lookups)
        if self.draft is None or shape.depth <= 0:
            return [], False
        return index.propose(shape.depth), False

    @staticmethod
    def _graft(tree: TokenTree, lookups: list[list[int]], budget: int, depth: int) -> set[int]:
        """2b. The n-gram continuations as branches of the tree, within ``budget`` nodes and ``depth``; the new nodes."""
        fixed: set[int] = set()
        for tokens in lookups:
            fixed.update(tree.graft(tokens, budget - (len(tree) - 1), depth))
        return fixed

    def _verify(self, tree: TokenTree, root_pos: int) -> torch.Tensor:
        """3. The whole tree in one target forward (each node sees the prefix and its ancestors); ``[T, V]`` logits."""
        positions = torch.tensor([[root_pos + depth for depth in tree.depths]])
        logits = self.target.forward(
            tree.token_tensor(), positions, self.target_cache, tree_attention_mask(root_pos, tree)
        )
        self.stats.target_forwards += 1
        return logits

    def _accept(self, tree: TokenTree, logits: torch.Tensor, d: Draft | None, fixed: set[int]) -> tuple[list[int], int]:
        """4. Walk down the tree: the accepted nodes and the target's own token after them (the bonus)."""
        if self.sampling.greedy:
            return verify_greedy(tree, logits)
        return verify_sample(tree, probs(logits, self.sampling), d.q if d else {}, self.generator, fixed)

    def _commit(
        self, root: int, root_pos: int, tree: TokenTree, accepted: list[int], d: Draft | None, pending: list[int]
    ) -> list[int]:
        """5. Both caches keep only the accepted path; the accepted tokens the draft has not seen (next ``pending``)."""
        self.target_cache.keep(root_pos, [root_pos + node for node in [0, *accepted]])
        if self.draft is None:
            return []
        if d is None:  # the draft did not run: the root and the accepted tokens join the ones it has yet to see
            return [*pending, root, *(tree.tokens[n] for n in accepted)]
        slot = {node: d.prefix + i for i, node in enumerate(d.fed)}
        kept = [slot[n] for n in accepted if n in slot]  # fed nodes form a prefix of the path
        assert self.draft_cache is not None  # d came from the draft
        self.draft_cache.keep(d.prefix, kept)
        return [tree.tokens[n] for n in accepted[len(kept) :]]  # fed nodes first, then unfed and n-gram ones

    def _record(
        self,
        shape: TreeShape,
        tree: TokenTree,
        accepted: list[int],
        emitted: int,
        d: Draft | None,
        times: tuple[float, float, float],
        seen: tuple[float, float],
        fixed: set[int],
        bonus: int,
        lookup: list[int],
    ) -> StepRecord:
        """The step's :class:`StepRecord`, added to the statistics.

        ``times``: step start, tree drafted, tree verified; ``seen``: the target's and the draft's
        forward seconds at the step's start; ``fixed``: n-gram nodes; ``bonus``: the target's token;
        ``lookup``: the first n-gram continuation tried ([] if none).
        """
        t0, t1, t2 = times
        path_entropy = [d.entropy[n] for n in [0, *accepted] if n in d.entropy] if d else []
        sizes = tree.level_sizes()
        t3 = time.perf_counter()
        record = StepRecord(
            accepted=len(accepted),
            emitted=emitted,
            tree_size=len(tree) - 1,
            depth=len(sizes),
            width=max(sizes, default=0),
            shape=shape,
            entropy=sum(path_entropy) / len(path_entropy) if path_entropy else math.nan,
            root_entropy=d.entropy[0] if d else math.nan,
            draft_s=t1 - t0,
            verify_s=t2 - t1,
            overhead_s=t3 - t2,
            draft_forward_s=(self.draft.seconds - seen[1]) if self.draft is not None else 0.0,
            target_forward_s=self.target.seconds - seen[0],
            ngram_nodes=len(fixed),
            ngram_proposed=len(lookup),
            ngram_accepted=common_prefix(lookup, [tree.tokens[n] for n in accepted]),
            covered=_covered(tree, accepted, bonus, d),
            draft_levels=d.forwards if d is not None else 0,
            draft_catch_up=d.catch_up if d is not None else 0,
        )
        self.stats.steps.append(record)
        self.stats.draft_s += record.draft_s
        self.stats.verify_s += record.verify_s
        self.stats.overhead_s += record.overhead_s
        return record

    def generate(
        self,
        input_ids: torch.Tensor | Sequence[int],
        max_new_tokens: int = 128,
        eos_token_id: Any = "auto",
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> SpecOutput:
        """All new tokens at once, with the generation's :class:`SpecStats`; ``on_tokens`` sees each chunk as it comes."""
        tokens: list[int] = []
        for chunk in self.stream(input_ids, max_new_tokens, eos_token_id):
            tokens += chunk
            if on_tokens is not None:
                on_tokens(chunk)
        return SpecOutput(tokens, self.stats)
