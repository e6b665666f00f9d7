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

import json
from collections.abc import Iterator
from pathlib import Path

from meap.errors import UserError

SFT_FORMATS = ("alpaca", "sharegpt", "messages")
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
        import pyarrow.parquet as pq

        for row, record in enumerate(pq.read_table(path).to_pylist()):
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
    """Every record of ``files`` as a conversation; bad records raise :class:`UserError` naming file and line."""
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
            else:  # a template that rewrites earlier turns: treat the conversation as one prompt + answer
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
