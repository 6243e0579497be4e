"""The letter head: the six option rows of a causal LM's output head, and what the head does after.

Scoring never materialises ``[B, S, V]`` logits: it runs the decoder body, takes the final
hidden state at each row's answer position (``[B, H]``) and multiplies it by the six letter rows
of the output embedding only, then applies whatever the architecture's head does after the
matmul (:attr:`surefast.models.arch.ArchFacts.logit_scale`, and the soft-cap of the gemma
family). The body, the head and the text config are found by :mod:`surefast.models.arch`.
Tested against ``model(...).logits[:, -1, letter_ids]`` for every supported architecture.
"""

from __future__ import annotations

from typing import Any

import torch

from surefast.models.arch import arch_facts, output_head, text_config


class LetterHead:
    """The six-row slice of the output head, with the architecture's post-matmul facts applied.

    A plain ``nn.Linear`` head is sliced to its six letter rows once (fp32 copy: ``6 x H``); any
    other head module (a quantized linear from a compression method, say) is called on the
    ``[B, H]`` answer states and its six columns picked, which is still only ``B x V``.
    """

    def __init__(self, model: Any, letter_ids: tuple[int, ...]) -> None:
        self.head = output_head(model)
        cfg = text_config(model)
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.scale: float | None = None  # logits *= scale
        op, attr = arch_facts(model).logit_scale or ("", "")
        if op and getattr(cfg, attr, None) is not None:
            value = float(getattr(cfg, attr))
            self.scale = value if op == "mul" else 1.0 / value
        self.ids = torch.tensor(letter_ids, dtype=torch.long)
        self.rows: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        if type(self.head) is torch.nn.Linear:
            weight = self.head.weight
            self.rows = weight[self.ids.to(weight.device)].detach().float()  # [6, H]
            if self.head.bias is not None:
                self.bias = self.head.bias[self.ids.to(weight.device)].detach().float()  # [6]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, H]`` final hidden states -> ``[B, 6]`` float32 letter logits."""
        if self.rows is not None:
            logits = hidden.float() @ self.rows.to(hidden.device).T  # [B, 6]
            if self.bias is not None:
                logits = logits + self.bias.to(hidden.device)
        else:
            full = self.head(hidden)  # [B, V]: only the answer positions, never [B, S, V]
            logits = full[:, self.ids.to(full.device)].float()
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / float(self.softcap)) * float(self.softcap)
        return logits
