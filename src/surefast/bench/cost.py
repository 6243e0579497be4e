"""A rough model of compression time, so a study plan can say how long its jobs take here.

Compression time is counted in *forward-token equivalents*: the number of tokens the
uncompressed model could prefill in the same time on the same machine. Dividing by the
throughput measured here (:func:`measure_tokens_per_s`) turns it into
seconds, which carries the estimate across machines and, to first order, across model sizes
(both scale with the parameter count). Each method costs a fixed amount (its own arithmetic:
Hessian factorisations, column sweeps, rotations, searches) plus three passes over the
calibration tokens when it reads data (capture the first block's inputs, gather statistics,
feed the compressed block's outputs on).

The fixed costs below come from runs on our 2-core CPU (docs/study.md, "Study plans", says
which). Expect the estimate within a factor of two, not better: GPTQ's and SparseGPT's
factorisations grow with the cube of the layer width, faster than the parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner and the models stay unimported until a measurement runs
    from surefast.bench.runner import BenchConfig
    from surefast.models import LoadedModel

# forward-token equivalents per method (its own arithmetic, not the calibration passes)
FIXED_TOKENS = {
    "rtn": 1_500,  # qwen 0.5B: 4-5 s
    # qwen 0.5B: 178 s with 4096 calibration tokens, before act-order and the clip search became the
    # defaults; they add about 40% (quant_quality.json, 8192 tokens: 138 s plain, 189 s default)
    "gptq": 57_000,
    "quarot": 52_000,  # qwen 0.5B: 215 s (GPTQ weights)
    "sparsegpt": 37_000,  # qwen 0.5B: 165 s
    "wanda": 3_000,  # qwen 0.5B: 35-40 s, nearly all calibration passes
    "awq": 60_000,  # smollm2: 69 s with 1024 calibration tokens
    "smoothquant": 1_000,  # smollm2: 3 s
    "spinquant": 100_000,  # smollm2: 61 s for 10 steps; the default is 20
    "magnitude": 3_500,  # smollm2: 4 s
    "llm-pruner": 14_000,  # smollm2: 19 s
    "slicegpt": 7_000,  # smollm2: 12 s
}
DEFAULT_FIXED_TOKENS = 50_000  # a method registered by a plugin: no measurement
CALIBRATION_PASSES = 3


def uses_data(method: str, options: dict[str, Any]) -> bool:
    from surefast.compress import make_config
    from surefast.compress.api import method_for

    m = method_for(make_config(method, **options))
    return bool(m.needs) or m.uses_calibration


def compression_seconds(
    method: str | None, options: dict[str, Any], calibration_tokens: int, tokens_per_s: float
) -> float:
    """Estimated wall time of one compression here (0 for the dense model)."""
    if method is None:
        return 0.0
    tokens = FIXED_TOKENS.get(method, DEFAULT_FIXED_TOKENS)
    if uses_data(method, options):
        tokens += CALIBRATION_PASSES * calibration_tokens
    return tokens / tokens_per_s


@dataclass(frozen=True)
class Estimate:
    items: int
    tokens: int  # shared prefixes once per unit + every item's own tokens
    tokens_per_s: float  # measured on this machine with a probe forward
    seconds: float


def measure_tokens_per_s(loaded: LoadedModel, batch: int = 2, length: int = 256) -> float:
    """Prefill throughput of the model here: the best of two timed forwards of [batch, length]
    after a warm-up of the same shape (the first calls pay for allocation and kernel selection)."""
    import torch

    vocab = loaded.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0)).to(loaded.model.device)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            loaded.model(input_ids=ids)
            times.append(time.perf_counter() - start)
    return batch * length / min(times[1:])


def estimate(loaded: LoadedModel, config: BenchConfig) -> Estimate:
    """Tokens to score and the time they take here (an upper bound: cached logits cost nothing)."""
    from surefast.bench.runner import task_config
    from surefast.data import load_task
    from surefast.prompts import PromptConfig, build_prompt

    items = tokens = 0
    tok = loaded.tokenizer
    for task in config.tasks:
        data = load_task(task, task_config(config, task))
        for strategy in config.strategies:
            prompt = build_prompt(
                task, data.demos, tok, PromptConfig(strategy=strategy, n_shots=config.n_shots, chat=config.chat)
            )
            rest = tok([prompt.render(item) for item in data.items], add_special_tokens=False)["input_ids"]
            tokens += len(tok(prompt.prefix, add_special_tokens=False)["input_ids"]) + sum(map(len, rest))
            items += len(data.items)
    speed = measure_tokens_per_s(loaded)
    return Estimate(items, tokens, speed, tokens / speed)
