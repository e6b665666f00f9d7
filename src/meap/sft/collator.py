"""The MEAP-SFT collator: rows drawn per batch (every epoch masks anew), padded or packed; usable as any
Hugging Face Trainer's or TRL SFTTrainer's ``data_collator``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from meap.collate import check_mask_token, fallback_generator, segment_attention
from meap.constants import IGNORE_INDEX, PACKED_ATTENTION
from meap.masking import sample_generators
from meap.sft.rows import build_sft_rows


@dataclass
class MeapSFTCollator:
    """MEAP-SFT rows drawn per batch (so every epoch masks anew), padded or packed.

    Samples, one conversation each (either form), or a pack of them:

    * ``{"segments": [(token ids, supervised), ...], "sample_index": n}`` (:mod:`meap.sft.template`);
    * ``{"input_ids": [...], "completion_mask" | "assistant_masks": [0/1, ...]}`` or ``{"input_ids", "labels"}``
      (tokenised datasets as TRL's ``SFTTrainer`` and most SFT pipelines make them: the answers are the runs
      of 1s, or of labels other than -100; the labels' values are not used, the targets are the inputs);
    * ``{"pack": [conversation, ...]}``: with ``packing=True``, all rows of the pack share one sequence of at
      most ``max_length`` tokens (a pack of one conversation may be longer: the separate layout's two rows).

    Each conversation becomes one or two rows by :func:`meap.sft.rows.build_sft_rows` (objective, layout,
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
    """How packed rows are isolated: the model's attention implementation (``sdpa``, ``eager``,
    ``flash_attention_2``)."""
    count_tokens: bool = False
    """Add ``num_tokens`` (non-padding tokens of the batch) for :class:`meap.train.trainer.MeapTrainer`'s throughput."""
    _fallback: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_mask_token(self.mask_token_id, self.mask_ratio)
        if self.packed_attention not in PACKED_ATTENTION:
            raise ValueError(
                f"packed_attention must be one of {', '.join(PACKED_ATTENTION)}, got {self.packed_attention!r}"
            )
        if self.packing and self.max_length is None:
            raise ValueError("packing needs max_length (the length of a packed sequence)")

    def rows(self, conversation: dict[str, Any]) -> list[dict]:
        """The training rows of one conversation sample (see :func:`meap.sft.rows.build_sft_rows`)."""
        index = conversation.get("sample_index")
        if index is not None:
            generator = sample_generators(self.seed, [index])[0]
        else:
            generator = self._fallback = fallback_generator(self._fallback, self.seed)
        return build_sft_rows(
            conversation_segments(conversation),
            mask_token_id=self.mask_token_id,
            eos_token_id=self.eos_token_id,
            mask_ratio=self.mask_ratio,
            min_answer_tokens=self.min_answer_tokens,
            layout=self.layout,
            generator=generator,
            max_length=self.max_length,
        )

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.eos_token_id if self.pad_token_id is None else self.pad_token_id
        conversations = [sample.get("pack", [sample]) for sample in samples]
        rows_per_sample = [
            [row for conversation in group for row in self.rows(conversation)] for group in conversations
        ]
        if self.packing:
            sequences = rows_per_sample
            for group, rows in zip(conversations, sequences):
                # One conversation may exceed max_length (the separate layout's two rows); packs of several may not.
                if len(group) > 1 and sum(len(row["input_ids"]) for row in rows) > self.max_length:
                    raise ValueError(
                        f"a pack of {len(group)} conversations holds more than max_length={self.max_length} tokens"
                    )
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


def conversation_segments(sample: dict[str, Any]) -> list[tuple[list[int], bool]]:
    """``(token ids, supervised)`` segments of one conversation sample, in any of the accepted forms."""
    if "segments" in sample:
        return [(list(ids), bool(supervised)) for ids, supervised in sample["segments"]]
    supervised = next((sample[key] for key in ("completion_mask", "assistant_masks") if key in sample), None)
    if supervised is None and "labels" in sample:
        supervised = [label != IGNORE_INDEX for label in torch.as_tensor(sample["labels"]).tolist()]
    if "input_ids" not in sample or supervised is None:
        raise ValueError(
            'an SFT sample needs "segments", or "input_ids" with "completion_mask", "assistant_masks" or "labels"'
        )
    ids = torch.as_tensor(sample["input_ids"]).tolist()
    flags = [bool(flag) for flag in torch.as_tensor(supervised).tolist()]
    return [
        ([token for token, _ in run], answer) for answer, run in itertools.groupby(zip(ids, flags), key=lambda t: t[1])
    ]
