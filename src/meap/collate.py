"""Collators that apply MEAP masking per batch; usable as any Hugging Face Trainer's ``data_collator``.

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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from meap.constants import IGNORE_INDEX, MASK_MODES, PACKED_ATTENTION
from meap.masking import build_sft_rows, mask_inputs, sample_generators



def _check_mask_token(mask_token_id: int | None, mask_ratio: float) -> None:
    if mask_ratio > 0 and mask_token_id is None:
        raise ValueError("mask_token_id is None but mask_ratio > 0: add [MASK] with meap.tokens.add_mask_token")


def _fallback_generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    """The collator's own generator, for samples without a ``sample_index`` (seeded once, then advancing)."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


@dataclass
class MeapCollator:
    """Masked inputs, clean next-token targets. See the module docstring for the batch layout."""

    mask_token_id: int | None
    """Id of ``[MASK]``; may be ``None`` only when ``mask_ratio`` is 0."""
    mask_ratio: float = 0.15
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
                raise ValueError(f"document_attention must be one of {', '.join(PACKED_ATTENTION)} or None, "
                                 f"got {self.document_attention!r}")
            if self.eos_token_id is None:
                raise ValueError("document_attention needs eos_token_id (the documents' separator)")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {self.mode!r}")
        _check_mask_token(self.mask_token_id, self.mask_ratio)
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
            generator = self._fallback = _fallback_generator(self._fallback, self.seed)
            if self.mode == "reference":
                raise ValueError('mask_mode="reference" needs a "sample_index" in every sample')
        masked, _ = mask_inputs(
            clean, self.mask_ratio, self.mask_token_id, eligible=eligible, generator=generator, mode=self.mode, step=step
        )
        return masked


# ---------------------------------------------------------------------------------------------------------
# Supervised fine-tuning
# ---------------------------------------------------------------------------------------------------------

@dataclass
class MeapSFTCollator:
    """MEAP-SFT rows drawn per batch (so every epoch masks anew), padded or packed.

    Samples, one conversation each (either form), or a pack of them:

    * ``{"segments": [(token ids, supervised), ...], "sample_index": n}`` (:mod:`meap.data.sft`);
    * ``{"input_ids": [...], "completion_mask" | "assistant_masks": [0/1, ...]}`` or ``{"input_ids", "labels"}``
      (tokenised datasets as TRL's ``SFTTrainer`` and most SFT pipelines make them: the answers are the runs
      of 1s, or of labels other than -100; the labels' values are not used, the targets are the inputs);
    * ``{"pack": [conversation, ...]}``: with ``packing=True``, all rows of the pack share one sequence of at
      most ``max_length`` tokens (a pack of one conversation may be longer: the separate layout's two rows).

    Each conversation becomes one or two rows by :func:`meap.masking.build_sft_rows` (objective, layout,
    ``min_answer_tokens`` and ``max_length`` rules there). Its mask is a function of (seed, sample_index)
    when the sample has one, else drawn from the collator's own generator.

    Batch: ``input_ids`` and ``labels`` (-100 where not supervised; Hugging Face convention, the model
    shifts), right-padded with ``pad_token_id``. Unpacked, ``attention_mask`` is the usual (B, T) padding
    mask. Packed (``packing=True``, one sequence per sample), ``position_ids`` restart at 0 for every row,
    the first label of every row is -100 (it would be predicted from the previous row), and attention is
    isolated per row by a block-diagonal causal mask, because transformers' SDPA and eager kernels do not
    isolate rows from ``position_ids`` alone: ``packed_attention="sdpa"`` gives a (B, 1, T, T) bool mask,
    ``"eager"`` the additive float mask, and ``"flash_attention_2"`` no mask but all packs flattened into
    one sequence (transformers' varlen path splits rows by ``position_ids`` only in a batch of one).
    Packed and unpacked batches give each row the same loss.
    """

    mask_token_id: int | None
    eos_token_id: int
    pad_token_id: int | None = None
    """Input id at padding positions (default: the EOS); never attended to, never a target."""
    mask_ratio: float = 0.1
    """Fraction of answer tokens masked in the copy; 0 is the NTP baseline."""
    min_answer_tokens: int = 50
    """Conversations whose answers hold this many tokens or fewer train as plain NTP rows."""
    layout: str = "concat"
    """``concat`` (the paper: original + masked copy in one row) or ``separate`` (two rows)."""
    max_length: int | None = None
    """Longest row (and, packed, longest sequence) in tokens."""
    seed: int = 0
    packing: bool = False
    packed_attention: str = "sdpa"
    """How packed rows are isolated: the model's attention implementation (``sdpa``, ``eager``, ``flash_attention_2``)."""
    count_tokens: bool = False
    """Add ``num_tokens`` (non-padding tokens of the batch) for :class:`meap.train.MeapTrainer`'s throughput."""
    _fallback: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_mask_token(self.mask_token_id, self.mask_ratio)
        if self.packed_attention not in PACKED_ATTENTION:
            raise ValueError(f"packed_attention must be one of {', '.join(PACKED_ATTENTION)}, got {self.packed_attention!r}")
        if self.packing and self.max_length is None:
            raise ValueError("packing needs max_length (the length of a packed sequence)")

    def rows(self, conversation: dict[str, Any]) -> list[dict]:
        """The training rows of one conversation sample (see :func:`meap.masking.build_sft_rows`)."""
        index = conversation.get("sample_index")
        if index is not None:
            generator = sample_generators(self.seed, [index])[0]
        else:
            generator = self._fallback = _fallback_generator(self._fallback, self.seed)
        return build_sft_rows(conversation_segments(conversation), mask_token_id=self.mask_token_id,
                              eos_token_id=self.eos_token_id, mask_ratio=self.mask_ratio,
                              min_answer_tokens=self.min_answer_tokens, layout=self.layout, generator=generator,
                              max_length=self.max_length)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.eos_token_id if self.pad_token_id is None else self.pad_token_id
        conversations = [sample.get("pack", [sample]) for sample in samples]
        rows_per_sample = [[row for conversation in group for row in self.rows(conversation)] for group in conversations]
        if self.packing:
            sequences = rows_per_sample
            for group, rows in zip(conversations, sequences):
                # One conversation may exceed max_length (the separate layout's two rows); packs of several may not.
                if len(group) > 1 and sum(len(row["input_ids"]) for row in rows) > self.max_length:
                    raise ValueError(f"a pack of {len(group)} conversations holds more than "
                                     f"max_length={self.max_length} tokens")
        else:
            sequences = [[row] for rows in rows_per_sample for row in rows]
        sequences = [rows for rows in sequences if rows]
        if not sequences:
            raise ValueError("no sample of the batch has a supervised token left (answers cut by max_length?)")
        if self.packing and self.packed_attention == "flash_attention_2":
            # The varlen path splits rows by position_ids only in a batch of one sequence: flatten the packs.
            sequences = [[row for rows in sequences for row in rows]]
        lengths = [sum(len(row["input_ids"]) for row in rows) for rows in sequences]
        width = max(lengths)
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        positions = torch.zeros_like(input_ids)
        # Row number of every position within its sequence; padding gets a number of its own per position.
        segment = -1 - torch.arange(width).expand(len(sequences), width).clone()
        for b, rows in enumerate(sequences):
            start = 0
            for r, row in enumerate(rows):
                end = start + len(row["input_ids"])
                input_ids[b, start:end] = row["input_ids"]
                labels[b, start:end] = row["labels"]
                if self.packing:
                    labels[b, start] = IGNORE_INDEX
                positions[b, start:end] = torch.arange(end - start)
                segment[b, start:end] = r
                start = end
        batch = {"input_ids": input_ids, "labels": labels}
        if not self.packing:
            batch["attention_mask"] = (segment >= 0).long()
        else:
            batch["position_ids"] = positions
            if self.packed_attention != "flash_attention_2":
                batch["attention_mask"] = segment_attention(segment, self.packed_attention)
        if self.count_tokens:
            batch["num_tokens"] = torch.tensor(sum(lengths))
        return batch


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


def conversation_segments(sample: dict[str, Any]) -> list[tuple[list[int], bool]]:
    """``(token ids, supervised)`` segments of one conversation sample, in any of the accepted forms."""
    if "segments" in sample:
        return [(list(ids), bool(supervised)) for ids, supervised in sample["segments"]]
    supervised = next((sample[key] for key in ("completion_mask", "assistant_masks") if key in sample), None)
    if supervised is None and "labels" in sample:
        supervised = [label != IGNORE_INDEX for label in torch.as_tensor(sample["labels"]).tolist()]
    if "input_ids" not in sample or supervised is None:
        raise ValueError('an SFT sample needs "segments", or "input_ids" with "completion_mask", "assistant_masks" '
                         'or "labels"')
    ids = torch.as_tensor(sample["input_ids"]).tolist()
    flags = [bool(flag) for flag in torch.as_tensor(supervised).tolist()]
    return [([token for token, _ in run], answer) for answer, run in itertools.groupby(zip(ids, flags), key=lambda t: t[1])]
