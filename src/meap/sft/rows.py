"""MEAP-SFT's rows: a prompt and answer (or a multi-turn conversation) into training rows. Plain NTP for
short answers, else the original followed by a copy with a fraction of its answer tokens masked
("concat", the paper) or the two as separate rows ("separate", the reference code). The prompt is never
masked; the masking itself is :func:`meap.masking.mask_inputs`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from meap.constants import IGNORE_INDEX, SFT_LAYOUTS
from meap.masking import check_mask_ratio, mask_inputs


def build_sft_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], **options) -> list[dict]:
    """Training rows of one prompt/answer pair: :func:`build_sft_rows` of ``[(prompt, False), (answer, True)]``
    with the same keyword ``options``."""
    return build_sft_rows([(prompt_ids, False), (answer_ids, True)], **options)


def build_sft_rows(
    segments: Sequence[tuple[Sequence[int], bool]],
    *,
    mask_token_id: int,
    eos_token_id: int,
    mask_ratio: float = 0.1,
    min_answer_tokens: int = 50,
    layout: str = "concat",
    generator: torch.Generator | None = None,
    max_length: int | None = None,
) -> list[dict]:
    """Training rows of one conversation: ``segments`` are ``(token ids, supervised)`` in order, the
    supervised ones being the answers (assistant turns); EOS is appended unless the conversation already
    ends with it (a chat template whose end-of-turn token is the EOS).

    Each row is ``{"input_ids", "labels", "kind"}`` (int64 tensors; labels are ``-100`` where not supervised,
    in Hugging Face's convention: the model shifts them, so ``labels[p]`` is predicted at position ``p - 1``).

    * NTP (``kind="ntp"``), when ``mask_ratio == 0`` or the answers hold ``min_answer_tokens`` tokens or fewer:
      one row ``conversation + eos``, labels on the answers and the EOS.
    * ``layout="concat"`` (the paper, ``kind="concat"``): one row, the original followed by a copy in which
      ``round(mask_ratio × answer tokens)`` answer tokens are ``[MASK]``; labels on the original's answers
      and EOS, and at the copy's masked positions (label = the hidden original token, so the position before
      each ``[MASK]`` learns to retrieve it from the clean original earlier in the row).
    * ``layout="separate"`` (the reference code): two rows, the NTP row (``kind="original"``) and the masked
      copy supervised only at its masked positions (``kind="masked"``).

    Prompts and EOS are never masked. Masks come from ``generator``: draw them per epoch (in the collator),
    never once at preprocessing. With ``max_length``: an NTP or separate row longer than it is cut at the
    end (a row left with no supervised token is dropped); a concat row that does not fit falls back to the
    NTP row, marked ``kind="ntp-fallback"`` so callers can count how often that happens.
    """
    check_mask_ratio(mask_ratio)
    if layout not in SFT_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(SFT_LAYOUTS)}, got {layout!r}")
    if min_answer_tokens < 0:
        raise ValueError(f"min_answer_tokens must be >= 0, got {min_answer_tokens}")
    tokens = [token for piece, _ in segments for token in piece]
    flags = [supervised for piece, supervised in segments for _ in piece]
    if tokens and tokens[-1] == eos_token_id:  # a chat template's end-of-turn that is the EOS already
        flags[-1] = False
    else:
        tokens, flags = tokens + [eos_token_id], flags + [False]
    ids, is_answer = torch.tensor(tokens, dtype=torch.long), torch.tensor(flags, dtype=torch.bool)
    supervised = is_answer.clone()
    supervised[-1] = True  # the EOS that ends the conversation is learned, never masked
    if not bool(is_answer.any()):
        raise ValueError("a conversation needs at least one non-empty answer")
    labels = ids.masked_fill(~supervised, IGNORE_INDEX)

    answer_tokens = int(is_answer.sum())
    if mask_ratio == 0.0 or answer_tokens <= min_answer_tokens:
        return _fitted("ntp", ids, labels, max_length)
    masked, mask = mask_inputs(ids[None], mask_ratio, mask_token_id, eligible=is_answer[None], generator=generator)
    masked, mask = masked[0], mask[0]
    copy_labels = ids.masked_fill(~mask, IGNORE_INDEX)
    if layout == "separate":
        return _fitted("original", ids, labels, max_length) + _fitted("masked", masked, copy_labels, max_length)
    if max_length is not None and 2 * len(ids) > max_length:
        return _fitted("ntp-fallback", ids, labels, max_length)
    return [{"input_ids": torch.cat([ids, masked]), "labels": torch.cat([labels, copy_labels]), "kind": "concat"}]


def _fitted(kind: str, ids: torch.Tensor, labels: torch.Tensor, max_length: int | None) -> list[dict]:
    """The row cut to ``max_length`` tokens, or no row when nothing supervised is left."""
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    if not bool((labels != IGNORE_INDEX).any()):
        return []
    return [{"input_ids": ids, "labels": labels, "kind": kind}]
