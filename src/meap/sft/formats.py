"""Instruction files → conversations (lists of ``{"role", "content"}`` turns). Torch-free.

Formats (auto-detected from the first record when not given):

* ``alpaca``: ``{"instruction", "input" (optional), "output"}``;
* ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...]}``;
* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content"}, ...]}`` (OpenAI style);
* ``prompt-completion``: ``{"prompt", "completion"}`` (TRL's format), each a string, or each a list of
  ``messages``-style turns (TRL's conversational form: the prompt's turns, then the completion's).

Files are JSONL, a JSON list, or Parquet; ``builtin[:N]`` is the built-in instruction set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from meap.constants import SFT_FORMATS
from meap.data.sources import json_lines
from meap.errors import UserError

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def detect_format(record: dict, where: str) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    raise UserError(
        f"{where}: cannot tell the format from keys {sorted(record)}; expected alpaca "
        "(instruction, input, output), sharegpt (conversations), messages (messages) or prompt-completion "
        "(prompt, completion); or pass --format"
    )


def to_conversation(record: dict, sft_format: str, where: str) -> list[dict]:
    """The record as ``[{"role", "content"}, ...]`` with at least one non-empty assistant turn."""
    if sft_format == "prompt-completion":
        prompt, completion = record.get("prompt"), record.get("completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        elif isinstance(prompt, list) and isinstance(completion, list):
            turns = to_conversation({"messages": prompt + completion}, "messages", where)
        else:
            raise UserError(f"{where}: `prompt` and `completion` must both be strings or both lists of turns")
    elif sft_format == "alpaca":
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                raise UserError(f"{where}: missing or non-string `{key}` (alpaca records need instruction and output)")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise UserError(f"{where}: `input` must be a string")
        prompt = record["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    else:
        key, role_key, text_key = (
            ("conversations", "from", "value") if sft_format == "sharegpt" else ("messages", "role", "content")
        )
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
                raise UserError(
                    f"{where}: `{key}[{i}].{role_key}` is {turn.get(role_key)!r}; expected "
                    + ("system, human or gpt" if sft_format == "sharegpt" else "system, user or assistant")
                )
            turns.append({"role": role, "content": turn[text_key]})
    if not any(t["role"] == "assistant" and t["content"].strip() for t in turns):
        raise UserError(f"{where}: empty answer (no non-empty assistant turn)")
    return turns


def _records(path: Path, skipped: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    if path.is_dir():
        raise UserError(
            f"{path}: a directory; meap sft takes instruction files (JSON, JSONL, Parquet), not a "
            "prepared pretraining corpus"
        )
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
        yield from json_lines(path, "one JSON record per line", skipped)


def read_conversations(
    files: list[str], sft_format: str | None = None, skipped: list[str] | None = None
) -> list[list[dict]]:
    """Every record of ``files`` as a conversation; bad records raise :class:`UserError` naming file and line,
    or, given a ``skipped`` list, are recorded there (their errors) and passed over.

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
        for where, record in _records(Path(file), skipped):
            try:
                detected = detected or detect_format(record, where)
                conversations.append(to_conversation(record, detected, where))
            except UserError as error:
                if skipped is None:
                    raise
                skipped.append(str(error))
    if not conversations:
        raise UserError(f"{', '.join(files)}: no records" + (f" ({len(skipped)} bad ones skipped)" if skipped else ""))
    return conversations


def _builtin(files: list[str]) -> list[list[dict]]:
    from meap.data.builtin import builtin_conversations

    spec = files[0] if files else "builtin"
    name, _, count = spec.partition(":")
    if len(files) > 1 or name != "builtin" or (count and not (count.isdigit() and int(count) > 0)):
        raise UserError(f"--data {' '.join(files)}: `builtin` or `builtin:N` (N > 0) stands alone")
    return builtin_conversations(int(count)) if count else builtin_conversations()
