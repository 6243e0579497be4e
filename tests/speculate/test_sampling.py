"""Sampling is lossless: emitted tokens follow the target's distribution (chi-square, fixed seeds)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from surefast.speculate import DynamicTreeConfig, SageConfig, SamplingConfig, SpeculativeDecoder, StaticTreeConfig
from surefast.speculate.tree import TokenTree
from surefast.speculate.verify import draw_children, probs, verify_sample

from .toy import hf_context_lm, markov_lm

SAMPLE = SamplingConfig(temperature=1.0)
P_MIN = 1e-3  # fixed seeds: each test is deterministic; a correct sampler passes at this level


def chi_square_p(groups: list[tuple[dict[int, int], np.ndarray]]) -> float:
    """Pooled chi-square over several (counts, expected probabilities) groups; cells with expected < 5 merged."""
    stat, dof = 0.0, 0
    for counts, expected_p in groups:
        n = sum(counts.values())
        if n == 0:
            continue
        obs = np.array([counts.get(i, 0) for i in range(len(expected_p))], dtype=float)
        exp = expected_p * n
        small = exp < 5
        if small.any():  # pool the small cells into one
            obs = np.append(obs[~small], obs[small].sum())
            exp = np.append(exp[~small], exp[small].sum())
            if exp[-1] == 0:
                obs, exp = obs[:-1], exp[:-1]
        if len(exp) < 2:
            continue
        stat += float(((obs - exp) ** 2 / exp).sum())
        dof += len(exp) - 1
    return float(stats.chi2.sf(stat, dof))


def _dist(gen: torch.Generator, vocab: int, spread: float = 1.0) -> torch.Tensor:
    return torch.softmax(torch.randn(vocab, generator=gen) * spread, -1)


@pytest.mark.parametrize("accept_everything", [False, True])
def test_verify_sample_follows_target(accept_everything):
    """A two-level tree (3 children, 2 grandchildren each, drawn without replacement) over 4 tokens."""
    vocab, draws = 4, 6000
    gen = torch.Generator().manual_seed(0)
    p_root, q_root = _dist(gen, vocab), _dist(gen, vocab)
    p_next = torch.stack([_dist(gen, vocab) for _ in range(vocab)])  # target after token t
    q_next = torch.stack([_dist(gen, vocab) for _ in range(vocab)])
    first, second = Counter(), {t: Counter() for t in range(vocab)}
    for _ in range(draws):
        tree = TokenTree(0)
        for tok in draw_children(q_root[None], [3], SAMPLE, gen)[0]:
            tree.add(tok, 0, 0.0)
        for child in list(tree.children[0]):
            for tok in draw_children(q_next[tree.tokens[child]][None], [2], SAMPLE, gen)[0]:
                tree.add(tok, child, 0.0)
        p = torch.stack([p_root] + [p_next[t] for t in tree.tokens[1:]])
        q = {0: q_root, **{c: q_next[tree.tokens[c]] for c in tree.children[0]}}
        if accept_everything:  # negative control: naive acceptance must be caught
            accepted = [tree.children[0][0], tree.children[tree.children[0][0]][0]]
            bonus = 0
        else:
            accepted, bonus = verify_sample(tree, p, q, gen)
        out = [tree.tokens[n] for n in accepted] + [bonus]
        first[out[0]] += 1
        if len(out) > 1:
            second[out[0]][out[1]] += 1
    p_value = chi_square_p([(first, p_root.numpy())] + [(second[t], p_next[t].numpy()) for t in range(vocab)])
    if accept_everything:
        assert p_value < 1e-6
    else:
        assert p_value > P_MIN
        assert sum(sum(c.values()) for c in second.values()) > draws // 3  # the second level was exercised


def _markov_transitions(tokens: list[int]) -> dict[tuple[int, int], Counter]:
    out: dict[tuple[int, int], Counter] = {}
    for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False):
        out.setdefault((a, b), Counter())[c] += 1
    return out


def markov_fit_p(target, seq: list[int], sampling: SamplingConfig) -> float:
    """Chi-square p-value of every transition in ``seq`` against the Markov target's p(next | last two)."""
    groups = []
    for (a, b), counts in _markov_transitions(seq).items():
        expected = probs(target.logits((a, b)), sampling).numpy().astype(float)
        groups.append((counts, expected / expected.sum()))
    return chi_square_p(groups)


@pytest.mark.parametrize(
    ("policy", "sampling"),
    [
        (SageConfig(budget=8, max_width=3, max_depth=4), SAMPLE),
        (DynamicTreeConfig(depth=3, width=3, budget=7), SamplingConfig(temperature=0.7, top_k=4, top_p=0.9)),
        (StaticTreeConfig(paths=((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0))), SAMPLE),
    ],
)
def test_long_generation_follows_markov_target(policy, sampling):
    """Every emitted token, at any depth of any tree, follows p(next | last two tokens) (Anderson-Goodman test)."""
    vocab = 5
    target, draft = markov_lm(vocab, seed=0), markov_lm(vocab, seed=0, noise=1.0)
    dec = SpeculativeDecoder(target, draft, policy, sampling, torch.Generator().manual_seed(7))
    prompt = [1, 2]
    out = dec.generate(prompt, 1500, eos_token_id=None)
    assert len(out.tokens) == 1500
    assert out.stats.mean_accepted > 0.2  # speculation really happened
    assert markov_fit_p(target, prompt + out.tokens, sampling) > P_MIN


def test_tiny_model_first_tokens_follow_target(tiny, perturbed):
    """Joint law of the first three tokens of a tiny qwen2 under top-3 sampling (27 cells, 1200 draws).

    Four tokens are generated so that the first speculative step can draft two levels deep.
    """
    model = tiny("qwen2", seed=0)
    vocab = model.config.vocab_size
    target = hf_context_lm(model, vocab)
    draft = hf_context_lm(perturbed(model, 0.1, 1), vocab)
    sampling = SamplingConfig(temperature=1.0, top_k=3)
    prompt = (5, 17, 42)
    dec = SpeculativeDecoder(
        target, draft, DynamicTreeConfig(depth=2, width=2, budget=4), sampling, torch.Generator().manual_seed(3)
    )
    counts: Counter = Counter()
    accepted = 0
    for _ in range(1200):
        out = dec.generate(list(prompt), 4, eos_token_id=None)
        counts[tuple(out.tokens[:3])] += 1
        accepted += out.stats.steps[0].accepted
    assert accepted > 600

    def p(ctx: tuple[int, ...]) -> torch.Tensor:
        return probs(target.logits(ctx), sampling)

    cells, expected = [], []
    first = p(prompt)
    for a in first.nonzero().flatten().tolist():
        second = p((*prompt, a))
        for b in second.nonzero().flatten().tolist():
            third = p((*prompt, a, b))
            for c in third.nonzero().flatten().tolist():
                cells.append((a, b, c))
                expected.append(float(first[a] * second[b] * third[c]))
    assert set(counts) <= set(cells)
    index = {cell: i for i, cell in enumerate(cells)}
    observed = {index[c]: n for c, n in counts.items()}
    assert chi_square_p([(observed, np.array(expected) / sum(expected))]) > P_MIN


def test_sampling_is_reproducible_and_seed_dependent(tiny, perturbed):
    target = tiny("llama", seed=0)
    draft = perturbed(target, 0.05, 1)
    prompt = torch.tensor([[3, 4, 5, 6]])

    def run(seed: int) -> list[int]:
        dec = SpeculativeDecoder(
            target, draft, "sage", SamplingConfig(temperature=1.0), torch.Generator().manual_seed(seed)
        )
        return dec.generate(prompt, 24, eos_token_id=None).tokens

    assert run(0) == run(0)
    assert any(run(0) != run(s) for s in (1, 2))


def test_identical_draft_accepts_almost_everything_when_sampling(tiny):
    target = tiny("qwen3", seed=0)
    dec = SpeculativeDecoder(
        target,
        target,
        DynamicTreeConfig(depth=4, width=2, budget=8),
        SamplingConfig(temperature=0.8),
        torch.Generator().manual_seed(0),
    )
    out = dec.generate(torch.tensor([[1, 2, 3]]), 40, eos_token_id=None)
    steps = out.stats.steps[:-1]
    assert sum(s.accepted for s in steps) >= 0.9 * sum(s.depth for s in steps)


def test_top_p_and_top_k_processing():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(
        probs(logits, SamplingConfig(temperature=1.0, top_p=0.75)), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    assert torch.allclose(
        probs(logits, SamplingConfig(temperature=1.0, top_k=3)), torch.tensor([[0.5, 0.3, 0.15, 0]]) / 0.95
    )
    assert torch.equal(probs(logits, SamplingConfig()).argmax(-1), torch.tensor([0]))
    hot = probs(logits, SamplingConfig(temperature=2.0))
    assert hot[0, 3] > 0.05 and torch.isclose(hot.sum(), torch.tensor(1.0))


def test_draw_children_without_replacement():
    gen = torch.Generator().manual_seed(0)
    q = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    for _ in range(50):
        a, b = draw_children(q, [3, 2], SAMPLE, gen)
        assert sorted(a) == [0, 1, 2] and len(set(b)) == 2  # never the zero-probability token, never twice
    assert draw_children(q, [4, 0], SAMPLE, gen)[0].__len__() == 3
    assert draw_children(q[:1], [2], SamplingConfig(), gen) == [[0, 1]]  # greedy: the top tokens, in order
    # first draw of Gumbel-top-k is a plain draw from q
    firsts = Counter(draw_children(q[:1], [1], SAMPLE, gen)[0][0] for _ in range(3000))
    assert chi_square_p([(firsts, q[0].numpy())]) > P_MIN
