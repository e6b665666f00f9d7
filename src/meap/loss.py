"""Next-token cross-entropy from the final hidden states, a chunk of tokens at a time.

The output head of a language model turns (tokens, d) hidden states into (tokens, vocabulary) logits: at
seq 2048 x micro-batch 8 with a 32k vocabulary that is 2 GB of fp32 logits, plus as much again for their
gradient, for a loss that is one number. :func:`chunked_cross_entropy` computes the head and the loss for
``chunk_size`` tokens at a time and recomputes each chunk's logits in the backward pass (activation
checkpointing per chunk), so at most one chunk of logits exists at any moment. The result and its
gradients equal the unchunked loss up to float rounding (summation order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from meap.constants import IGNORE_INDEX


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()  # fp32 logits, as transformers' own loss upcasts them
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk_size: int = 4096
) -> torch.Tensor:
    """Sum over tokens of ``-log softmax(hidden @ weight.T)[target]``; targets ``IGNORE_INDEX`` count nothing.

    ``hidden``: (..., d) final hidden states; ``weight``: (vocabulary, d) output head; ``targets``: (...)
    already aligned with ``hidden`` (the next token of each position).
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        piece = slice(start, start + chunk_size)
        total = total + checkpoint(_chunk_loss_sum, hidden[piece], weight, targets[piece], use_reentrant=False)
    return total
