"""A draft token tree: flat arrays of tokens, parents and depths, plus its attention masks.

Node 0 is the *root*: the last token already decided by the target but not yet in either
model's cache. Every other node is a draft proposal; its children are further proposals after
it. Nodes are stored in the order they were added (level by level), and a node's children are
stored in the order they were drawn, which is the order verification tries them in (that
order matters for lossless sampling, see :mod:`surefast.speculate.verify`).
"""

from __future__ import annotations

import torch


class TokenTree:
    """A growing token tree. ``scores`` hold the draft's cumulative log-probability of each path."""

    def __init__(self, root_token: int, capacity: int = 64) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []  # -1 for the root
        self.depths: list[int] = []
        self.scores: list[float] = []
        self.children: list[list[int]] = []
        self._capacity = max(1, capacity)
        self._anc: list[torch.Tensor] = []  # per node: bool [capacity], ancestors-or-self
        self.add(root_token, -1, 0.0)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int, score: float) -> int:
        """Append a node under ``parent`` and return its index."""
        i = len(self.tokens)
        if i >= self._capacity:  # grow the ancestor rows (rare: capacity is the node budget + 1)
            self._capacity *= 2
            self._anc = [torch.cat([a, torch.zeros(self._capacity - a.numel(), dtype=torch.bool)]) for a in self._anc]
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
        self.scores.append(score)
        self.children.append([])
        row = torch.zeros(self._capacity, dtype=torch.bool) if parent < 0 else self._anc[parent].clone()
        row[i] = True
        self._anc.append(row)
        if parent >= 0:
            self.children[parent].append(i)
        return i

    @property
    def depth(self) -> int:
        return max(self.depths)

    def level_sizes(self) -> list[int]:
        """Number of nodes at depth 1, 2, ... (the root is not counted)."""
        sizes = [0] * self.depth
        for d in self.depths[1:]:
            sizes[d - 1] += 1
        return sizes

    def ancestors(self, nodes: list[int] | None = None) -> torch.Tensor:
        """``[n, N]`` bool: row ``r`` marks the ancestors of ``nodes[r]`` and the node itself."""
        n = len(self.tokens)
        rows = self._anc if nodes is None else [self._anc[i] for i in nodes]
        return torch.stack(rows)[:, :n]

    def graft(self, tokens: list[int], limit: int, max_depth: int) -> list[int]:
        """Add the chain ``tokens`` under the root, walking down existing children with the same tokens.

        At most ``limit`` new nodes and no node deeper than ``max_depth``; a new node's score is
        its parent's (a lookup has no probability). Returns the new nodes, parents first.
        """
        node, new = 0, list[int]()
        for token in tokens:
            if self.depths[node] >= max_depth:
                break
            same = next((c for c in self.children[node] if self.tokens[c] == token), None)
            if same is None:
                if len(new) >= limit:
                    break
                same = self.add(token, node, self.scores[node])
                new.append(same)
            node = same
        return new

    def path(self, node: int) -> list[int]:
        """Nodes from the root to ``node``, both included."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def token_tensor(self, nodes: list[int] | None = None) -> torch.Tensor:
        """``[1, n]`` token ids of ``nodes`` (all nodes by default)."""
        toks = self.tokens if nodes is None else [self.tokens[i] for i in nodes]
        return torch.tensor([toks], dtype=torch.long)


def tree_attention_mask(
    past: int, tree: TokenTree, nodes: list[int] | None = None, seen: list[int] | None = None
) -> torch.Tensor:
    """``[n, past + len(seen) + n]`` bool mask for feeding ``nodes`` after ``past`` cached slots.

    Each node attends to the whole prefix (``past`` slots), to those of its ancestors that are
    already cached (``seen``: tree nodes in cache-slot order after the prefix) and to its
    ancestors and itself among the nodes fed now. With ``nodes=None, seen=None`` this is the
    verification mask of the whole tree: prefix + ancestors-or-self.
    """
    nodes = list(range(len(tree))) if nodes is None else nodes
    seen = seen or []
    anc = tree.ancestors(nodes)  # [n, N]
    cols = torch.tensor(seen + nodes, dtype=torch.long)
    prefix = torch.ones(len(nodes), past, dtype=torch.bool)
    return torch.cat([prefix, anc[:, cols]], dim=1)
