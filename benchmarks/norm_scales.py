"""Why folding norm scales broke QuaRot on Gemma: pre-norm weight ranges and residual outliers, side by side.

For each model: the range of the ``input_layernorm`` weights (what QuaRot folds into the next
linears before rotating a residual stream; on Gemma3 it now leaves them in the norm, see
``surefast.compress.quant.rotation``), and the max / median |hidden state| of the residual
stream every third layer, from one fp32 forward of a 256-token held-out window. The numbers in
docs/compress.md ("Gemma-3-270M and rotations") come from ``python benchmarks/norm_scales.py``.
"""

from __future__ import annotations

import torch

from surefast.compress import heldout_text
from surefast.compress.calibration_data import tokenize_windows
from surefast.models import load_model

MODELS = ("gemma-3-270m", "smollm2-135m-instruct")


@torch.inference_mode()
def main() -> None:
    for name in MODELS:
        lm = load_model(name, dtype="fp32")
        ids = tokenize_windows(heldout_text(), lm.tokenizer, 1, 256, seed=0)
        hidden = lm.model(ids, output_hidden_states=True).hidden_states
        rows = [f"{i}:{h[0].abs().max():.0f}/{h[0].abs().median():.2f}" for i, h in enumerate(hidden)][::3]
        norms = torch.stack([m.weight for n, m in lm.model.named_modules() if n.endswith("input_layernorm")])
        print(f"{name}: input_layernorm weight {float(norms.min()):.3f} to {float(norms.max()):.3f}")
        print(f"  residual |h| max/median every 3rd layer: {' '.join(rows)}")


if __name__ == "__main__":
    main()
