"""The MEAP operation of pretraining: replace a fraction of the *input* tokens by ``[MASK]``, keep the targets clean.

Objective (Zhuang et al., ICML 2025). A packed block ``x_0 … x_T`` gives inputs ``x_0 … x_{T-1}`` and
clean targets ``x_1 … x_T``. Before the forward pass, ``round(mask_ratio × eligible)`` input positions of
each row are replaced by ``[MASK]``; the loss is ordinary next-token cross-entropy over every target, so
position ``p-1`` must still predict the hidden ``x_p`` and position ``p`` reads ``[MASK]`` while predicting
``x_{p+1}``. Attention stays causal; there is no extra head, loss term or compute. Validation and
inference use clean inputs.

Invariants of :func:`mask_inputs` (tested as properties):

* ``mode="exact"``: each row masks exactly ``round(mask_ratio × eligible_in_row)`` positions, chosen
  uniformly without replacement; ``mode="bernoulli"``: each eligible position independently with
  probability ``mask_ratio``.
* ineligible positions (padding, special tokens, whatever ``eligible`` excludes) are never masked;
* ``mask_ratio == 0`` is the identity; the arguments are never written to (labels stay untouched);
* every row gets its own draw. With one generator per row (:func:`sample_generators`), a row's mask
  depends only on (run seed, the sample's position in the run's stream): not on the batch layout, the
  world size, the number of DataLoader workers, or whether the run was resumed.

The public reference code differs, and ``mode="reference"`` reproduces it for ablations only: one set of
positions per optimizer step shared by every row, micro-batch and rank, drawn with Python's ``random``
re-seeded from ``50 + step % 51`` (so a whole run cycles through 51 patterns), ``max(1, int(T × ratio))``
positions sampled from ``range(T - 1)`` (the last input is never masked), special tokens not excluded.

Fine-tuning builds its rows on :func:`mask_inputs` in :mod:`meap.sft.rows`.

Of meap it imports only the shared names in :mod:`meap.constants`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from meap.constants import MASK_MODES, mask_ratio_problem

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One round of SplitMix64: a bijective 64-bit mix, so nearby inputs give unrelated seeds."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(seed: int, sample_index: int) -> int:
    """The 63-bit seed of the mask for the ``sample_index``-th sample of a run seeded with ``seed``."""
    if sample_index < 0:
        raise ValueError(f"sample_index must be >= 0, got {sample_index}")
    return _splitmix64(_splitmix64(seed & _MASK64) ^ sample_index) >> 1


def sample_generators(
    seed: int, sample_indices: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per row, each a function of (run seed, the row's sample index) only."""
    if isinstance(sample_indices, torch.Tensor):
        sample_indices = sample_indices.tolist()
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(n))) for n in sample_indices]


def reference_positions(seq_len: int, mask_ratio: float, step: int) -> list[int]:
    """The positions the reference code masks at optimizer ``step`` (shared by the whole batch)."""
    rng = random.Random(50 + step % 51)
    num_masks = max(1, int(seq_len * mask_ratio))
    return rng.sample(range(0, seq_len - 1), num_masks)


def check_mask_ratio(mask_ratio: float) -> None:
    """The range of a mask ratio (:func:`meap.constants.mask_ratio_problem`) as the library's ValueError."""
    if problem := mask_ratio_problem(mask_ratio):
        raise ValueError(f"mask_ratio: {problem}")


def _check(input_ids: torch.Tensor, mask_ratio: float, eligible: torch.Tensor | None, mode: str) -> None:
    check_mask_ratio(mask_ratio)
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be 2-D (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if eligible is not None and (eligible.shape != input_ids.shape or eligible.dtype != torch.bool):
        raise ValueError(
            f"eligible must be a bool tensor shaped like input_ids {tuple(input_ids.shape)}, "
            f"got {eligible.dtype} {tuple(eligible.shape)}"
        )


def _uniform_scores(
    shape: torch.Size, device: torch.device, generator: torch.Generator | Sequence[torch.Generator] | None
) -> torch.Tensor:
    """U(0, 1) scores, one row per generator when a sequence of generators is given."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} rows")
    scores = torch.empty(shape, device=device, dtype=torch.float32)  # float32 whatever the default dtype
    for row, row_generator in zip(scores, generator):
        row.uniform_(generator=row_generator)
    return scores


def mask_inputs(
    input_ids: torch.Tensor,
    mask_ratio: float,
    mask_token_id: int,
    *,
    eligible: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    mode: str = "exact",
    step: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a fraction of the input positions by ``mask_token_id``.

    Args:
        input_ids: ``(batch, seq_len)`` integer ids. Not modified.
        mask_ratio: fraction of eligible positions to mask, in ``[0, 1)``.
        mask_token_id: id written at masked positions.
        eligible: ``(batch, seq_len)`` bool; ``False`` positions are never masked. Default: all eligible.
        generator: one ``torch.Generator`` for the whole batch (rows drawn one after another), or one per
            row (see :func:`sample_generators`), or ``None`` for the global RNG.
        mode: ``"exact"`` (exact count per row), ``"bernoulli"`` (independent per position) or
            ``"reference"`` (the public reference code's shared positions; needs ``step``, ignores
            ``eligible`` and ``generator``).
        step: optimizer step, used by ``mode="reference"`` only.

    Returns:
        ``(masked_ids, mask)``: a new tensor of ids and the bool tensor of masked positions.
    """
    _check(input_ids, mask_ratio, eligible, mode)
    batch, seq_len = input_ids.shape
    if mask_ratio == 0.0 or batch == 0 or seq_len == 0:
        return input_ids.clone(), torch.zeros_like(input_ids, dtype=torch.bool)

    if mode == "reference":
        if step is None:
            raise ValueError('mode="reference" needs the optimizer step (step=...)')
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        if seq_len > 1:
            mask[:, reference_positions(seq_len, mask_ratio, step)] = True
    else:
        scores = _uniform_scores(input_ids.shape, input_ids.device, generator)
        if mode == "bernoulli":
            mask = scores < mask_ratio
            if eligible is not None:
                mask &= eligible
        else:
            if eligible is None:
                counts = [seq_len] * batch
            else:
                # Ineligible positions score 2 > any U(0, 1) draw, so they sort last and are never chosen.
                scores.masked_fill_(~eligible, 2.0)
                counts = eligible.sum(dim=1).tolist()
            num_masked = [round(mask_ratio * count) for count in counts]  # Python's round: half to even
            max_masked = max(num_masked)
            mask = torch.zeros_like(input_ids, dtype=torch.bool)
            if max_masked > 0:
                # The k smallest scores of a row are a uniform k-subset. Take the max_masked smallest of every
                # row (an unsorted topk is O(T)), then un-choose each row's surplus: its largest winners.
                # Non-negative float32s order like their bit patterns read as int32, and topk on int32 is
                # faster on CPU: same choice, less time.
                values, chosen = scores.view(torch.int32).topk(max_masked, dim=1, largest=False, sorted=False)
                if min(num_masked) == max_masked:
                    mask.scatter_(1, chosen, True)
                else:
                    surplus = torch.tensor([max_masked - k for k in num_masked], device=input_ids.device)
                    largest = values.topk(int(surplus.max()), dim=1).indices  # descending
                    drop = torch.arange(largest.shape[1], device=input_ids.device) < surplus[:, None]
                    keep = torch.ones_like(chosen, dtype=torch.bool).scatter_(1, largest, ~drop)
                    mask.scatter_(1, chosen, keep)
    masked_ids = input_ids.masked_fill(mask, mask_token_id)
    return masked_ids, mask
