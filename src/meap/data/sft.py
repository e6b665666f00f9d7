"""Supervised fine-tuning data: instruction files → conversations → token segments for MEAP-SFT.

Formats (auto-detected from the first record when not given):

* ``alpaca``: ``{"instruction", "input" (optional), "output"}``;
* ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...]}``;
* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content"}, ...]}`` (OpenAI style).

Files are JSONL, a JSON list, or Parquet. Every record becomes a list of ``{"role", "content"}`` turns.
:func:`tokenize_conversation` renders the turns with the tokenizer's chat template when it has one (else
:data:`PLAIN_TEMPLATE`) and returns ``(token ids, supervised)`` segments: assistant turns are supervised,
everything else (system, user, the template's markup before an answer) is prompt. Masks are not drawn
here: :func:`meap.masking.build_sft_rows` draws them in the collator, anew every epoch.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from meap.constants import SFT_FORMATS
from meap.errors import UserError

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
# Used for tokenizers without a chat template (a model pretrained with `meap pretrain`, say).
PLAIN_TEMPLATE = {"system": "{content}\n\n", "user": "### Instruction:\n{content}\n\n### Response:\n",
                  "assistant": "{content}\n\n"}


def detect_format(record: dict, where: str) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise UserError(f"{where}: cannot tell the format from keys {sorted(record)}; expected alpaca "
                    "(instruction, input, output), sharegpt (conversations) or messages (messages); or pass --format")


def to_conversation(record: dict, sft_format: str, where: str) -> list[dict]:
    """The record as ``[{"role", "content"}, ...]`` with at least one non-empty assistant turn."""
    if sft_format == "alpaca":
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                raise UserError(f"{where}: missing or non-string `{key}` (alpaca records need instruction and output)")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise UserError(f"{where}: `input` must be a string")
        prompt = record["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    else:
        key, role_key, text_key = (("conversations", "from", "value") if sft_format == "sharegpt"
                                   else ("messages", "role", "content"))
        raw = record.get(key)
        if not isinstance(raw, list) or not raw:
            raise UserError(f"{where}: `{key}` must be a non-empty list of turns")
        turns = []
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
                raise UserError(f"{where}: `{key}[{i}]` needs a string `{text_key}`")
            role = turn.get(role_key)
            role = _SHAREGPT_ROLES.get(role) if sft_format == "sharegpt" else role
            if role not in ("system", "user", "assistant"):
                raise UserError(f"{where}: `{key}[{i}].{role_key}` is {turn.get(role_key)!r}; expected "
                                + ("system, human or gpt" if sft_format == "sharegpt" else "system, user or assistant"))
            turns.append({"role": role, "content": turn[text_key]})
    if not any(t["role"] == "assistant" and t["content"].strip() for t in turns):
        raise UserError(f"{where}: empty answer (no non-empty assistant turn)")
    return turns


def _records(path: Path) -> Iterator[tuple[str, dict]]:
    from meap.data.sources import json_lines

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except pyarrow.ArrowException as error:
            raise UserError(f"{path}: not a readable Parquet file ({error})") from None
        for row, record in enumerate(table.to_pylist()):
            yield f"{path}: row {row}", record
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{path}: not valid JSON ({error}); expected a list of records") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise UserError(f"{path}: expected a JSON list of objects")
        for item, record in enumerate(data):
            yield f"{path}: item {item}", record
    else:
        yield from json_lines(path, "one JSON record per line")


def read_conversations(files: list[str], sft_format: str | None = None) -> list[list[dict]]:
    """Every record of ``files`` as a conversation; bad records raise :class:`UserError` naming file and line.

    ``builtin`` (or ``builtin:N`` for N conversations) names the built-in instruction set
    (:func:`meap.data.builtin.builtin_conversations`); no files at all means the same.
    """
    if not files or files[0].split(":")[0] == "builtin":
        return _builtin(files)
    if sft_format is not None and sft_format not in SFT_FORMATS:
        raise UserError(f"--format: unknown format {sft_format!r}; expected one of {', '.join(SFT_FORMATS)}")
    conversations = []
    for file in files:
        detected = sft_format
        for where, record in _records(Path(file)):
            detected = detected or detect_format(record, where)
            conversations.append(to_conversation(record, detected, where))
    if not conversations:
        raise UserError(f"{', '.join(files)}: no records")
    return conversations


def _builtin(files: list[str]) -> list[list[dict]]:
    from meap.data.builtin import builtin_conversations

    spec = files[0] if files else "builtin"
    name, _, count = spec.partition(":")
    if len(files) > 1 or name != "builtin" or (count and not (count.isdigit() and int(count) > 0)):
        raise UserError(f"--data {' '.join(files)}: `builtin` or `builtin:N` (N > 0) stands alone")
    return builtin_conversations(int(count)) if count else builtin_conversations()


def render_turns(tokenizer, turns: list[dict]) -> list[tuple[str, bool]]:
    """``(text, is_answer)`` pieces whose concatenation is the rendered conversation."""
    template = getattr(tokenizer, "chat_template", None)
    pieces: list[tuple[str, bool]] = []
    rendered = ""
    for index, turn in enumerate(turns):
        if template:
            before = tokenizer.apply_chat_template(turns[:index], tokenize=False,
                                                   add_generation_prompt=turn["role"] == "assistant") if index else ""
            after = tokenizer.apply_chat_template(turns[: index + 1], tokenize=False)
            if turn["role"] == "assistant" and before.startswith(rendered) and after.startswith(before):
                pieces += [(before[len(rendered):], False), (after[len(before):], True)]
            elif after.startswith(rendered):
                pieces.append((after[len(rendered):], False))
            else:  # a template that rewrites earlier turns cannot be split into prompt and answer pieces
                raise UserError("the tokenizer's chat template re-renders earlier turns; it cannot be split "
                                "into prompt and answer pieces")
            rendered = after
        else:
            text = PLAIN_TEMPLATE[turn["role"]].format(content=turn["content"])
            pieces.append((text, turn["role"] == "assistant"))
    if template and pieces:  # end on the end-of-turn token itself, so it can serve as the EOS
        pieces[-1] = (pieces[-1][0].rstrip("\n"), pieces[-1][1])
    return [(text, answer) for text, answer in pieces if text]


def tokenize_conversation(tokenizer, turns: list[dict]) -> list[tuple[list[int], bool]]:
    """``(token ids, supervised)`` segments of a conversation, ready for :func:`meap.masking.build_sft_rows`."""
    return [(tokenizer(text, add_special_tokens=False)["input_ids"], answer) for text, answer in render_turns(tokenizer, turns)]


class SFTStream(torch.utils.data.Dataset):
    """Conversations in a seeded order, epoch after epoch, as samples for :class:`meap.collate.MeapSFTCollator`.

    Epoch ``e`` visits every conversation once in its own seeded order; the ``k``-th conversation of the
    stream gets ``sample_index = e·N + position``, so its masks differ between epochs and are the same for
    the MEAP and NTP runs' identical data order. Without ``pack_lengths`` a sample is one conversation.
    With them (tokens each conversation's rows take, at most ``max_length``), a sample is a pack
    ``{"pack": [...]}``: each epoch's conversations, in order, go best-fit into sequences of ``max_length``;
    a conversation longer than that (the separate layout's two rows) gets a pack of its own.
    """

    def __init__(self, conversations: Sequence[list[tuple[list[int], bool]]], *, epochs: int = 1, seed: int = 0,
                 shuffle: bool = True, pack_lengths: Sequence[int] | None = None, max_length: int | None = None):
        if pack_lengths is not None and max_length is None:
            raise ValueError("packing needs max_length (the length of a packed sequence)")
        self.conversations = conversations
        self.packing = pack_lengths is not None
        self.items: list[list[tuple[int, int]]] = []  # each: (conversation, sample_index) pairs
        size = len(conversations)
        for epoch in range(epochs):
            order = (torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
                     if shuffle else list(range(size)))
            visits = [(conversation, epoch * size + position) for position, conversation in enumerate(order)]
            if pack_lengths is None:
                self.items += [[visit] for visit in visits]
            else:
                self.items += _best_fit(visits, pack_lengths, max_length)

    @classmethod
    def covering(cls, conversations, num_samples: int, **options) -> SFTStream:
        """The stream of as many epochs as ``num_samples`` samples need (packs per epoch vary with packing)."""
        epochs = -(-num_samples // max(1, len(cls(conversations, epochs=1, **options))))
        while len(stream := cls(conversations, epochs=epochs, **options)) < num_samples:
            epochs += 1
        return stream

    def truncate(self, num_samples: int) -> SFTStream:
        """Keep the first ``num_samples`` samples (a run's steps x samples per step); returns the stream."""
        self.items = self.items[:num_samples]
        return self

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, conversation: int, sample_index: int) -> dict:
        return {"segments": self.conversations[conversation], "sample_index": sample_index}

    def __getitem__(self, index: int) -> dict:
        visits = self.items[index]
        if self.packing:
            return {"pack": [self._sample(*visit) for visit in visits]}
        return self._sample(*visits[0])


def _best_fit(visits: list[tuple[int, int]], lengths: Sequence[int], capacity: int) -> list[list[tuple[int, int]]]:
    """Visits into bins of ``capacity`` tokens, each into the fullest bin it fits (bins keep visit order);
    a visit longer than ``capacity`` opens a bin that nothing else joins (its free room is negative)."""
    bins: list[list[tuple[int, int]]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin), sorted
    for visit in visits:
        need = lengths[visit[0]]
        slot = bisect.bisect_left(free, (need, -1))
        if slot < len(free):
            room, chosen = free.pop(slot)
        else:
            room, chosen = capacity, len(bins)
            bins.append([])
        bins[chosen].append(visit)
        bisect.insort(free, (room - need, chosen))
    return bins
