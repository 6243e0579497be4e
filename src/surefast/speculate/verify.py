"""Drawing draft children and verifying a token tree against the target: greedy and lossless sampling.

Greedy (``temperature == 0``): children are the draft's top-k tokens; the target accepts the
child equal to its own argmax, so the output is exactly the target's greedy output.

Sampling: multi-draft speculative sampling over a tree (SpecInfer, Miao et al. 2024; the
sampling-without-replacement variant of Sequoia, Chen et al. 2024, Algorithm 2). At a node
with target distribution ``p`` and draft distribution ``q``, its children ``x_1..x_k`` were
drawn from ``q`` *without replacement*, in that order (Gumbel-top-k, Kool et al. 2019). For
``i = 1..k``: accept ``x_i`` with probability ``min(1, p(x_i) / q(x_i))``; on rejection set
``p <- norm(max(0, p - q))`` and ``q <- norm(q with x_i removed)`` (the distribution ``x_{i+1}``
was really drawn from). If every child is rejected, sample the next token from the final
``p``. By induction over ``i`` (the one-draft lemma of Leviathan et al. 2023 at each stage),
the emitted token is distributed exactly as the original ``p``.

Lossless only if the *number* of children of a node is fixed before they are drawn; it may
depend on anything drawn earlier (the node's own token, its ancestors and siblings) but never
on the children's own values. :func:`draw_children` is handed the counts, then draws.

Candidates may also come from a deterministic proposal (an n-gram lookup, ``fixed`` in
:func:`verify_sample`): a one-hot ``q``. The induction above holds for any proposal at stage
``i`` that depends only on what was proposed before it, so such a child may follow the drawn
siblings (and be added only when no drawn sibling already holds its token): it is accepted with
probability ``p(x)``, and on rejection ``p <- norm(p with x zeroed)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from surefast.speculate.stats import require_int, require_real
from surefast.speculate.tree import TokenTree


@dataclass(frozen=True)
class SamplingConfig:
    """How the target picks tokens: ``temperature=0`` is greedy; else temperature/top-k/top-p sampling.

    Semantics follow transformers' logits warpers (temperature, then top-k, then top-p). The
    draft's proposals use the same processing, so ``q`` and ``p`` live on the same support.
    """

    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def __post_init__(self) -> None:
        # ConfigError (a SurefastError and a ValueError): a NaN or string temperature would
        # otherwise pass the comparisons and fail deep inside the first draw.
        hint = "temperature >= 0 (0: greedy), top_k >= 0 (0: off), 0 < top_p <= 1 (1: off)"
        require_real("sampling", "temperature", self.temperature, 0.0, math.inf, hint)
        require_int("sampling", "top_k", self.top_k, 0, hint)
        require_real("sampling", "top_p", self.top_p, 0.0, 1.0, hint, low_open=True)


GREEDY = SamplingConfig()


def probs(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """``[..., V]`` logits -> the distribution tokens are drawn from (fp32). Greedy: plain softmax."""
    x = logits.float()
    if sampling.greedy:
        return torch.softmax(x, dim=-1)
    x = x / sampling.temperature
    if sampling.top_k and sampling.top_k < x.shape[-1]:
        kth = x.topk(sampling.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_x, order = x.sort(dim=-1, descending=True)
        cum = torch.softmax(sorted_x, dim=-1).cumsum(dim=-1)
        drop_sorted = (cum - torch.softmax(sorted_x, dim=-1)) >= sampling.top_p  # mass before this token already enough
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.softmax(x, dim=-1)


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(x.shape, generator=generator, dtype=torch.float32).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def draw_children(
    q: torch.Tensor, counts: list[int], sampling: SamplingConfig, generator: torch.Generator | None
) -> list[list[int]]:
    """For each row of ``q [F, V]``, ``counts[f]`` distinct tokens in draw order.

    Greedy: the top tokens of ``q``. Sampling: Gumbel-top-k, i.e. ``counts[f]`` draws from
    ``q[f]`` without replacement, in the order they were drawn. Never more than the support.
    """
    kmax = max(counts, default=0)
    if kmax == 0:
        return [[] for _ in counts]
    keys = torch.log(q)  # [F, V]; -inf off the support
    if not sampling.greedy:
        keys = keys + gumbel_like(keys, generator).to(keys.device)  # CPU generator: same draws on every device
    top = keys.topk(min(kmax, keys.shape[-1]), dim=-1)
    out = []
    for f, k in enumerate(counts):
        vals, idx = top.values[f, :k], top.indices[f, :k]
        out.append([int(t) for t, v in zip(idx.tolist(), vals.tolist(), strict=True) if v != float("-inf")])
    return out


def verify_greedy(tree: TokenTree, target_logits: torch.Tensor) -> tuple[list[int], int]:
    """Walk down the tree while a child equals the target's argmax. Returns (accepted nodes, next token)."""
    choice = target_logits.argmax(dim=-1).tolist()  # [N]: the target's greedy token after each node
    node, accepted = 0, list[int]()
    while True:
        nxt = next((c for c in tree.children[node] if tree.tokens[c] == choice[node]), None)
        if nxt is None:
            return accepted, int(choice[node])
        accepted.append(nxt)
        node = nxt


def verify_sample(
    tree: TokenTree,
    p: torch.Tensor,
    q: dict[int, torch.Tensor],
    generator: torch.Generator | None,
    fixed: set[int] | frozenset[int] = frozenset(),
) -> tuple[list[int], int]:
    """Multi-draft speculative sampling down the tree (module docstring). Returns (accepted nodes, next token).

    ``p [N, V]``: target distributions after each node; ``q[node]``: the draft distribution that
    node's drawn children came from. ``fixed``: children that were not drawn but proposed
    deterministically (n-gram lookups): their proposal is one-hot, so such a child ``x`` is
    accepted with probability ``p(x)`` and on rejection only ``p(x)`` is zeroed (``max(0, p -
    onehot(x))``, renormalized); the draft's ``q`` is left as it was for the drawn siblings.
    """
    node, accepted = 0, list[int]()
    while True:
        p_u = p[node]
        kids = tree.children[node]
        if kids:
            q_u = q[node].to(p_u.device) if node in q else None
            taken = None
            for child in kids:
                x = tree.tokens[child]
                r = float(torch.rand((), generator=generator))
                if child in fixed or q_u is None:
                    if r < float(p_u[x]):
                        taken = child
                        break
                    p_u = p_u.clone()
                    p_u[x] = 0.0
                    total = float(p_u.sum())
                    p_u = p_u / total if total > 0 else p_u
                    continue
                if r * float(q_u[x]) < float(p_u[x]):  # r < p(x)/q(x), without dividing by a tiny q
                    taken = child
                    break
                residual = (p_u - q_u).clamp_(min=0.0)
                total = float(residual.sum())
                p_u = residual / total if total > 0 else p_u  # total == 0 only if p == q up to rounding
                q_u = q_u.clone()
                q_u[x] = 0.0
                mass = float(q_u.sum())
                q_u = q_u / mass if mass > 0 else q_u
            if taken is not None:
                accepted.append(taken)
                node = taken
                continue
        token = int(torch.multinomial(p_u.float().cpu(), 1, generator=generator))  # generator lives on the CPU
        return accepted, token
