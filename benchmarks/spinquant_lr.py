"""SpinQuant's learning rate: the training objective and a held-out loss after learning R1/R2.

On SmolLM2-135M in bf16 (norms fused, W4A4 activations simulated as during learning, weights in
full precision), for each learning rate and step count: mean next-token loss over the 8 x 128
calibration windows the rotations were learned on, and over 8 x 128 held-out windows. Step 0 is
QuaRot's randomized Hadamard. The numbers in surefast/compress/quant/spinquant.py's docstring
came from ``python benchmarks/spinquant_lr.py 1e-3,1e-4,1e-5 0,20`` and ``... 3e-4,1e-4 20,40``
(one thread, about 70 s per 20 steps here).
"""

from __future__ import annotations

import sys
import time

import torch

from surefast.compress import heldout_text
from surefast.compress.calibration_data import CalibrationConfig, calibration_ids, tokenize_windows
from surefast.compress.quant.rotation import fuse_norms_, untie_lm_head_
from surefast.compress.quant.spinquant import SpinQuantConfig, _Rotated, learn_rotations
from surefast.models import load_model
from surefast.models.arch import arch_facts


def main(lrs: list[float], steps_list: list[int]) -> None:
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m-instruct", dtype="bf16")
    model, tok = lm.model, lm.tokenizer
    ids = calibration_ids(CalibrationConfig(n_samples=8, seq_len=128), tok)
    held = tokenize_windows(heldout_text(), tok, 8, 128, seed=0)
    arch = arch_facts(model)
    untie_lm_head_(model)
    fuse_norms_(model, arch)

    def objective(r1: torch.Tensor, r2: torch.Tensor, data: torch.Tensor) -> float:
        sim = _Rotated(model, arch, 4, 0.9)
        sim.r1, sim.r2 = r1.float(), r2.float()
        with torch.no_grad():
            loss = sum(model(b[None], labels=b[None], use_cache=False).loss.item() for b in data) / len(data)
        sim.remove()
        return loss

    for lr in lrs:
        for steps in steps_list:
            start = time.time()
            r1, r2, _ = learn_rotations(model, arch, ids, SpinQuantConfig(bits=4, act_bits=4, steps=steps, lr=lr))
            print(
                f"lr {lr:g} steps {steps}: train {objective(r1, r2, ids):.4f} held-out {objective(r1, r2, held):.4f}"
                f"  ({time.time() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main([float(x) for x in sys.argv[1].split(",")], [int(x) for x in sys.argv[2].split(",")])
