"""Growing a draft token tree: one draft forward per level, with a tree attention mask.

The draft keeps its own cache. At the start of a step it holds the committed sequence except
``pending`` tokens (accepted last step but never fed to it) and the root. The first forward
feeds ``pending + [root]`` as a plain causal chain; each later forward feeds one new level of
the tree, every node attending to the committed prefix and to its own ancestors.

Which nodes a level gets (``width`` per level, ``budget`` in all): for a fixed tree, the
children counts its rank paths give (``TreeShape.fanout``); otherwise the best (parent, rank)
pairs by cumulative draft log-probability, ``score(parent) + log q_parent(rank-th token)``,
computed from the *values* of each frontier node's sorted distribution, with one slot kept
for the draft's own first-choice chain (the *spine*). That fixes how many
children every frontier node gets before any is drawn; then the children are drawn (greedy:
the top tokens; sampling: without replacement). In greedy mode this is exactly EAGLE-2's
expansion step; under sampling it keeps verification lossless (:mod:`surefast.speculate.verify`).
The deepest level is not fed to the draft (nobody needs its distribution); an accepted leaf
becomes ``pending`` for the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surefast.errors import SurefastError
from surefast.speculate.cache import KVCache
from surefast.speculate.conformal import inside_sets, set_sizes
from surefast.speculate.model import CausalLM, causal_mask
from surefast.speculate.policies import normalized_topk_entropy, topk_entropy
from surefast.speculate.stats import TreeShape
from surefast.speculate.tree import TokenTree, tree_attention_mask
from surefast.speculate.verify import SamplingConfig, draw_children, probs


@dataclass
class Draft:
    """A grown tree and what verification and bookkeeping need from the draft side."""

    tree: TokenTree
    q: dict[int, torch.Tensor]  # sampling only: node -> the draft distribution its children were drawn from [V]
    entropy: dict[int, float]  # node -> normalized top-K entropy of the draft after it
    fed: list[int]  # tree nodes (root excluded) whose keys/values are in the draft cache, in slot order
    prefix: int  # draft cache slots before the first fed tree node (the root is the last of them)
    forwards: int
    catch_up: int  # pending tokens fed before the root in the first forward
    sets: dict[int, list[int]]  # conformal trees: node -> the draft's set after it (before the budget cut)


def align_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits ``[T, V_draft]`` -> ``[T, vocab]`` (the target's): cut, or pad with -inf."""
    if logits.shape[-1] == vocab:
        return logits
    if logits.shape[-1] > vocab:
        return logits[..., :vocab]
    pad = logits.new_full((*logits.shape[:-1], vocab - logits.shape[-1]), float("-inf"))
    return torch.cat([logits, pad], dim=-1)


def check_draft_vocab(ids: torch.Tensor, draft_vocab: int) -> None:
    """A draft with a smaller vocabulary cannot read every token the target may write."""
    top = int(ids.max()) if ids.numel() else -1
    if top >= draft_vocab:
        raise SurefastError(
            f"token id {top} is outside the draft model's vocabulary ({draft_vocab} tokens)",
            "use a draft that shares the target's tokenizer and vocabulary",
        )


def allocate(scores: torch.Tensor, logp: torch.Tensor, n: int, spine: int | None = None) -> list[int]:
    """How many children each frontier node gets: the ``n`` best (node, rank) pairs by path log-prob.

    ``scores [F]`` path log-probs, ``logp [F, k]`` each row's top log-probabilities, descending
    (:class:`Ranked`). Uses only these values (never a drawn token), so it may precede sampling
    without bias. Row ``spine`` (the end of the draft's own first-choice chain) always gets at
    least one child, so a tree of depth D really contains a chain of length D (with target ==
    draft, every level is accepted).
    """
    cand = scores[:, None] + logp[:, : min(n, logp.shape[-1])]  # [F, k], sorted per row
    flat = cand.flatten()
    k = cand.shape[-1]
    finite = int(torch.isfinite(flat).sum())
    counts = torch.bincount(flat.topk(min(n, finite)).indices // k, minlength=logp.shape[0])
    if spine is not None and counts[spine] == 0 and n > 0 and torch.isfinite(cand[spine, 0]):
        counts = torch.bincount(flat.topk(min(n - 1, finite)).indices // k, minlength=logp.shape[0])
        counts[spine] += 1
    return counts.tolist()


@dataclass
class Ranked:
    """A frontier's draft distributions ranked once per level: what allocation, sets, entropy and draws read.

    Greedy decoding never needs a full distribution: the top ``k`` logits and their log-sum-exp
    give the log-probabilities, and the children are the top tokens. Under sampling ``q`` (the
    processed distribution) is kept whole, for drawing and for verification.
    """

    logp: torch.Tensor  # [F, k] top log-probabilities per row, descending
    tokens: torch.Tensor  # [F, k] their token ids
    entropy: list[float]  # per row: normalized top-K entropy of the raw logits
    q: torch.Tensor | None  # [F, V] under sampling; None when greedy


def rank(logits: torch.Tensor, sampling: SamplingConfig, k: int, entropy_topk: int) -> Ranked:
    """``logits [F, V]`` -> :class:`Ranked` with the top ``k`` tokens of each row."""
    x = logits.float()
    k = max(1, min(k, x.shape[-1]))
    if sampling.greedy:
        top = x.topk(max(k, min(entropy_topk, x.shape[-1])), dim=-1)
        logp = top.values[:, :k] - torch.logsumexp(x, dim=-1, keepdim=True)
        entropy = topk_entropy(top.values[:, :entropy_topk])
        return Ranked(logp, top.indices[:, :k], entropy.tolist(), None)
    q = probs(logits, sampling)
    top = q.topk(k, dim=-1)
    return Ranked(torch.log(top.values), top.indices, normalized_topk_entropy(x, entropy_topk).tolist(), q)


def _draw(
    ranked: Ranked, counts: list[int], sampling: SamplingConfig, generator: torch.Generator | None
) -> tuple[list[list[int]], list[list[float]]]:
    """``counts[f]`` children per row, in draw order, and their draft log-probabilities.

    Greedy: the top tokens (never one without probability); sampling: drawn without replacement from ``q``.
    """
    if ranked.q is None:
        logp, tokens = ranked.logp.tolist(), ranked.tokens.tolist()
        out_t, out_l = [], []
        for row, k in enumerate(counts):
            keep = [i for i in range(min(k, len(logp[row]))) if logp[row][i] != float("-inf")]
            out_t.append([tokens[row][i] for i in keep])
            out_l.append([logp[row][i] for i in keep])
        return out_t, out_l
    drawn = draw_children(ranked.q, counts, sampling, generator)
    logq = [torch.log(ranked.q[row, t]).tolist() if t else [] for row, t in enumerate(drawn)]
    return drawn, logq


@torch.inference_mode()
def grow_tree(
    draft: CausalLM,
    cache: KVCache,
    pending: list[int],
    root: int,
    root_pos: int,
    shape: TreeShape,
    sampling: SamplingConfig,
    vocab: int,
    generator: torch.Generator | None = None,
    entropy_topk: int = 10,
) -> Draft:
    """Grow a tree under ``root`` (at position ``root_pos``) of at most ``shape`` (depth, width, budget)."""
    tree = TokenTree(root, capacity=shape.budget + 1)
    ids = torch.tensor([[*pending, root]], dtype=torch.long)
    check_draft_vocab(ids, draft.vocab_size)
    positions = torch.arange(root_pos - len(pending), root_pos + 1).unsqueeze(0)
    logits = align_vocab(draft.forward(ids, positions, cache, causal_mask(len(cache), ids.shape[1]))[-1:], vocab)
    prefix, forwards = len(cache), 1
    frontier, spine = [0], 0  # spine: the last node of the chain of first-drawn children
    ranked = rank(logits, sampling, shape.width, entropy_topk)
    q: dict[int, torch.Tensor] = {} if ranked.q is None else {0: ranked.q[0]}
    entropy = {0: ranked.entropy[0]}
    fed: list[int] = []
    rank_path: dict[int, tuple[int, ...]] = {0: ()}  # node -> ranks of its tokens among their siblings
    sets: dict[int, list[int]] = {}
    for level in range(1, shape.depth + 1):
        room = min(shape.width, shape.budget - (len(tree) - 1))
        if room <= 0:
            break
        spine_row = frontier.index(spine) if spine in frontier else None
        scores = torch.tensor([tree.scores[f] for f in frontier], device=ranked.logp.device)
        if shape.fanout is not None:  # a fixed tree: children per node by its rank path
            counts = [shape.fanout.get(rank_path[f], 0) for f in frontier]
        elif shape.set_mass is not None:  # conformal: each node's draft set, then the budget
            sizes = set_sizes(ranked.logp.exp(), shape.set_mass)
            top = ranked.tokens.tolist()
            sets.update(
                (f, top[row][:size]) for row, (f, size) in enumerate(zip(frontier, sizes.tolist(), strict=True))
            )
            counts = allocate(scores, inside_sets(ranked.logp, sizes), room, spine_row)
        else:
            counts = allocate(scores, ranked.logp, room, spine_row)
        new = []
        drawn, logq_drawn = _draw(ranked, counts, sampling, generator)
        for f, tokens, logq in zip(frontier, drawn, logq_drawn, strict=True):
            for r, (t, lq) in enumerate(zip(tokens, logq, strict=True)):
                node = tree.add(t, f, tree.scores[f] + lq)
                rank_path[node] = (*rank_path[f], r)
                new.append(node)
        spine = tree.children[spine][0] if spine >= 0 and tree.children[spine] else -1
        if not new or level == shape.depth or len(tree) - 1 >= shape.budget:
            break  # the last level is verified by the target but never fed to the draft
        mask = tree_attention_mask(prefix, tree, nodes=new, seen=fed)
        positions = torch.tensor([[root_pos + level] * len(new)])
        logits = align_vocab(draft.forward(tree.token_tensor(new), positions, cache, mask), vocab)
        forwards += 1
        fed += new
        frontier, ranked = new, rank(logits, sampling, shape.width, entropy_topk)
        for row, node in enumerate(new):
            if ranked.q is not None:
                q[node] = ranked.q[row]
            entropy[node] = ranked.entropy[row]
    return Draft(tree, q, entropy, fed, prefix, forwards, len(pending), sets)
