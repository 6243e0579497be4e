"""The one registry (name -> entry, did-you-mean, no duplicates) and the five kinds that use it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from surefast.errors import SurefastError
from surefast.registry import Registry, closest, dashed, suggestion


def colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    for i, name in enumerate(("red", "green", "blue")):
        reg.register(name, i)
    return reg


def test_lookup_iteration_and_mapping_reads() -> None:
    reg = colours()
    assert reg.get("green") == reg["green"] == 1
    assert list(reg) == ["red", "green", "blue"]  # registration order, not sorted
    assert list(reg.keys()) == list(reg) and list(reg.values()) == [0, 1, 2]
    assert dict(reg.items()) == {"red": 0, "green": 1, "blue": 2} and len(reg) == 3
    assert "blue" in reg and "Blue" not in reg and 3 not in reg and None not in reg
    assert reg.register("cyan", 7) == 7  # returns the entry
    assert "colour" in repr(reg) and "cyan" in repr(reg)


def test_unknown_name_suggests_the_closest_or_lists_every_name() -> None:
    reg = colours()
    with pytest.raises(SurefastError) as err:
        reg.get("gren")
    assert err.value.message == "unknown colour 'gren'" and err.value.hint == "did you mean 'green'?"
    with pytest.raises(SurefastError) as err:
        reg["purple"]
    assert err.value.message == "unknown colour 'purple'" and err.value.hint == "choose from red, green, blue"
    with pytest.raises(SurefastError, match="unknown colour 5"):  # a YAML number: no crash on .strip()
        reg.get(5)  # type: ignore[arg-type]
    assert reg.unknown("gren").hint == "did you mean 'green'?"
    with pytest.raises(SurefastError) as err:
        Registry[int]("colour").get("red")
    assert err.value.hint == "none is registered"


def test_duplicate_names_are_refused() -> None:
    reg = colours()
    with pytest.raises(SurefastError, match="colour 'red' is registered twice"):
        reg.register("red", 9)
    assert reg["red"] == 0  # the first registration stands


def test_normalized_names() -> None:
    reg: Registry[str] = Registry("policy", normalize=dashed)
    reg.register("static-tree", "tree")
    assert reg.get(" Static_Tree") == "tree" and "STATIC_TREE" in reg
    assert reg.canonical("static_tree") == "static-tree"
    with pytest.raises(SurefastError) as err:
        reg.get("statictree")
    assert err.value.hint == "did you mean 'static-tree'?"
    # a registered name lookups could never reach is refused up front
    with pytest.raises(SurefastError, match="cannot register policy 'Static_Tree'") as err:
        reg.register("Static_Tree", "x")
    assert err.value.hint == "write it as 'static-tree'"
    with pytest.raises(SurefastError, match="cannot register"):
        reg.register("", "x")


def test_cutoff_and_shared_hint_helpers() -> None:
    strict: Registry[int] = Registry("strategy")
    loose: Registry[int] = Registry("strategy", cutoff=0.4)
    for reg in (strict, loose):
        reg.register("shared", 0)
    assert loose.unknown("sh").hint == "did you mean 'shared'?"  # difflib ratio 2*2/8 = 0.5: only the looser cutoff
    assert strict.unknown("sh").hint == "choose from shared"
    assert closest("budgte", ["budget", "depth"]) == "budget" and closest("zzz", ["budget"]) is None
    assert suggestion("zzz", ["a", "b"], otherwise="options: a, b") == "options: a, b"
    assert suggestion("bb", ["a", "b"]) == "did you mean 'b'?"


# --- the five kinds go through Registry -----------------------------------------------------------


def _kinds() -> dict[str, tuple[Registry, str]]:
    from surefast.compress import api
    from surefast.conformal.scores import SCORES
    from surefast.data.load import TASK_SPECS
    from surefast.prompts.build import INSTRUCTIONS
    from surefast.speculate.policies import POLICY_CONFIGS

    return {
        "compression method": (api.METHODS, "gptqq"),
        "speculative policy": (POLICY_CONFIGS, "sagee"),
        "conformity score": (SCORES, "lax"),
        "task": (TASK_SPECS, "helaswag"),
        "prompt strategy": (INSTRUCTIONS, "share"),
    }


KINDS = ["compression method", "speculative policy", "conformity score", "task", "prompt strategy"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_one_registry(kind: str) -> None:
    reg, typo = _kinds()[kind]
    assert isinstance(reg, Registry) and reg.kind == kind
    with pytest.raises(SurefastError) as err:
        reg.get(typo)
    assert err.value.message == f"unknown {kind} {typo!r}" and err.value.hint.startswith("did you mean")
    with pytest.raises(SurefastError) as err:
        reg.get("qqqqqqqqqq")
    assert err.value.hint == f"choose from {', '.join(reg)}"  # one style: every name, in registration order


def test_public_lookups_answer_through_the_registries() -> None:
    from surefast.compress import make_config, method_names
    from surefast.conformal import get_score
    from surefast.data.load import get_spec
    from surefast.prompts import PromptConfig
    from surefast.prompts.build import instruction_text
    from surefast.speculate.policies import policy_config

    names = ", ".join(_kinds()["compression method"][0])
    calls = [
        (lambda: make_config("qqqqqqqqqq"), "compression method"),
        (lambda: policy_config("qqqqqqqqqq"), "speculative policy"),
        (lambda: get_score("qqqqqqqqqq"), "conformity score"),
        (lambda: get_spec("qqqqqqqqqq"), "task"),
        (lambda: PromptConfig(strategy="qqqqqqqqqq"), "prompt strategy"),
        (lambda: instruction_text("mmlu", "qqqqqqqqqq", []), "prompt strategy"),  # was: the "task" text
    ]
    for call, kind in calls:
        with pytest.raises(SurefastError) as err:
            call()
        reg = _kinds()[kind][0]
        assert (err.value.message, err.value.hint) == (f"unknown {kind} 'qqqqqqqqqq'", f"choose from {', '.join(reg)}")
    assert sorted(names.split(", ")) == method_names()


# --- each config owns its behaviour ---------------------------------------------------------------


def test_a_new_policy_is_a_config_with_make() -> None:
    """No isinstance chain: any PolicyConfig subclass runs in the engine through its make()."""
    from surefast.models.tiny import tiny_model
    from surefast.speculate import SpeculativeDecoder
    from surefast.speculate.policies import POLICY_CONFIGS, ChainConfig, ChainPolicy, PolicyConfig, make_policy
    from surefast.speculate.stats import TreeShape

    @dataclass(frozen=True)
    class TwoStepConfig(PolicyConfig):  # not registered, not known to the engine: only its make()
        def make(self) -> ChainPolicy:
            return ChainPolicy(ChainConfig(depth=2))

    policy = make_policy(TwoStepConfig())
    assert isinstance(policy, ChainPolicy) and policy.shape() == TreeShape(2, 1, 2)
    for name, cls in POLICY_CONFIGS.items():  # the built-ins: make_policy(name) is the config's own make()
        assert type(make_policy(name)) is type(cls().make())
    with pytest.raises(TypeError, match="not a policy config"):
        make_policy(object())  # type: ignore[arg-type]
    model = tiny_model("llama", 0)
    ids = torch.tensor([[3, 4, 5]])
    new = SpeculativeDecoder(model, model, TwoStepConfig()).generate(ids, 10, eos_token_id=None).tokens
    chain = SpeculativeDecoder(model, model, ChainConfig(depth=2)).generate(ids, 10, eos_token_id=None).tokens
    assert new == chain and len(new) == 10


def test_a_new_score_is_a_config_with_scores() -> None:
    """No match statement: any ScoreConfig subclass is calibrated and evaluated through its scores()."""
    from surefast.conformal import LACConfig, at_labels, class_scores, evaluate_splits
    from surefast.conformal.scores import ScoreArray, ScoreConfig, TieBlocks, score_array, tie_blocks

    @dataclass(frozen=True)
    class RankConfig(ScoreConfig):
        """The 1-based rank of the label: a crude score, enough to show the plumbing."""

        randomized = False

        @property
        def name(self) -> str:
            return "rank"

        def scores(self, blocks: TieBlocks, u: np.ndarray | None = None) -> ScoreArray:
            rank = blocks.rank.astype(np.float64)  # [..., K]: a penalty level, no probability mass
            return ScoreArray.from_mass(np.zeros_like(rank), np.ones_like(rank), rank)

    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    assert class_scores(RankConfig(), probs).value.tolist() == [[1, 2, 3], [3, 1, 2]]
    assert np.array_equal(at_labels(class_scores(RankConfig(), probs), np.array([1, 2])).value, [2, 2])
    with pytest.raises(SurefastError, match="not a score config"):
        score_array("lac", tie_blocks(probs))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    many = rng.dirichlet(np.ones(6), size=200)
    labels = rng.integers(0, 6, size=200)
    res = evaluate_splits(many, labels, score_fns=[RankConfig(), LACConfig()], alphas=(0.2,), n_splits=3, seed=0)
    assert res.get("rank", 0.2, "coverage").shape == (3,)


# --- compression methods: explicit imports, no silent replacement ---------------------------------


def test_a_second_method_under_a_taken_name_is_refused() -> None:
    from surefast.compress import CompressionConfig, make_config, register
    from surefast.compress.quant.gptq import GPTQConfig

    @dataclass(frozen=True)
    class Impostor(CompressionConfig):
        method: ClassVar[str] = "gptq"

    with pytest.raises(SurefastError, match="compression method 'gptq' is registered twice"):
        register(Impostor)(lambda weight, stats, config: weight)
    assert type(make_config("gptq")) is GPTQConfig


def test_a_broken_method_file_raises_its_own_import_error() -> None:
    """Before: the pkgutil scan swallowed the ImportError and the method became "unknown"."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "surefast.compress.quant.gptq":
                    raise ImportError("gptq.py is broken on purpose")
                return None

        sys.meta_path.insert(0, Broken())
        try:
            from surefast.compress import make_config
            make_config("gptq")
        except ImportError as exc:
            print("ImportError:", exc)
        except Exception as exc:
            print(type(exc).__name__ + ":", exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # the surefast this test imports
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "ImportError: gptq.py is broken on purpose", out.stdout + out.stderr
