"""The pretraining collator, which applies MEAP masking per batch; usable as any Hugging Face Trainer's
``data_collator`` (fine-tuning's is :class:`meap.sft.collator.MeapSFTCollator`).

Contract: a list of samples in, a dict of tensors out.

Samples: ``{"input_ids": L token ids (a block x_0 … x_{L-1}), "sample_index": int}``. ``sample_index`` is
the sample's position in the run's stream; the row's mask is a function of (seed, sample_index) only, so
masks do not depend on batch layout, world size or DataLoader workers, and a resumed run redraws them
exactly. Without ``sample_index`` the collator falls back to its own generator (reproducible from the
seed within one process, not across resumes).

Batch (B rows, T = longest L - 1):

* ``input_ids``     (B, T) int64: x_0 … x_{T-1} with a fraction of positions replaced by ``[MASK]``;
* ``labels``        (B, T) int64: the clean x_0 … x_{T-1} (Hugging Face convention: the model shifts);
* ``shift_labels``  (B, T) int64: the clean targets x_1 … x_T, already aligned, so Hugging Face losses
  use them as they are and count tokens correctly under gradient accumulation;
* ``attention_mask`` (B, T) int64: only when rows had different lengths (1 = token, 0 = padding).

With ``document_attention`` (packed blocks only), every document of a block (its tokens up to and including
its EOS) attends only to itself and ``position_ids`` restart at 0 where it starts, as Llama 3 is trained;
``attention_mask`` is then the block-diagonal causal mask (see :func:`segment_attention`).

Padding gets ``IGNORE_INDEX`` in ``labels``/``shift_labels`` and is never masked, nor are special tokens.
With ``mask_ratio=0`` the batch is exactly the NTP batch. Example (mask id 9, one position masked)::

    [{"input_ids": [5, 6, 7, 8], "sample_index": 0}]
    -> input_ids [[5, 9, 7]], labels [[5, 6, 7]], shift_labels [[6, 7, 8]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from meap.constants import DEFAULT_MASK_RATIO, IGNORE_INDEX, MASK_MODES, PACKED_ATTENTION
from meap.masking import check_mask_ratio, mask_inputs, sample_generators


def check_mask_token(mask_token_id: int | None, mask_ratio: float) -> None:
    if mask_ratio > 0 and mask_token_id is None:
        raise ValueError("mask_token_id is None but mask_ratio > 0: add [MASK] with meap.tokens.add_mask_token")


def fallback_generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    """The collator's own generator, for samples without a ``sample_index`` (seeded once, then advancing)."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


@dataclass
class MeapCollator:
    """Masked inputs, clean next-token targets. See the module docstring for the batch layout."""

    mask_token_id: int | None
    """Id of ``[MASK]``; may be ``None`` only when ``mask_ratio`` is 0."""
    mask_ratio: float = DEFAULT_MASK_RATIO
    """Fraction of eligible input positions masked per row (config key ``mask_ratio``)."""
    mode: str = "exact"
    """``exact``, ``bernoulli`` or ``reference`` (config key ``mask_mode``)."""
    seed: int = 0
    """Run seed; with ``sample_index`` it determines every mask."""
    special_token_ids: Sequence[int] = ()
    """Token ids never masked (BOS/EOS/PAD, document separators)."""
    pad_token_id: int = 0
    """Input id written at padding positions (ignored by the loss and by attention)."""
    samples_per_step: int = 0
    """Samples per optimizer step, all ranks together; ``mode="reference"`` derives the step from it."""
    eos_token_id: int | None = None
    """Document separator of packed blocks; needed by ``document_attention``."""
    document_attention: str | None = None
    """Confine attention to each document of a packed block: the model's attention implementation
    (``sdpa``, ``eager``, ``flash_attention_2``), or ``None`` (documents in a block attend to each other)."""
    _fallback: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.document_attention is not None:
            if self.document_attention not in PACKED_ATTENTION:
                raise ValueError(
                    f"document_attention must be one of {', '.join(PACKED_ATTENTION)} or None, "
                    f"got {self.document_attention!r}"
                )
            if self.eos_token_id is None:
                raise ValueError("document_attention needs eos_token_id (the documents' separator)")
        check_mask_ratio(self.mask_ratio)
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {self.mode!r}")
        check_mask_token(self.mask_token_id, self.mask_ratio)
        if self.mode == "reference" and self.mask_ratio > 0 and self.samples_per_step < 1:
            raise ValueError('mask_mode="reference" needs samples_per_step (samples per optimizer step)')

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        blocks = [torch.as_tensor(sample["input_ids"], dtype=torch.long) for sample in samples]
        lengths = torch.tensor([len(block) for block in blocks])
        if int(lengths.min()) < 2:
            raise ValueError("every sample needs at least 2 tokens (one input, one target)")
        if bool((lengths == lengths[0]).all()):  # packed pretraining blocks: no padding at all
            padded = torch.stack(blocks)
            clean, valid = padded[:, :-1].contiguous(), None
            batch = {"labels": clean, "shift_labels": padded[:, 1:].contiguous()}
            if self.document_attention is not None:
                batch.update(self._documents(clean))
        elif self.document_attention is not None:
            raise ValueError("document_attention needs packed blocks of one length (no padding)")
        else:
            padded = torch.full((len(blocks), int(lengths.max())), self.pad_token_id, dtype=torch.long)
            for row, block in enumerate(blocks):
                padded[row, : len(block)] = block
            # Row r has lengths[r] - 1 (input, target) pairs; the positions after them are padding.
            valid = torch.arange(padded.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
            clean = padded[:, :-1].masked_fill(~valid, self.pad_token_id)
            batch = {
                "labels": clean.masked_fill(~valid, IGNORE_INDEX),
                "shift_labels": padded[:, 1:].masked_fill(~valid, IGNORE_INDEX),
                "attention_mask": valid.long(),
            }
        batch["input_ids"] = self._mask(clean, valid, samples)
        if self.document_attention == "flash_attention_2":
            # The varlen kernel splits rows by position_ids only in a batch of one sequence: flatten the rows
            # (each row starts a segment, so no document spans two rows).
            batch = {key: value.reshape(1, -1) for key, value in batch.items()}
        return batch

    def _documents(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """``position_ids`` and ``attention_mask`` of documents separated by EOS (which ends its document)."""
        ends = clean == self.eos_token_id
        segment = torch.cumsum(ends.long(), dim=1) - ends.long()  # an EOS belongs to the document it ends
        positions = segment_positions(segment)
        if self.document_attention == "flash_attention_2":
            return {"position_ids": positions}
        return {"position_ids": positions, "attention_mask": segment_attention(segment, self.document_attention)}

    def _mask(self, clean: torch.Tensor, valid: torch.Tensor | None, samples: list[dict[str, Any]]) -> torch.Tensor:
        if self.mask_ratio == 0.0:
            return clean.clone()
        eligible = torch.ones_like(clean, dtype=torch.bool) if valid is None else valid.clone()
        if self.special_token_ids:
            eligible &= ~torch.isin(clean, torch.tensor(list(self.special_token_ids), dtype=clean.dtype))
        indices = [sample.get("sample_index") for sample in samples]
        step = None
        if all(index is not None for index in indices):
            generator = sample_generators(self.seed, indices)
            if self.mode == "reference":
                step = int(indices[0]) // self.samples_per_step
        else:
            generator = self._fallback = fallback_generator(self._fallback, self.seed)
            if self.mode == "reference":
                raise ValueError('mask_mode="reference" needs a "sample_index" in every sample')
        masked, _ = mask_inputs(
            clean,
            self.mask_ratio,
            self.mask_token_id,
            eligible=eligible,
            generator=generator,
            mode=self.mode,
            step=step,
        )
        return masked


# Shared with the SFT collator (meap.sft.collator): keeping packed rows (documents, conversations) apart.


def segment_attention(segment: torch.Tensor, implementation: str) -> torch.Tensor:
    """(B, 1, T, T) causal mask within segments: position i attends to j <= i when ``segment`` is equal there.

    SDPA takes the bool mask (True: attend); eager the additive float mask (0 or the dtype's minimum).
    transformers' SDPA and eager kernels do not isolate segments from ``position_ids`` alone.
    """
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal
    if implementation == "eager":
        allowed = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return allowed[:, None]


def segment_positions(segment: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 wherever ``segment`` (B, T) changes along a row, and at each row's start."""
    index = torch.arange(segment.shape[1]).expand_as(segment)
    starts = torch.ones_like(segment, dtype=torch.bool)
    starts[:, 1:] = segment[:, 1:] != segment[:, :-1]
    return index - torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
